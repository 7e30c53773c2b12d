"""Torch-free sequence classification with an exported bundle: onnxruntime, tokenizers and numpy only.

This module must never import torch or transformers: the runtimes of the classifier and reranker tasks, and
the quantize stage's quality proxy, are built on it.

    model = OnnxSequenceClassifier("runs/spam/bundle")
    model.logits(["Win a free cruise now!!!"])                    # [1, num_labels]
    model.logits([("A man plays guitar.", "A person makes music.")])  # pairs
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.manifest import BundleError, read_manifest
from edgedistill.runtime import OnnxModel
from edgedistill.tasks.seqcls import TEXT, TEXT_PAIR


def apply_activation(values: np.ndarray, activation: str) -> np.ndarray:
    """softmax over the last axis, elementwise sigmoid, or the values unchanged ('none')."""
    values = np.asarray(values, dtype=np.float32)
    if activation == "softmax":
        z = np.exp(values - values.max(axis=-1, keepdims=True))
        return z / z.sum(axis=-1, keepdims=True)
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-values))
    return values


def _inverse_activation(scores: np.ndarray, activation: str) -> np.ndarray:
    """Logits back from in-graph scores (softmax: log-probabilities, which differ from logits by a constant)."""
    eps = 1e-12
    if activation == "softmax":
        return np.log(np.maximum(scores, eps))
    if activation == "sigmoid":
        s = np.clip(scores, eps, 1 - eps)
        return np.log(s / (1 - s))
    return scores


class OnnxSequenceClassifier(OnnxModel):
    """A sequence-classification bundle (model.onnx, tokenizer.json, manifest.json) run with onnxruntime."""

    def __init__(self, path: Path | str, threads: int = 0, model_file: str | None = None, spin: bool = True,
                 precision: str | None = None) -> None:
        manifest = read_manifest(Path(path))
        if manifest.get("output") not in ("logits", "probabilities"):
            raise BundleError(f"{path}: this bundle outputs {manifest.get('output')!r}, not a classifier's logits "
                              f"(task {manifest.get('task', 'embedding')!r}); use the runtime of that task")
        super().__init__(Path(path), threads, model_file, spin, precision)
        self.text_inputs = manifest.get("text_inputs", TEXT)
        self.labels = [str(x) for x in manifest.get("labels", [])]
        self.num_labels = int(manifest.get("num_labels", len(self.labels) or 1))
        self.activation = manifest.get("activation", "none")
        self.output_activation = manifest.get("output_activation", "none")  # what the graph itself applies

    def _check_kind(self, items: list) -> None:
        pairs = bool(items) and not isinstance(items[0], str)
        if pairs and self.text_inputs == TEXT:
            raise BundleError(f"{self.path}: this model takes single texts, but pairs were given")
        if not pairs and items and self.text_inputs == TEXT_PAIR:
            raise BundleError(f"{self.path}: this model takes text pairs (first, second), but single texts were "
                              "given; pass [(first, second), ...]")

    def raw_output(self, texts: Any, batch_size: int = 32) -> np.ndarray:
        """The graph's output [n, num_labels] (logits, or probabilities when the bundle put them in the graph)."""
        items = [t if isinstance(t, str) else (str(t[0]), str(t[1])) for t in texts]
        self._check_kind(items)
        if not items:
            return np.zeros((0, self.num_labels), dtype=np.float32)
        return self.outputs(items, batch_size).reshape(len(items), self.num_labels)

    def logits(self, texts: Any, batch_size: int = 32) -> np.ndarray:
        """Logits [n, num_labels] for single texts or (first, second) pairs."""
        return _inverse_activation(self.raw_output(texts, batch_size), self.output_activation)

    def scores(self, texts: Any, batch_size: int = 32) -> np.ndarray:
        """The task's scores: probabilities (softmax/sigmoid) or the raw logits (activation 'none')."""
        raw = self.raw_output(texts, batch_size)
        return raw if self.output_activation != "none" else apply_activation(raw, self.activation)



class LogitsProxy:
    """A quantization trial's agreement with the fp32 bundle on a few hundred inputs: 1 - the relative error
    of its logits (||z - z_ref|| / ||z_ref - mean||), so 1 means identical. Named ``cosine`` like the
    embedding proxy, which the search calls."""

    def __init__(self, reference_bundle: Path, texts: list, threads: int = 0) -> None:
        self.texts = list(texts)
        self.threads = threads
        self.reference = OnnxSequenceClassifier(reference_bundle, threads=threads).logits(self.texts)
        self.scale = float(np.linalg.norm(self.reference - self.reference.mean(axis=0))) or 1.0

    def cosine(self, bundle: Path, model_file: str = "model.onnx") -> float:
        got = OnnxSequenceClassifier(bundle, threads=self.threads, model_file=model_file).logits(self.texts)
        return float(1.0 - np.linalg.norm(got - self.reference) / self.scale)
