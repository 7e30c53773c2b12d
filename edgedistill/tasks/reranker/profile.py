"""Profile rerankers the way they are used: one query with N first-stage candidates scored in one call.

Per-query latency (p50/p90, tokenisation included) and pairs/s at 1 query x 10, 50 and 100 candidates, for the
teacher (PyTorch fp32), the PyTorch student and every ONNX artifact of the chain, measured on this machine in
one process, query by query in turn (the order alternating), so drift in the machine's speed hits all alike and
every speed-up is a ratio of numbers measured side by side.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from edgedistill.contract import ONNX, TEACHER, TORCH, StageContext, StageResult
from edgedistill.errors import RecipeError
from edgedistill.stages.configs import Strict

log = logging.getLogger(__name__)

HEADLINE = 50  # candidates per query of the headline figures (the 1 query x 50 candidates)


class RerankerProfile(Strict):
    """Per-query latency and pairs/s at 1 query x N candidates, every model of the chain side by side."""

    type: Literal["profile"]
    candidates: list[int] = Field(default_factory=lambda: [10, 50, 100], min_length=1,
                                  description="Candidates per query (each a separate measurement).")
    queries: int = Field(default=8, gt=0, description="Held-out queries timed per model and candidate count.")
    warmup: int = Field(default=1, ge=0, description="Untimed queries per model first.")
    compare: list[Literal["teacher", "student", "onnx"]] = Field(
        default_factory=lambda: ["teacher", "student", "onnx"],
        description="Also measure the teacher and PyTorch students (fp32) and earlier ONNX artifacts.")
    threads: int = Field(default=0, ge=0, description="Threads for every model (0: the recipe's / all cores).")
    targets: list[Literal["local"]] = Field(default_factory=lambda: ["local"],
                                            description="Only 'local' for rerankers in this version.")


def _workload(data: Any, n_max: int, queries: int) -> tuple[list[str], list[list[str]]]:
    """Held-out queries, each with its top-``n_max`` BM25 candidates from the evaluation corpus."""
    from edgedistill.tasks.reranker.first_stage import bm25_search

    chosen = data.queries[:queries]
    ids, _ = bm25_search(chosen, data.corpus, n_max)
    return chosen, [[data.corpus[i] for i in row] for row in ids]


def _models(cfg: RerankerProfile, ctx: StageContext, task: Any) -> list[tuple[str, str, Path]]:
    from edgedistill.profiling.profiler import upstream_chain

    chain = upstream_chain(ctx.input.path, ctx.input.kind)
    models: list[tuple[str, str, Path]] = []
    if "teacher" in cfg.compare:
        models.append(("teacher · PyTorch fp32", TEACHER, Path(ctx.teacher)))
    for item in chain[:-1]:
        if item.kind == TORCH and "student" in cfg.compare:
            models.append((f"{item.stage} · PyTorch fp32", TORCH, item.path))
        elif item.kind == ONNX and "onnx" in cfg.compare:
            models.append((f"{item.stage} · ONNX {_precision(item.path)}", ONNX, item.path))
    last = chain[-1]
    models.append((f"{last.stage} · ONNX {_precision(last.path)}", ONNX, last.path))
    return models


def _precision(path: Path) -> str:
    from edgedistill.manifest import read_manifest

    return "int8" if read_manifest(path).get("quantization") else "fp32"


def run(cfg: RerankerProfile, ctx: StageContext, task: Any) -> StageResult:
    import torch

    threads = cfg.threads or ctx.inputs.threads
    if threads:
        torch.set_num_threads(threads)
    data = ctx.evaluator.data
    queries, candidates = _workload(data, max(cfg.candidates), cfg.queries)
    if len(candidates[0]) < max(cfg.candidates):
        raise RecipeError(f"stages.profile.candidates: {max(cfg.candidates)} candidates asked, the evaluation corpus "
                          f"gives {len(candidates[0])}; lower the counts or use a larger evaluation corpus")
    models = _models(cfg, ctx, task)
    loaded = {label: task.load(kind, path, threads=threads) for label, kind, path in models}
    for model in loaded.values():
        if hasattr(model, "model_path"):  # ONNX: idle pool threads must not spin while another model is timed
            from edgedistill.runtime import _session

            model.classifier.session = _session(model.model_path, threads, spin=False)
    times = time_queries(loaded, queries, candidates, cfg.candidates, cfg.warmup)
    kinds = {label: kind for label, kind, _ in models}
    sizes = {label: _size(path) for label, _, path in models}
    measurements = []
    for label in loaded:
        per_n = summarize(times[label])
        measurements.append({"label": label, "kind": kinds[label], "size_mb": sizes[label], "candidates": per_n})
    final, teacher = measurements[-1], next((m for m in measurements if m["kind"] == TEACHER), None)
    head = str(HEADLINE if HEADLINE in cfg.candidates else cfg.candidates[0])
    metrics: dict[str, Any] = {
        "rerank_profile": measurements, "queries": len(queries), "threads": threads or "all cores",
        "headline_candidates": int(head),
        "measured_by": f"profile stage (1 query x {head} candidates in one call, text in, logits out)",
        "latency_ms_p50": final["candidates"][head]["p50_ms"],
        "latency_ms_p90": final["candidates"][head]["p90_ms"], "pairs_per_s": final["candidates"][head]["pairs_per_s"],
        "speedup_vs_teacher": (teacher["candidates"][head]["p50_ms"] / final["candidates"][head]["p50_ms"]
                               if teacher else None),
    }
    metrics["report_markdown"] = report_section(metrics)
    return StageResult(metrics=metrics, passthrough=True)


def time_queries(models: dict[str, Any], queries: list[str], candidates: list[list[str]], counts: list[int],
                 warmup: int = 1) -> dict[str, dict[int, list[float]]]:
    """Wall time (ms) of scoring each query's first ``n`` candidates in one call, for every model and count;
    query by query, the models in turn (order alternating), after ``warmup`` untimed queries per model."""
    labels = list(models)
    times: dict[str, dict[int, list[float]]] = {label: {n: [] for n in counts} for label in labels}
    for n in counts:
        for label in labels:
            for q, docs in list(zip(queries, candidates, strict=True))[:warmup]:
                models[label].logits([(q, d) for d in docs[:n]], batch_size=n)
        for r, (q, docs) in enumerate(zip(queries, candidates, strict=True)):
            pairs = [(q, d) for d in docs[:n]]
            for label in labels if r % 2 == 0 else labels[::-1]:
                t0 = time.perf_counter()
                models[label].logits(pairs, batch_size=n)
                times[label][n].append(1000 * (time.perf_counter() - t0))
    return times


def summarize(times: dict[int, list[float]]) -> dict[str, dict[str, float]]:
    """p50/p90 ms and pairs/s (at the p50) per candidate count."""
    return {str(n): {"p50_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90)),
                     "pairs_per_s": float(n * 1000 / np.median(t))} for n, t in times.items()}


def _size(path: Path) -> float:
    from edgedistill.contract import artifact_size_mb

    return artifact_size_mb(path)


def report_section(metrics: dict[str, Any]) -> str:
    """Per-query latency and pairs/s by candidate count, every model side by side."""
    rows = metrics["rerank_profile"]
    counts = list(rows[0]["candidates"])
    teacher = next((m for m in rows if m["kind"] == TEACHER), None)
    lines = [f"Per-query latency, 1 query x N candidates scored in one call (tokenisation included), p50 ms (p90) "
             f"and pairs/s; {metrics['queries']} held-out queries with their BM25 candidates, {metrics['threads']} "
             "thread(s), all models in one process in turn.", "",
             "| model | size MB | " + " | ".join(f"1 x {n}: p50 ms (p90) | pairs/s" for n in counts)
             + (" | speed-up vs teacher at 1 x 50 |" if teacher and "50" in counts else " |"),
             "|---|---|" + "---|---|" * len(counts) + ("---|" if teacher and "50" in counts else "")]
    for m in rows:
        cells = [f"{m['candidates'][n]['p50_ms']:.1f} ({m['candidates'][n]['p90_ms']:.1f}) | "
                 f"{m['candidates'][n]['pairs_per_s']:.0f}" for n in counts]
        speed = ""
        if teacher and "50" in counts:
            speed = f" | x{teacher['candidates']['50']['p50_ms'] / m['candidates']['50']['p50_ms']:.1f}"
        lines.append(f"| {m['label']} | {m['size_mb']:.1f} | " + " | ".join(cells) + speed + " |")
    return "\n".join(lines)
