"""Held-out reranking, the way a search stack uses a reranker: a first-stage retriever (BM25 or a bi-encoder)
returns the top-k candidates of each held-out query from the whole corpus, the cross-encoder reorders them.
nDCG@10 and MRR@10 of the reordered lists, the first stage's own figures (the gain is the reranker's), rank
agreement with the teacher, STS-b Spearman of the scores (optional) and per-query latency."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from scipy.stats import spearmanr

from edgedistill.data import StsPairs
from edgedistill.timing import batch1_latency

log = logging.getLogger(__name__)

PRIMARY_METRIC = "rerank_ndcg10"
DISCOUNTS = 1.0 / np.log2(np.arange(2, 12))


class Scorer(Protocol):
    def logits(self, pairs: list[tuple[str, str]], batch_size: int = 32) -> np.ndarray:
        """One relevance logit per (query, passage) pair [n]."""


@dataclass
class RerankSet:
    """Held-out queries, the corpus they search and their relevant documents; the first stage that retrieves."""

    queries: list[str]
    corpus: list[str]
    relevant: list[set[int]]
    first_stage: str = "bm25"
    top_k: int = 20
    batch_size: int = 32
    latency_queries: int = 20
    latency_candidates: int = 10
    sts: StsPairs | None = None

    def pairs(self, candidates: np.ndarray) -> list[tuple[str, str]]:
        """Every (query, candidate) pair, query by query."""
        return [(q, self.corpus[d]) for q, row in zip(self.queries, candidates, strict=True) for d in row]

    def pair_count(self) -> int:
        return len(self.queries) * self.top_k + (len(self.sts.scores) if self.sts else 0)


def ranking_metrics(candidates: np.ndarray, scores: np.ndarray, relevant: list[set[int]]) -> dict[str, float]:
    """nDCG@10 and MRR@10 (x100, binary relevance) of each query's candidates ordered by score (ties keep the
    first stage's order). A relevant document the first stage missed counts as not found."""
    ndcg = mrr = 0.0
    for row, row_scores, rel in zip(candidates, scores, relevant, strict=True):
        top = row[np.argsort(-row_scores, kind="stable")][:10]
        hits = [i for i, doc in enumerate(top) if doc in rel]
        ideal = DISCOUNTS[: min(len(rel), 10)].sum()
        ndcg += sum(DISCOUNTS[i] for i in hits) / ideal if ideal else 0.0
        mrr += 1.0 / (hits[0] + 1) if hits else 0.0
    n = max(1, len(relevant))
    return {"ndcg10": 100 * ndcg / n, "mrr10": 100 * mrr / n}


def recall(candidates: np.ndarray, relevant: list[set[int]]) -> float:
    """% of relevant documents among the candidates (what any reranker can reach)."""
    return float(100 * np.mean([len(set(row.tolist()) & rel) / len(rel) for row, rel in
                                zip(candidates, relevant, strict=True) if rel]))


def rank_agreement(scores: np.ndarray, reference: np.ndarray) -> float:
    """Mean per-query Spearman correlation of two scorings of the same candidates (queries with constant
    scores are skipped)."""
    values = []
    for a, b in zip(scores, reference, strict=True):
        if np.ptp(a) > 0 and np.ptp(b) > 0:
            values.append(spearmanr(a, b).statistic)
    return float(np.mean(values)) if values else float("nan")


@dataclass
class RerankReference:
    """What the teacher evaluation fixes once: the first stage's candidates and scores, the teacher's scores."""

    candidates: np.ndarray
    first_stage_scores: np.ndarray
    teacher_scores: np.ndarray | None = None

    def arrays(self) -> dict[str, np.ndarray | None]:
        return {"candidates": self.candidates, "first_stage_scores": self.first_stage_scores,
                "teacher_scores": self.teacher_scores}


def first_stage(data: RerankSet, device: str = "cpu") -> RerankReference:
    """Retrieve every query's top-k candidates with the set's first stage."""
    from edgedistill.tasks.reranker.first_stage import search

    t0 = time.perf_counter()
    ids, scores = search(data.first_stage, data.queries, data.corpus, data.top_k, data.batch_size, device)
    log.info("first stage (%s): top-%d of %d documents for %d queries in %.1fs (recall %.1f%%)", data.first_stage,
             ids.shape[1], len(data.corpus), len(data.queries), time.perf_counter() - t0, recall(ids, data.relevant))
    return RerankReference(ids, scores)


class Evaluator:
    """Scores rerankers on a RerankSet against the first stage and the teacher."""

    def __init__(self, data: RerankSet, reference: RerankReference) -> None:
        self.data = data
        self.reference = reference
        shape = reference.candidates.shape
        self._pairs = data.pairs(reference.candidates)
        self._shape = shape
        base = ranking_metrics(reference.candidates, reference.first_stage_scores, data.relevant)
        self.first_stage_metrics = {"first_stage_ndcg10": base["ndcg10"], "first_stage_mrr10": base["mrr10"],
                                    "first_stage_recall": recall(reference.candidates, data.relevant)}

    def candidate_scores(self, model: Scorer) -> np.ndarray:
        return np.asarray(model.logits(self._pairs, batch_size=self.data.batch_size), dtype=np.float32).reshape(
            self._shape)

    def quality(self, model: Scorer, scores: np.ndarray | None = None) -> dict[str, float]:
        """Reranking quality (and STS-b Spearman when the set has STS pairs); ``scores``: precomputed ones."""
        scores = self.candidate_scores(model) if scores is None else scores
        found = ranking_metrics(self.reference.candidates, scores, self.data.relevant)
        metrics = {PRIMARY_METRIC: found["ndcg10"], "rerank_mrr10": found["mrr10"], **self.first_stage_metrics,
                   "ndcg10_gain": found["ndcg10"] - self.first_stage_metrics["first_stage_ndcg10"]}
        if self.reference.teacher_scores is not None:
            metrics["teacher_rank_spearman"] = rank_agreement(scores, self.reference.teacher_scores.reshape(self._shape))
        sts = self.data.sts
        if sts is not None:
            predicted = model.logits(list(zip(sts.first, sts.second, strict=True)), batch_size=self.data.batch_size)
            metrics["sts_spearman"] = float(spearmanr(np.asarray(predicted).ravel(), sts.scores).statistic * 100)
        return metrics

    def latency(self, model: Scorer) -> dict[str, float]:
        """Per-query latency: one query with ``latency_candidates`` first-stage candidates, scored in one call
        (tokenisation included)."""
        n = self.data.latency_candidates
        groups = [[(q, self.data.corpus[d]) for d in row[:n]] for q, row in
                  zip(self.data.queries[: self.data.latency_queries], self.reference.candidates, strict=False)]
        return batch1_latency(lambda pairs: model.logits(pairs, batch_size=len(pairs)), groups, warmup=3)

    def evaluate(self, model: Scorer, label: str | None = None) -> dict[str, float]:
        t0 = time.perf_counter()
        metrics = self.quality(model)
        metrics.update(self.latency(model))
        log.info("%sevaluated in %.1fs: %s", f"{label}: " if label else "", time.perf_counter() - t0,
                 ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        return metrics


def teacher_reference(model: Scorer, data: RerankSet, device: str = "cpu") -> tuple[dict[str, float], dict[str, Any]]:
    """The teacher's quality and the arrays every artifact is compared with (first stage, teacher scores)."""
    reference = first_stage(data, device)
    evaluator = Evaluator(data, reference)
    scores = evaluator.candidate_scores(model)
    reference.teacher_scores = scores.reshape(-1)
    metrics = evaluator.quality(model, scores)
    return metrics, reference.arrays()
