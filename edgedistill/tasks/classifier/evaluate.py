"""Classifier evaluation on the held-out test split: accuracy, macro-F1, agreement with the teacher (same
argmax), KL divergence to the teacher's distribution, expected calibration error, and batch-1 latency.

A predictor is anything with ``logits(inputs, batch_size) -> [n, num_labels]``: the torch ``SequenceClassifier``
and the ONNX ``OnnxSequenceClassifier`` both are.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgedistill.errors import RecipeError
from edgedistill.timing import batch1_latency

log = logging.getLogger(__name__)


@dataclass
class EvalSet:
    """The fixed test inputs and gold label names every artifact is measured on, and the latency sample."""

    inputs: list
    gold: list[str]
    latency_inputs: list
    batch_size: int = 64
    ece_bins: int = 15

    # the names the task-agnostic stages read (export timing, the quantize fallback)
    @property
    def latency_sentences(self) -> list:
        return self.latency_inputs

    @property
    def heldout(self) -> list:
        return []


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def macro_f1(pred: np.ndarray, gold: np.ndarray, n_classes: int) -> float:
    """Unweighted mean of per-class F1 (a class never predicted nor present counts as 0 only if present)."""
    scores = []
    for c in range(n_classes):
        tp = float(((pred == c) & (gold == c)).sum())
        fp = float(((pred == c) & (gold != c)).sum())
        fn = float(((pred != c) & (gold == c)).sum())
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def expected_calibration_error(probs: np.ndarray, gold: np.ndarray, bins: int = 15) -> float:
    """ECE: the confidence-weighted gap between confidence and accuracy over equal-width confidence bins."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == gold).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)


def kl_to_teacher(teacher_logits: np.ndarray, logits: np.ndarray) -> float:
    """Mean KL(teacher || artifact) of the class distributions, in nats."""
    p, q = softmax(teacher_logits), softmax(logits)
    return float((p * (np.log(np.maximum(p, 1e-12)) - np.log(np.maximum(q, 1e-12)))).sum(axis=1).mean())


def scores(logits: np.ndarray, gold: np.ndarray, n_classes: int, teacher_logits: np.ndarray | None,
           bins: int = 15) -> dict[str, float]:
    """All quality metrics from logits (percentages x100 but KL, in nats)."""
    pred = logits.argmax(axis=1)
    metrics = {"accuracy": 100 * float((pred == gold).mean()), "macro_f1": 100 * macro_f1(pred, gold, n_classes),
               "ece": 100 * expected_calibration_error(softmax(logits), gold, bins)}
    if teacher_logits is not None:
        metrics["agreement"] = 100 * float((pred == teacher_logits.argmax(axis=1)).mean())
        metrics["kl_to_teacher"] = kl_to_teacher(teacher_logits, logits)
    return metrics


def gold_ids(gold: list[str], label_names: list[str]) -> np.ndarray:
    """Gold label names as ids in the teacher's logit order; a test label the teacher lacks is an error."""
    index = {name: i for i, name in enumerate(label_names)}
    unknown = sorted(set(gold) - set(index))
    if unknown:
        raise RecipeError(f"teacher: its labels {label_names} do not include {unknown[:5]} of evaluation.test; give "
                          "a teacher trained on these classes (config.json id2label), or add a finetune stage")
    return np.array([index[g] for g in gold])


class Evaluator:
    """Scores predictors on an EvalSet against the teacher's test-set logits (``reference``: logits, labels)."""

    def __init__(self, data: EvalSet, reference: dict[str, Any]) -> None:
        self.data = data
        self.teacher_logits = reference.get("logits")
        self.label_names = [str(x) for x in reference["labels"]]
        self.gold = gold_ids(data.gold, self.label_names)

    def quality(self, predictor: Any) -> dict[str, float]:
        logits = predictor.logits(self.data.inputs, batch_size=self.data.batch_size)
        return scores(logits, self.gold, len(self.label_names), self.teacher_logits, self.data.ece_bins)

    def latency(self, predictor: Any) -> dict[str, float]:
        """Input-in, logits-out latency at batch size 1 (tokenisation included)."""
        return batch1_latency(lambda x: predictor.logits([x], batch_size=1), self.data.latency_inputs, warmup=5)

    def evaluate(self, predictor: Any, label: str | None = None) -> dict[str, float]:
        t0 = time.perf_counter()
        metrics = self.quality(predictor)
        metrics.update(self.latency(predictor))
        log.info("%s in %.1fs: %s", label or "evaluated", time.perf_counter() - t0,
                 {k: round(v, 4) for k, v in metrics.items()})
        return metrics
