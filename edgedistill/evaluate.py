"""One evaluator for every artifact: STS-b Spearman, agreement with the teacher, batch-1 latency."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr

from edgedistill.data import StsPairs
from edgedistill.encoders import Encoder

log = logging.getLogger(__name__)

PRIMARY_METRIC = "sts_spearman"


@dataclass
class EvalSet:
    """The fixed inputs every artifact is measured on."""

    sts: StsPairs | None
    heldout: list[str]
    latency_sentences: list[str]
    batch_size: int = 64


def sts_spearman(encoder: Encoder, sts: StsPairs, batch_size: int) -> float:
    """Spearman correlation (x100) between cosine similarity and the gold scores."""
    unique = sorted(set(sts.first) | set(sts.second))
    index = {s: i for i, s in enumerate(unique)}
    emb = encoder.encode(unique, batch_size=batch_size)
    a = emb[[index[s] for s in sts.first]]
    b = emb[[index[s] for s in sts.second]]
    cosine = (a * b).sum(axis=1)
    return float(spearmanr(cosine, sts.scores).statistic * 100)


def batch1_latency_ms(encoder: Encoder, sentences: list[str], warmup: int = 5) -> dict[str, float]:
    """Text-in, embedding-out latency at batch size 1 (tokenisation included)."""
    for s in sentences[:warmup]:
        encoder.encode([s], batch_size=1)
    times = []
    for s in sentences:
        t0 = time.perf_counter()
        encoder.encode([s], batch_size=1)
        times.append((time.perf_counter() - t0) * 1000)
    return {"latency_ms_p50": float(np.percentile(times, 50)), "latency_ms_p90": float(np.percentile(times, 90))}


class Evaluator:
    """Scores encoders on an EvalSet, comparing against the teacher's held-out embeddings."""

    def __init__(self, data: EvalSet, teacher_heldout: np.ndarray | None = None) -> None:
        self.data = data
        self.teacher_heldout = teacher_heldout

    def quality(self, encoder: Encoder) -> dict[str, float]:
        """Quality metrics only (what quality gates compare)."""
        metrics: dict[str, float] = {}
        if self.data.sts is not None:
            metrics[PRIMARY_METRIC] = sts_spearman(encoder, self.data.sts, self.data.batch_size)
        if self.teacher_heldout is not None and self.data.heldout:
            emb = encoder.encode(self.data.heldout, batch_size=self.data.batch_size)
            if emb.shape[1] == self.teacher_heldout.shape[1]:
                cosines = (emb * self.teacher_heldout).sum(axis=1)
                metrics["teacher_cosine_mean"] = float(cosines.mean())
                metrics["teacher_cosine_min"] = float(cosines.min())
        return metrics

    def evaluate(self, encoder: Encoder) -> dict[str, float]:
        """Quality and batch-1 latency."""
        t0 = time.perf_counter()
        metrics = self.quality(encoder)
        metrics.update(batch1_latency_ms(encoder, self.data.latency_sentences))
        metrics["dimension"] = float(encoder.dimension)
        log.info("evaluated in %.1fs: %s", time.perf_counter() - t0,
                 ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        return metrics


def relative_drop(reference: float, value: float) -> float:
    """Fractional loss of a higher-is-better metric (0.01 = lost 1%)."""
    return (reference - value) / abs(reference) if reference else 0.0
