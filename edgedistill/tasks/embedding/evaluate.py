"""One evaluator for every artifact: STS-b Spearman, agreement with the teacher, batch-1 latency."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr

from edgedistill.data import RetrievalSet, StsPairs
from edgedistill.tasks.embedding.encoders import Encoder
from edgedistill.timing import batch1_latency

log = logging.getLogger(__name__)

PRIMARY_METRIC = "sts_spearman"


@dataclass
class EvalSet:
    """The fixed inputs every artifact is measured on."""

    sts: StsPairs | None
    heldout: list[str]
    latency_sentences: list[str]
    batch_size: int = 64
    retrieval: RetrievalSet | None = None

    def sentence_count(self, reference: bool = False, latency: bool = False) -> int:
        """Sentences one evaluation encodes: quality, plus the teacher's reference embeddings (``reference``) and
        the batch-1 latency sample with its warm-up (``latency``); for progress lines."""
        copies = 2 if reference else 1
        n = len(set(self.sts.first) | set(self.sts.second)) if self.sts else 0
        n += (len(self.retrieval.queries) + copies * len(self.retrieval.corpus)) if self.retrieval else 0
        n += copies * len(self.heldout)
        return n + (len(self.latency_sentences) + min(5, len(self.latency_sentences)) if latency else 0)


@dataclass
class TeacherReference:
    """Teacher embeddings that student metrics are compared against."""

    heldout: np.ndarray | None = None
    corpus: np.ndarray | None = None


def sts_spearman(encoder: Encoder, sts: StsPairs, batch_size: int) -> float:
    """Spearman correlation (x100) between cosine similarity and the gold scores."""
    unique = sorted(set(sts.first) | set(sts.second))
    index = {s: i for i, s in enumerate(unique)}
    emb = encoder.encode(unique, batch_size=batch_size)
    a = emb[[index[s] for s in sts.first]]
    b = emb[[index[s] for s in sts.second]]
    cosine = (a * b).sum(axis=1)
    return float(spearmanr(cosine, sts.scores).statistic * 100)


def ndcg_per_query(query_emb: np.ndarray, corpus_emb: np.ndarray, relevant: list[set[int]]) -> np.ndarray:
    """nDCG@10 (x100) of each query with binary relevance, ranking the corpus by cosine similarity."""
    scores = query_emb @ corpus_emb.T
    top = np.argsort(-scores, axis=1)[:, :10]
    discounts = 1.0 / np.log2(np.arange(2, 12))
    out = np.zeros(len(relevant))
    for q, (ranked, rel) in enumerate(zip(top, relevant, strict=True)):
        dcg = sum(discounts[i] for i, doc in enumerate(ranked) if doc in rel)
        ideal = discounts[: min(len(rel), 10)].sum()
        out[q] = 100 * dcg / ideal if ideal else 0.0
    return out


def ndcg_at_10(query_emb: np.ndarray, corpus_emb: np.ndarray, relevant: list[set[int]]) -> float:
    """Mean nDCG@10 (x100) with binary relevance, ranking the corpus by cosine similarity."""
    return float(ndcg_per_query(query_emb, corpus_emb, relevant).mean())


def paired_bootstrap_ci(before: np.ndarray, after: np.ndarray, rounds: int = 2000, seed: int = 0) -> list[float]:
    """95% interval of mean(after - before) over items resampled with replacement (paired bootstrap)."""
    diff = np.asarray(after, dtype=np.float64) - np.asarray(before, dtype=np.float64)
    idx = np.random.default_rng(seed).integers(0, len(diff), size=(rounds, len(diff)))
    means = diff[idx].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def batch1_latency_ms(encoder: Encoder, sentences: list[str], warmup: int = 5) -> dict[str, float]:
    """Text-in, embedding-out latency at batch size 1 (tokenisation included); empty without sentences."""
    return batch1_latency(lambda s: encoder.encode([s], batch_size=1), sentences, warmup=warmup)


class Evaluator:
    """Scores encoders on an EvalSet, comparing against the teacher's held-out embeddings."""

    def __init__(self, data: EvalSet, teacher: TeacherReference | None = None) -> None:
        self.data = data
        self.teacher = teacher or TeacherReference()

    def quality(self, encoder: Encoder) -> dict[str, float]:
        """Quality metrics only (what quality gates compare)."""
        metrics: dict[str, float] = {}
        if self.data.sts is not None:
            metrics[PRIMARY_METRIC] = sts_spearman(encoder, self.data.sts, self.data.batch_size)
        batch = self.data.batch_size
        if self.data.retrieval is not None:
            ret = self.data.retrieval
            queries = encoder.encode(ret.queries, batch_size=batch)
            metrics["retrieval_ndcg10"] = ndcg_at_10(queries, encoder.encode(ret.corpus, batch_size=batch),
                                                     ret.relevant)
            teacher_corpus = self.teacher.corpus
            if teacher_corpus is not None and teacher_corpus.shape[1] == queries.shape[1]:
                # Cross-space: on-device queries against an index the teacher built.
                metrics["retrieval_ndcg10_cross"] = ndcg_at_10(queries, teacher_corpus, ret.relevant)
        teacher_heldout = self.teacher.heldout
        if teacher_heldout is not None and self.data.heldout:
            emb = encoder.encode(self.data.heldout, batch_size=batch)
            if emb.shape[1] == teacher_heldout.shape[1]:
                cosines = (emb * teacher_heldout).sum(axis=1)
                metrics["teacher_cosine_mean"] = float(cosines.mean())
                metrics["teacher_cosine_min"] = float(cosines.min())
        return metrics

    def latency(self, encoder: Encoder) -> dict[str, float]:
        """Batch-1 latency on the evaluation's latency sentences."""
        return batch1_latency_ms(encoder, self.data.latency_sentences)

    def evaluate(self, encoder: Encoder, label: str | None = None) -> dict[str, float]:
        """Quality and batch-1 latency; with ``label``, progress lines (counts, rate, ETA) under that name."""
        progress = None
        if label:
            from edgedistill.progress import Progress, TrackedEncoder

            progress = Progress(label, self.data.sentence_count(latency=True), "sentences")
            encoder = TrackedEncoder(encoder, progress)
        t0 = time.perf_counter()
        metrics = self.quality(encoder)
        metrics.update(self.latency(encoder))
        metrics["dimension"] = float(encoder.dimension)
        if progress is not None:
            progress.close()
        log.info("evaluated in %.1fs: %s", time.perf_counter() - t0,
                 ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        return metrics
