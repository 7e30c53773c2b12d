"""Uniform ``encode(sentences) -> normalised float32 array`` over PyTorch and ONNX artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgedistill.contract import ONNX
from edgedistill.contract import TORCH as SENTENCE_TRANSFORMER
from edgedistill.runtime import OnnxEncoder, normalise


class Encoder(Protocol):
    """Anything that turns sentences into L2-normalised embeddings."""

    dimension: int

    def encode(self, sentences: list[str], batch_size: int = 64) -> np.ndarray: ...


class TorchEncoder:
    """A sentence-transformers model (in memory), run with PyTorch."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.dimension = int(self.model.get_embedding_dimension())

    def encode(self, sentences: list[str], batch_size: int = 64) -> np.ndarray:
        sentences = list(sentences)
        return normalise(self.model.encode(sentences, batch_size=batch_size, convert_to_numpy=True,
                                           show_progress_bar=False))


def load_encoder(kind: str, path: Path, device: str = "cpu", threads: int = 0) -> Encoder:
    """Open an artifact of the given kind for encoding."""
    if kind in (SENTENCE_TRANSFORMER, "teacher"):
        from edgedistill.trust import load_sentence_transformer

        return TorchEncoder(load_sentence_transformer(path, device))
    if kind == ONNX:
        return OnnxEncoder(path, threads=threads)
    raise ValueError(f"unknown artifact kind {kind!r}")
