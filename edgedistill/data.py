"""Read the data sets a recipe names: sentence pools and the STS benchmark."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

from edgedistill.assets import resolve
from edgedistill.errors import AssetError


@dataclass(frozen=True)
class StsPairs:
    """Sentence pairs with gold similarity scores (0-5)."""

    first: list[str]
    second: list[str]
    scores: list[float]


def _sentences_file(path: Path) -> Path:
    if path.is_dir():
        path = path / "sentences.txt"
    if not path.is_file():
        raise AssetError(f"{path}: no sentences file; give a .txt file with one sentence per line "
                         "or a folder holding sentences.txt")
    return path


def load_sentences(spec: str) -> list[str]:
    """All non-empty lines of a sentence pool (file, folder with sentences.txt, or catalog name)."""
    path = _sentences_file(resolve(spec))
    sentences = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    sentences = [s for s in sentences if s]
    if not sentences:
        raise AssetError(f"{path}: holds no sentences")
    return sentences


def sample(sentences: list[str], n: int, seed: int) -> list[str]:
    """A reproducible sample of at most n sentences."""
    if n >= len(sentences):
        return list(sentences)
    return random.Random(seed).sample(sentences, n)


def load_sts(spec: str, split: str) -> StsPairs:
    """STS-benchmark pairs: tab-separated, score in column 4, sentences in columns 5 and 6.

    Some lines carry extra columns, so lines are split on tabs rather than read with a CSV reader.
    """
    root = resolve(spec)
    path = root / f"sts-{split}.csv" if root.is_dir() else root
    if not path.is_file():
        raise AssetError(f"{path}: STS-benchmark split '{split}' not found (expected sts-{split}.csv)")
    first, second, scores = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        cols = line.split("\t")
        if len(cols) < 7:
            continue
        first.append(cols[5].strip())
        second.append(cols[6].strip())
        scores.append(float(cols[4]))
    if not scores:
        raise AssetError(f"{path}: no STS pairs found (tab-separated, score in column 5 counting from 1)")
    return StsPairs(first, second, scores)


def fingerprint(sentences: list[str]) -> str:
    """Content hash of a list of sentences, for cache keys."""
    h = hashlib.sha256()
    for s in sentences:
        h.update(s.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()[:16]
