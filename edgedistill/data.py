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


def load_sentences(spec: str | list[str]) -> list[str]:
    """All non-empty lines of a sentence pool (file, folder with sentences.txt, or catalog name), or of
    several pools one after another."""
    if not isinstance(spec, str):
        return [s for one in spec for s in load_sentences(one)]
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


def draw_training_sentences(spec: str | list[str], n: int, seed: int) -> list[str]:
    """A reproducible sample of at most n sentences from one pool, or in equal shares from several.

    A pool smaller than its share is taken whole and the others fill the gap; a sentence found in two
    pools is kept once. One pool gives exactly `sample(load_sentences(spec), n, seed)`.
    """
    if isinstance(spec, str):
        return sample(load_sentences(spec), n, seed)
    pools = sorted((list(dict.fromkeys(load_sentences(one))) for one in spec), key=len)
    drawn: dict[str, None] = {}
    for i, pool in enumerate(pools):
        share = (n - len(drawn)) // (len(pools) - i)
        fresh = [s for s in pool if s not in drawn]
        drawn.update(dict.fromkeys(sample(fresh, share, seed + i)))
    mixed = list(drawn)
    random.Random(seed).shuffle(mixed)
    return mixed


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


@dataclass(frozen=True)
class RetrievalSet:
    """Queries, a corpus and the relevant corpus ids of each query."""

    queries: list[str]
    corpus: list[str]
    relevant: list[set[int]]


def _jsonl(path: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_retrieval(spec: str, max_queries: int, max_corpus: int, seed: int = 0) -> RetrievalSet:
    """A retrieval set (queries.jsonl, corpus.jsonl, qrels.jsonl), subsampled reproducibly.

    The corpus keeps every relevant document of the chosen queries plus random distractors up to max_corpus.
    """
    root = resolve(spec)
    for name in ("queries.jsonl", "corpus.jsonl", "qrels.jsonl"):
        if not (root / name).is_file():
            raise AssetError(f"{root}: retrieval set is missing {name} (expected queries/corpus/qrels .jsonl)")
    queries = {q["id"]: q["text"] for q in _jsonl(root / "queries.jsonl")}
    corpus = {d["id"]: d["text"] for d in _jsonl(root / "corpus.jsonl")}
    qrels: dict[str, set[str]] = {}
    for row in _jsonl(root / "qrels.jsonl"):
        qrels.setdefault(row["query_id"], set()).add(row["doc_id"])
    rng = random.Random(seed)
    chosen = sorted(qrels)
    chosen = sorted(rng.sample(chosen, min(max_queries, len(chosen))))
    needed = sorted(set().union(*(qrels[q] for q in chosen)))
    others = sorted(set(corpus) - set(needed))
    doc_ids = needed + sorted(rng.sample(others, max(0, min(len(others), max_corpus - len(needed)))))
    index = {d: i for i, d in enumerate(doc_ids)}
    return RetrievalSet(
        queries=[queries[q] for q in chosen],
        corpus=[corpus[d] for d in doc_ids],
        relevant=[{index[d] for d in qrels[q]} for q in chosen],
    )


def fingerprint(sentences: list[str]) -> str:
    """Content hash of a list of sentences, for cache keys."""
    h = hashlib.sha256()
    for s in sentences:
        h.update(s.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()[:16]
