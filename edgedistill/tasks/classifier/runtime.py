"""Torch-free classification with a deploy bundle: onnxruntime, tokenizers and numpy only.

    from edgedistill.runtime import load
    clf = load("runs/spamassassin-minilm/bundle")
    clf.predict(["WIN a FREE cruise, reply now"])   # [{"label": "spam", "score": 0.98, "scores": {...}}]
    clf.predict([("A man plays guitar.", "Someone makes music.")])   # a pair model (premise, hypothesis)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.tasks.seqcls.runtime import OnnxSequenceClassifier


class Classifier(OnnxSequenceClassifier):
    """Label names and probabilities for texts (or pairs) from a classifier bundle."""

    def probabilities(self, texts: Any, batch_size: int = 32) -> np.ndarray:
        """Class probabilities [n, num_labels] (softmax of the logits)."""
        return self.scores(texts, batch_size)

    def predict(self, texts: Any, batch_size: int = 32) -> list[dict[str, Any]]:
        """For each input: the most likely label, its probability, and every label's probability."""
        probs = self.probabilities(texts, batch_size)
        return [{"label": self.labels[int(p.argmax())], "score": float(p.max()),
                 "scores": {name: float(v) for name, v in zip(self.labels, p, strict=True)}} for p in probs]


def load(path: str | Path, threads: int = 0, precision: str | None = None) -> Classifier:
    """A classifier bundle, checked already by ``edgedistill.runtime.load``."""
    return Classifier(Path(path), threads=threads, precision=precision)
