"""Torch-free reranking with a deploy bundle: onnxruntime, tokenizers and numpy only.

    from edgedistill.runtime import load
    reranker = load("runs/snli-reranker/bundle")
    result = reranker.rank("A man plays a guitar.", ["A person makes music.", "A woman sleeps."])
    result.scores    # one relevance score per document, in the documents' order
    result.ranking   # document indices, most relevant first

This module must never import torch or transformers.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from edgedistill.manifest import BundleError, verify
from edgedistill.runtime import require_task
from edgedistill.tasks.seqcls.runtime import OnnxSequenceClassifier, apply_activation

TASK = "reranker"


class Ranking(NamedTuple):
    """Scores in the documents' order and the ranking (document indices, best first)."""

    scores: list[float]
    ranking: list[int]


class OnnxReranker:
    """A cross-encoder bundle: one relevance logit per (query, document) pair."""

    def __init__(self, path: Path | str, threads: int = 0, model_file: str | None = None, spin: bool = True,
                 precision: str | None = None) -> None:
        path = Path(path)
        require_task(path, TASK, "rank")
        self.classifier = OnnxSequenceClassifier(path, threads=threads, model_file=model_file, spin=spin,
                                                 precision=precision)
        self.manifest = self.classifier.manifest
        self.model_path = self.classifier.model_path
        self.activation = str(self.manifest.get("activation", "none"))

    @property
    def session(self):  # the quantize stage's timing helpers reach for it
        return self.classifier.session

    def logits(self, pairs: list[tuple[str, str]], batch_size: int = 32) -> np.ndarray:
        """One raw logit per pair [n]."""
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        return self.classifier.logits([(str(q), str(d)) for q, d in pairs], batch_size=batch_size)[:, 0]

    def scores(self, pairs: list[tuple[str, str]], batch_size: int = 32) -> np.ndarray:
        """Relevance per pair: the logit through the bundle's activation (sigmoid: 0..1; none: the logit)."""
        return apply_activation(self.logits(pairs, batch_size), self.activation)

    def rank(self, query: str, documents: list[str], batch_size: int = 32) -> Ranking:
        """Score every document against the query; the ranking orders them best first (ties: input order)."""
        scores = self.scores([(query, d) for d in documents], batch_size)
        return Ranking([float(s) for s in scores], [int(i) for i in np.argsort(-scores, kind="stable")])


def load(path: str | Path, *, threads: int = 0, check: bool = False, precision: str | None = None) -> OnnxReranker:
    """Open a reranker deploy bundle (``edgedistill.runtime.load`` dispatches here, having verified every file's
    sha256; ``check`` verifies them when called directly)."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: no such bundle folder")
    require_task(path, TASK, "rank")
    if check:
        verify(path)
    return OnnxReranker(path, threads=threads, precision=precision)
