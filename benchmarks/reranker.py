"""The shipped reranker recipe against its goals, every figure from one run on this machine.

    flock /tmp/edgedistill-heavy.lock .venv/bin/python benchmarks/reranker.py        # reuses runs/snli-reranker

Runs (or reuses) `edgedistill run snli-reranker`, then, side by side in this process: held-out reranking quality
(nDCG@10, MRR@10 of the first stage's top-k reordered; 200 SNLI test premises against all 9,760 test hypotheses)
of the first stage alone, the fine-tuned teacher cross-encoder, the PyTorch student, the fp32 ONNX export and the
INT8 bundle; per-query latency at 1 query x 10/50/100 candidates of the teacher (PyTorch fp32) and the student's
artifacts, timed query by query in turn; and sizes. With --first-stage MODEL, the teacher and the INT8 bundle are
also scored on a bi-encoder's top-k (e.g. all-MiniLM-L6-v2), a stronger first stage than BM25.
Writes benchmarks/results/reranker.md and reranker.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
log = logging.getLogger("benchmarks.reranker")

GOALS = {"retention_pct": 95.0, "speedup_1x50": 18.0, "size_mb": 25.0}


def artifact(records: list, stage: str) -> Path:
    return next(r.artifact.path for r in records if r.type == stage)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="snli-reranker")
    parser.add_argument("--runs-dir", default=str(ROOT / "runs"))
    parser.add_argument("--queries", type=int, default=8, help="Queries timed per model and candidate count.")
    parser.add_argument("--first-stage", default=None, help="Also rerank a bi-encoder's top-k (e.g. all-MiniLM-L6-v2).")
    parser.add_argument("--results", default=str(RESULTS), help="Folder for reranker.md / reranker.json.")
    parser.add_argument("--margins", action="store_true", help="Also distil a bi-encoder with margin_mse on the "
                        "cross-encoder's margins vs the bi-encoder teacher's (benchmarks/recipes/margins.yaml).")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    import torch

    from edgedistill.contract import ONNX, TEACHER, TORCH, artifact_size_mb
    from edgedistill.pipeline import run_recipe
    from edgedistill.recipe import load_recipe
    from edgedistill.runner import Runner
    from edgedistill.tasks.reranker.profile import _workload, summarize, time_queries

    recipe = load_recipe(args.recipe)
    t0 = time.perf_counter()
    records = run_recipe(recipe, args.runs_dir)
    run_s = time.perf_counter() - t0
    runner = Runner(recipe, args.runs_dir)
    runner.teacher_path = artifact(records, "finetune")
    torch.set_num_threads(recipe.threads or 2)
    task, evaluator = runner.task, runner.evaluator()
    models = {"teacher cross-encoder · PyTorch fp32": (TEACHER, runner.teacher_path),
              "student · PyTorch fp32": (TORCH, artifact(records, "distill")),
              "student · ONNX fp32": (ONNX, artifact(records, "export")),
              "student · ONNX INT8 (bundle)": (ONNX, Path(args.runs_dir).resolve() / recipe.name / "bundle")}
    loaded = {label: task.load(kind, path, threads=recipe.threads) for label, (kind, path) in models.items()}
    # quality as the run measured it (the runner's evaluator: teacher cached once, every artifact after its stage)
    by_stage = {r.type: r.evaluation for r in records}
    quality = {"teacher cross-encoder · PyTorch fp32": runner.teacher_evaluation()[0],
               "student · PyTorch fp32": by_stage["distill"], "student · ONNX fp32": by_stage["export"],
               "student · ONNX INT8 (bundle)": by_stage["quantize"]}
    rows: list[dict] = [{"model": f"first stage alone ({evaluator.data.first_stage}, top-{evaluator.data.top_k})",
                         "rerank_ndcg10": evaluator.first_stage_metrics["first_stage_ndcg10"],
                         "rerank_mrr10": evaluator.first_stage_metrics["first_stage_mrr10"]}]
    def size_mb(path: Path) -> float:
        """A bundle holds the fp32 and the INT8 graph; an app copies the one its manifest names (the goal's size)."""
        manifest = path / "manifest.json"
        if manifest.is_file():
            return round((path / json.loads(manifest.read_text())["model"]).stat().st_size / 1e6, 3)
        return artifact_size_mb(path)

    for label in loaded:
        rows.append({"model": label, **{k: v for k, v in quality[label].items() if "latency" not in k},
                     "size_mb": size_mb(models[label][1])})
    teacher_ndcg = rows[1]["rerank_ndcg10"]
    for row in rows:
        row["retention_pct"] = 100 * row["rerank_ndcg10"] / teacher_ndcg

    queries, candidates = _workload(evaluator.data, 100, args.queries)
    times = time_queries(loaded, queries, candidates, [10, 50, 100], warmup=1)
    speed = {label: summarize(t) for label, t in times.items()}
    teacher_label = next(iter(loaded))
    for row in rows[1:]:
        s = speed[row["model"]]
        row["latency"] = s
        row["speedup_1x50"] = speed[teacher_label]["50"]["p50_ms"] / s["50"]["p50_ms"]

    extra = None
    if args.first_stage:  # the same queries, a bi-encoder's top-k reranked by the teacher and the INT8 bundle
        from dataclasses import replace

        from edgedistill.tasks.reranker.evaluate import Evaluator, first_stage

        data = replace(evaluator.data, first_stage=args.first_stage)
        other = Evaluator(data, first_stage(data))
        extra = {"first_stage": args.first_stage, **{k: other.first_stage_metrics[k] for k in other.first_stage_metrics},
                 "teacher": other.quality(loaded[teacher_label]),
                 "int8": other.quality(loaded["student · ONNX INT8 (bundle)"])}

    margins = margin_comparison(args.runs_dir, runner.teacher_path) if args.margins else None

    final = rows[-1]
    verdict = {
        "retention_pct": (final["retention_pct"], final["retention_pct"] >= GOALS["retention_pct"]),
        "gain_over_first_stage": (final["ndcg10_gain"], final["ndcg10_gain"] > 0),
        "speedup_1x50": (final["speedup_1x50"], final["speedup_1x50"] >= GOALS["speedup_1x50"]),
        "size_mb": (final["size_mb"], final["size_mb"] <= GOALS["size_mb"]),
    }
    result = {"recipe": recipe.name, "run_s_this_call": round(run_s, 1), "host": platform.processor() or platform.machine(),
              "threads": recipe.threads, "timed_queries": len(queries), "queries": len(evaluator.data.queries),
              "corpus": len(evaluator.data.corpus), "top_k": evaluator.data.top_k,
              "first_stage": evaluator.data.first_stage, "rows": rows, "goals": GOALS,
              "verdict": {k: {"value": v, "met": ok} for k, (v, ok) in verdict.items()}, "bi_encoder_first_stage": extra,
              "ce_to_bi": margins,
              "stage_s": {r.type: r.timings.get("stage_s") for r in records}}
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "reranker.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    (out / "reranker.md").write_text(markdown(result))
    print(markdown(result))


def margin_comparison(runs_dir: str, cross_encoder: Path) -> dict:
    """The same bi-encoder distillation twice: margin_mse on the bi-encoder teacher's margins, then on the
    cross-encoder's; their evaluations (the default recipe's sets) side by side."""
    from edgedistill.pipeline import run_recipe
    from edgedistill.recipe import load_recipe

    recipe = ROOT / "benchmarks" / "recipes" / "margins.yaml"
    out = {}
    for name, extra in (("from the bi-encoder teacher", []), ("from the cross-encoder teacher",
                                                               [f"stages.0.margin_teacher={cross_encoder}"])):
        label = "margins-from-ce" if extra else "margins-from-bi"
        (record,) = run_recipe(load_recipe(recipe, [f"name={label}", *extra]), runs_dir)
        out[name] = {**record.evaluation, "stage_s": record.timings.get("stage_s"),
                     **{k: record.metrics.get(k) for k in ("margin_sign_agreement", "margin_teacher_scale")}}
    return out


def _f(v: object, d: int = 2) -> str:
    return f"{v:.{d}f}" if isinstance(v, (int, float)) else "–"


def markdown(r: dict) -> str:
    lines = [f"# Reranker benchmark: `{r['recipe']}`", "",
             f"`flock /tmp/edgedistill-heavy.lock .venv/bin/python benchmarks/reranker.py` on {r['host']}, "
             f"{r['threads']} threads; every figure below from this one run. Quality: {r['queries']} held-out queries "
             f"(SNLI test premises), the first stage's ({r['first_stage']}) top-{r['top_k']} of {r['corpus']:,} "
             "documents (test hypotheses) reordered (relevant = entailed hypotheses). "
             f"Latency: 1 query x N BM25 candidates scored in one call, p50 over {r['timed_queries']} queries, models "
             "timed in turn. Size: the model's weights; for the bundle, the graph its manifest names (the INT8 one an "
             "app copies; the bundle also carries the fp32 graph for clients that pick by dtype).", "",
             "| model | nDCG@10 | MRR@10 | % of teacher nDCG@10 | gain vs first stage | rank agreement | "
             "1 x 10 ms | 1 x 50 ms | 1 x 100 ms | pairs/s at 1 x 50 | speed-up at 1 x 50 | size MB |",
             "|---|" + "---|" * 11]
    for row in r["rows"]:
        lat = row.get("latency", {})
        lines.append(f"| {row['model']} | {_f(row['rerank_ndcg10'])} | {_f(row['rerank_mrr10'])} | "
                     f"{_f(row['retention_pct'], 1)} | {_f(row.get('ndcg10_gain'))} | "
                     f"{_f(row.get('teacher_rank_spearman'), 3)} | "
                     + " | ".join(_f(lat.get(n, {}).get("p50_ms"), 1) for n in ("10", "50", "100"))
                     + f" | {_f(lat.get('50', {}).get('pairs_per_s'), 0)} | {_f(row.get('speedup_1x50'), 1)} | "
                     f"{_f(row.get('size_mb'), 1)} |")
    lines += ["", "Goals (INT8 bundle):", ""]
    for name, v in r["verdict"].items():
        goal = r["goals"].get(name)
        lines.append(f"- {name}: {_f(v['value'])}" + (f" (goal {goal:g})" if goal else " (goal > 0)")
                     + (" — met" if v["met"] else " — NOT met"))
    extra = r.get("bi_encoder_first_stage")
    if extra:
        lines += ["", f"With a bi-encoder first stage ({extra['first_stage']}, top-{r['top_k']}, same queries): the first stage "
                  f"alone nDCG@10 {_f(extra['first_stage_ndcg10'])} (recall@20 {_f(extra['first_stage_recall'], 1)}%), "
                  f"teacher {_f(extra['teacher']['rerank_ndcg10'])}, INT8 student {_f(extra['int8']['rerank_ndcg10'])}."]
    ce = r.get("ce_to_bi")
    if ce:
        lines += ["", "Cross-encoder -> bi-encoder (benchmarks/recipes/margins.yaml: paraphrase-MiniLM-L3-v2 student, "
                  "5,000 sentences with mse + 1,000 SNLI triplets with margin_mse; only the margins' source differs):",
                  "", "| margin_mse margins | STS-b | nDCG@10 | nDCG@10 vs teacher index | cosine to teacher | sign "
                  "agreement of the margins |", "|---|---|---|---|---|---|"]
        for name, ev in ce.items():
            lines.append(f"| {name} | {_f(ev.get('sts_spearman'))} | {_f(ev.get('retrieval_ndcg10'))} | "
                         f"{_f(ev.get('retrieval_ndcg10_cross'))} | {_f(ev.get('teacher_cosine_mean'), 4)} | "
                         f"{_f(ev.get('margin_sign_agreement'), 3)} |")
    lines += ["", "Stage times of the run (s): " + ", ".join(f"{k} {_f(v, 0)}" for k, v in r["stage_s"].items()), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
