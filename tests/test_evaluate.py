"""Quality metrics on hand-made embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from edgedistill.data import StsPairs, load_retrieval
from edgedistill.tasks.embedding.evaluate import EvalSet, Evaluator, TeacherReference, ndcg_at_10, sts_spearman


class TableEncoder:
    """Looks sentences up in a fixed table of vectors."""

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table
        self.dimension = len(next(iter(table.values())))

    def encode(self, sentences, batch_size=64):
        out = np.stack([self.table[s] for s in sentences]).astype(np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_ndcg_perfect_and_second_place() -> None:
    eye = np.eye(3, dtype=np.float32)
    assert ndcg_at_10(eye, eye, [{0}, {1}, {2}]) == pytest.approx(100.0)
    query = np.array([[1.0, 0.0]], dtype=np.float32)
    corpus = np.array([[0.6, 0.8], [1.0, 0.0]], dtype=np.float32)  # the relevant doc 0 ranks second
    assert ndcg_at_10(query, corpus, [{0}]) == pytest.approx(100 / np.log2(3))
    far = np.concatenate([np.tile([[1.0, 0.0]], (11, 1)), [[-1.0, 0.0]]]).astype(np.float32)
    assert ndcg_at_10(query, far, [{11}]) == 0.0  # the relevant doc ranks 12th: outside the top 10


def test_sts_spearman_orders_pairs() -> None:
    v = {"a": np.array([1, 0]), "b": np.array([1, 0.1]), "c": np.array([0, 1]), "d": np.array([1, 1])}
    sts = StsPairs(first=["a", "a", "a"], second=["b", "d", "c"], scores=[5.0, 2.5, 0.0])
    assert sts_spearman(TableEncoder(v), sts, 8) == pytest.approx(100.0)
    reversed_sts = StsPairs(first=sts.first, second=sts.second, scores=[0.0, 2.5, 5.0])
    assert sts_spearman(TableEncoder(v), reversed_sts, 8) == pytest.approx(-100.0)


def test_teacher_agreement_and_cross_space_retrieval() -> None:
    rng = np.random.default_rng(0)
    words = [f"s{i}" for i in range(30)]
    table = {w: rng.normal(size=8) for w in words}
    from edgedistill.data import RetrievalSet

    retrieval = RetrievalSet(queries=words[:5], corpus=words[:5] + words[20:], relevant=[{i} for i in range(5)])
    data = EvalSet(sts=None, heldout=words[5:15], latency_sentences=words[:2], retrieval=retrieval)
    teacher = TableEncoder(table)
    reference = TeacherReference(heldout=teacher.encode(data.heldout), corpus=teacher.encode(retrieval.corpus))
    same = Evaluator(data, reference).quality(teacher)
    assert same["teacher_cosine_mean"] == pytest.approx(1.0, abs=1e-6)
    assert same["retrieval_ndcg10"] == pytest.approx(100.0) and same["retrieval_ndcg10_cross"] == pytest.approx(100.0)
    noisy = TableEncoder({w: v + rng.normal(scale=2.0, size=8) for w, v in table.items()})
    worse = Evaluator(data, reference).quality(noisy)
    assert worse["teacher_cosine_mean"] < 0.9


def test_load_retrieval_keeps_relevant_docs(tiny_world: dict) -> None:
    ret = load_retrieval(str(tiny_world["retrieval"]), max_queries=5, max_corpus=8)
    assert len(ret.queries) == 5 and len(ret.corpus) == 8
    for rel in ret.relevant:
        assert rel and max(rel) < len(ret.corpus)


def test_relative_drop() -> None:
    from edgedistill.quant.search import relative_drop

    assert relative_drop(80.0, 79.2) == pytest.approx(0.01)
    assert relative_drop(80.0, 81.0) < 0


def test_paired_bootstrap_interval_holds_the_mean_gain() -> None:
    import numpy as np

    from edgedistill.tasks.embedding.evaluate import ndcg_at_10, ndcg_per_query, paired_bootstrap_ci

    rng = np.random.default_rng(0)
    before = rng.normal(0.7, 0.1, 400)
    low, high = paired_bootstrap_ci(before, before + 0.05 + rng.normal(0, 0.02, 400))
    assert 0.04 < low < 0.05 < high < 0.06
    low, high = paired_bootstrap_ci(before, before + rng.normal(0, 0.1, 400))
    assert low < 0 < high  # no gain: the interval straddles zero
    q, c = rng.normal(size=(5, 8)), rng.normal(size=(12, 8))
    relevant = [{i} for i in range(5)]
    assert ndcg_at_10(q, c, relevant) == ndcg_per_query(q, c, relevant).mean()
