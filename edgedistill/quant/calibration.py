"""In-domain sentences for calibration and for the search's proxy, tokenised the way the runtime does it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgedistill.data import load_sentences, sample
from edgedistill.manifest import read_manifest


def split_sentences(spec: str | list[str], calibration: int, proxy: int, seed: int) -> tuple[list[str], list[str]]:
    """Two disjoint samples of the recipe's training sentences: one to calibrate, one to score trials."""
    pool = sample(load_sentences(spec), calibration + proxy, seed=seed + 5)
    return pool[:calibration], pool[calibration:]


def bundle_tokenizer(bundle: Path):
    """The bundle's tokenizer.json set up exactly as runtime.OnnxEncoder sets it up."""
    from tokenizers import Tokenizer

    manifest = read_manifest(bundle)
    tokenizer = Tokenizer.from_file(str(Path(bundle) / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=int(manifest["max_seq_length"]))
    tokenizer.enable_padding(pad_id=int(manifest["pad_token_id"]), pad_token=manifest["pad_token"])
    return tokenizer, list(manifest["inputs"])


def feeds(bundle: Path, sentences: list[str], batch_size: int = 1) -> list[dict[str, np.ndarray]]:
    """Model inputs for the sentences, in batches (batch 1 by default: no padding enters the ranges)."""
    tokenizer, inputs = bundle_tokenizer(bundle)
    out = []
    for start in range(0, len(sentences), batch_size):
        enc = tokenizer.encode_batch(sentences[start:start + batch_size])
        batch = {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                 "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64)}
        if "token_type_ids" in inputs:
            batch["token_type_ids"] = np.array([e.type_ids for e in enc], dtype=np.int64)
        out.append(batch)
    return out


class FeedsReader:
    """onnxruntime's CalibrationDataReader protocol over precomputed feeds (rewindable)."""

    def __init__(self, batches: list[dict[str, np.ndarray]]) -> None:
        self.batches = batches
        self._it: Iterator | None = None

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._it is None:
            self._it = iter(self.batches)
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = None

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._it = iter(self.batches[start_index:end_index])
