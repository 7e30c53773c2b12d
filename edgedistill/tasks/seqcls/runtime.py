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
from edgedistill.runtime import KNOWN_INPUTS, _session, model_for
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


def _length(item: Any) -> int:
    return len(item) if isinstance(item, str) else len(item[0]) + len(item[1])


class OnnxSequenceClassifier:
    """A sequence-classification bundle (model.onnx, tokenizer.json, manifest.json) run with onnxruntime."""

    def __init__(self, path: Path | str, threads: int = 0, model_file: str | None = None, spin: bool = True,
                 precision: str | None = None) -> None:
        from tokenizers import Tokenizer

        path = Path(path)
        self.path = path
        manifest = read_manifest(path)
        self.manifest = manifest
        if manifest.get("output") not in ("logits", "probabilities"):
            raise BundleError(f"{path}: this bundle outputs {manifest.get('output')!r}, not a classifier's logits "
                              f"(task {manifest.get('task', 'embedding')!r}); use the runtime of that task")
        self.input_names = list(manifest["inputs"])
        unknown = [n for n in self.input_names if n not in KNOWN_INPUTS]
        if unknown:
            raise BundleError(f"{path}: manifest.json names inputs {unknown}; this runtime feeds {list(KNOWN_INPUTS)}")
        self.text_inputs = manifest.get("text_inputs", TEXT)
        self.labels = [str(x) for x in manifest.get("labels", [])]
        self.num_labels = int(manifest.get("num_labels", len(self.labels) or 1))
        self.activation = manifest.get("activation", "none")
        self.output_activation = manifest.get("output_activation", "none")  # what the graph itself applies
        self.max_seq_length = int(manifest["max_seq_length"])
        self.tokenizer = Tokenizer.from_file(str(path / manifest.get("tokenizer", "tokenizer.json")))
        self.tokenizer.enable_truncation(max_length=self.max_seq_length)
        self.tokenizer.enable_padding(pad_id=int(manifest["pad_token_id"]), pad_token=manifest["pad_token"])
        chosen = model_file or model_for(manifest, precision, path)
        self.model_path = path / chosen
        # Dynamic INT8 graphs take activation scales from the whole batch: run rows one by one (as the quantize
        # stage records), so a row's output never depends on its batch mates.
        self.rows_separately = bool(manifest.get("batch_invariance", {}).get("run_rows_separately")) and (
            chosen == manifest.get("model", "model.onnx"))
        self.session = _session(self.model_path, threads, spin=spin)

    def _check_kind(self, items: list) -> None:
        pairs = bool(items) and not isinstance(items[0], str)
        if pairs and self.text_inputs == TEXT:
            raise BundleError(f"{self.path}: this model takes single texts, but pairs were given")
        if not pairs and items and self.text_inputs == TEXT_PAIR:
            raise BundleError(f"{self.path}: this model takes text pairs (first, second), but single texts were "
                              "given; pass [(first, second), ...]")

    def _feeds(self, items: list) -> dict[str, np.ndarray]:
        if items and not isinstance(items[0], str):
            encodings = self.tokenizer.encode_batch([(str(a), str(b)) for a, b in items])
        else:
            encodings = self.tokenizer.encode_batch([str(t) for t in items])
        columns = {"input_ids": lambda e: e.ids, "attention_mask": lambda e: e.attention_mask,
                   "token_type_ids": lambda e: e.type_ids}
        return {name: np.array([columns[name](e) for e in encodings], dtype=np.int64) for name in self.input_names}

    def raw_output(self, texts: Any, batch_size: int = 32) -> np.ndarray:
        """The graph's output [n, num_labels] (logits, or probabilities when the bundle put them in the graph)."""
        items = list(texts)
        self._check_kind(items)
        out = np.zeros((len(items), self.num_labels), dtype=np.float32)
        if not items:
            return out
        if self.rows_separately:
            batch_size = 1
        order = np.argsort([-_length(t) for t in items], kind="stable")
        for start in range(0, len(items), batch_size):
            idx = order[start:start + batch_size]
            out[idx] = self.session.run(None, self._feeds([items[i] for i in idx]))[0]
        return out

    def logits(self, texts: Any, batch_size: int = 32) -> np.ndarray:
        """Logits [n, num_labels] for single texts or (first, second) pairs."""
        return _inverse_activation(self.raw_output(texts, batch_size), self.output_activation)

    def scores(self, texts: Any, batch_size: int = 32) -> np.ndarray:
        """The task's scores: probabilities (softmax/sigmoid) or the raw logits (activation 'none')."""
        raw = self.raw_output(texts, batch_size)
        return raw if self.output_activation != "none" else apply_activation(raw, self.activation)

    # the quantize stage's timing and batch-invariance helpers call encode(); they only need one row per input
    def encode(self, texts: Any, batch_size: int = 32) -> np.ndarray:
        return self.raw_output(texts, batch_size)


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
