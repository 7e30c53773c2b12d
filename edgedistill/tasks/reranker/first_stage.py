"""First-stage retrieval: the candidates a reranker reorders. BM25 (the ``bm25s`` library: sparse-matrix BM25,
kept up to date, numpy only) or a bi-encoder (a sentence-transformers model: cosine of normalised embeddings)."""

from __future__ import annotations

import logging

import numpy as np

from edgedistill.errors import RecipeError

log = logging.getLogger(__name__)

BM25 = "bm25"


def bm25_search(queries: list[str], corpus: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` corpus ids [Q, k] and BM25 scores, best first (English stopwords removed)."""
    import bm25s

    k = min(k, len(corpus))
    index = bm25s.BM25()
    index.index(bm25s.tokenize(corpus, stopwords="en", show_progress=False), show_progress=False)
    ids, scores = index.retrieve(bm25s.tokenize(queries, stopwords="en", show_progress=False), k=k,
                                 show_progress=False, n_threads=1)
    return np.asarray(ids, dtype=np.int64), np.asarray(scores, dtype=np.float32)


def bi_encoder_search(spec: str, queries: list[str], corpus: list[str], k: int, batch_size: int = 64,
                      device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` corpus ids [Q, k] by cosine similarity of a sentence-transformers bi-encoder, best first."""
    from pathlib import Path

    from edgedistill.assets import resolve
    from edgedistill.trust import load_sentence_transformer

    path = resolve(spec)
    if not (Path(path) / "modules.json").is_file():
        raise RecipeError(f"evaluation.first_stage: {path} is not a sentence-transformers bi-encoder (no "
                          f"modules.json); give '{BM25}' or a bi-encoder such as all-MiniLM-L6-v2")
    model = load_sentence_transformer(path, device)
    docs = model.encode(corpus, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True)
    q = model.encode(queries, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True)
    sims = q @ docs.T
    k = min(k, len(corpus))
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return top.astype(np.int64), np.take_along_axis(sims, top, axis=1).astype(np.float32)


def search(first_stage: str, queries: list[str], corpus: list[str], k: int, batch_size: int = 64,
           device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Candidates for each query from ``first_stage`` ('bm25' or a bi-encoder source)."""
    if first_stage == BM25:
        return bm25_search(queries, corpus, k)
    return bi_encoder_search(first_stage, queries, corpus, k, batch_size, device)


def mine_negatives(queries: list[str], positives: list[set[str]], pool: list[str], per_query: int,
                   depth: int = 10) -> list[list[str]]:
    """Hard negatives: each query's top BM25 passages from ``pool`` that are not among its positives."""
    if per_query <= 0 or not pool:
        return [[] for _ in queries]
    ids, _ = bm25_search(queries, pool, depth + per_query)
    return [[pool[i] for i in row if pool[i] not in pos][:per_query] for row, pos in zip(ids, positives, strict=True)]
