"""Distillation benchmark: run the distill stage of the shipped recipes (and optional ablations) and tabulate
parameters, STS-b, retrieval, retention vs the teacher and distill wall time.

Run (from the repository root, on an otherwise idle machine):
    .venv/bin/python benchmarks/distill.py                 # mpnet-to-tiny, mpnet-to-small and mpnet-6layer
    .venv/bin/python benchmarks/distill.py --ablation      # plus variants of the default recipe
    .venv/bin/python benchmarks/distill.py --only "tiny: lr 2e-5"   # one variant; results accumulate
Writes benchmarks/results/distill.md and distill.json. Teacher labels are cached across runs; the label
time column says how long labelling took in this run (0 when cached).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

# name -> (recipe, overrides applied to its distill stage)
RECIPES = {
    "mpnet-to-tiny": ("mpnet-to-tiny.yaml", []),
    "mpnet-to-small": ("mpnet-to-small.yaml", []),
    "mpnet-6layer": ("mpnet-6layer.yaml", []),
}
ABLATIONS = {
    # student initialisation (default recipe, one change each)
    "tiny: ridge projection": ("mpnet-to-tiny.yaml", ["stages.0.student.projection=ridge"]),
    "tiny: init MiniLM-L6 layers [0,3,5]": ("mpnet-to-tiny.yaml", [
        "stages.0.student.init=sentence-transformers/all-MiniLM-L6-v2", "stages.0.student.layers=[0, 3, 5]"]),
    # training data and losses (larger recipe, one change each)
    "small: lr 1e-4": ("mpnet-to-small.yaml", ["stages.0.learning_rate=1e-4"]),
    "small: STS-b train + SNLI sentences, lr 1e-4": ("mpnet-to-small.yaml", [
        "stages.0.learning_rate=1e-4", "data.train=[stsb-train-sentences, snli-sentences]"]),
    "small: in-batch KL": ("mpnet-to-small.yaml", ["stages.0.losses=[{type: kl, temperature: 0.05}]"]),
    # the teacher cut in half (larger recipe's alternative), one change
    "6layer: SNLI sentences only": ("mpnet-6layer.yaml", ["data.train=snli-sentences"]),
}


def run_one(label: str, recipe_file: str, overrides: list[str], runs_dir: Path) -> dict:
    from edgedistill.assets import resolve
    from edgedistill.contract import content_key
    from edgedistill.recipe import load_recipe
    from edgedistill.records import read_record
    from edgedistill.runner import Runner

    recipe = load_recipe(ROOT / "recipes" / recipe_file, overrides)
    # A distill stage already finished by `edgedistill run` of the same recipe and settings is reused as is.
    probe = Runner(recipe, ROOT / "runs")
    finished = probe.stage_dir(0, "distill", content_key(recipe.stages[0].model_dump(), probe.root_key()))
    recipe = recipe.model_copy(update={"stages": recipe.stages[:1], "name": f"bench-{recipe.name}"})
    t0 = time.perf_counter()
    runner = Runner(recipe, runs_dir)
    if (finished / "metrics.json").is_file():
        runner.teacher_path = resolve(recipe.teacher)
        record = read_record(finished)
        record.reused = True
    else:
        record = runner.run()[0]
    wall = time.perf_counter() - t0
    teacher, _ = runner.teacher_evaluation()
    ev, m = record.evaluation, record.metrics
    history = [h for h in m.get("history", []) if h.get("sts_dev") is not None]
    return {
        "variant": label,
        "params_m": ev.get("params", 0) / 1e6,
        "sts_spearman": ev.get("sts_spearman"),
        "sts_retention_pct": 100 * ev["sts_spearman"] / teacher["sts_spearman"],
        "retrieval_ndcg10": ev.get("retrieval_ndcg10"),
        "retrieval_retention_pct": 100 * ev["retrieval_ndcg10"] / teacher["retrieval_ndcg10"],
        "retrieval_ndcg10_cross": ev.get("retrieval_ndcg10_cross"),
        "teacher_cosine": ev.get("teacher_cosine_mean"),
        "sts_before_training": m.get("before_training", {}).get("sts_spearman"),
        "sts_dev_start": history[0]["sts_dev"] if history else None,
        "sts_dev_end": history[-1]["sts_dev"] if history else None,
        "kept_step": m.get("best_step"),
        "train_steps": m.get("train_steps"),
        "label_s": m.get("label_s"),
        "train_s": m.get("train_s"),
        "distill_stage_s": record.timings.get("stage_s"),
        "reused": record.reused,
        "wall_s": wall,
        "teacher_sts": teacher["sts_spearman"],
        "teacher_retrieval": teacher["retrieval_ndcg10"],
    }


def to_markdown(rows: list[dict]) -> str:
    t = rows[0]
    lines = [
        f"Teacher all-mpnet-base-v2: STS-b test {t['teacher_sts']:.2f}, retrieval nDCG@10 {t['teacher_retrieval']:.2f}.",
        "",
        "| variant | params M | STS-b | STS retention % | nDCG@10 | nDCG retention % | nDCG@10 vs teacher index "
        "| cosine to teacher | STS before training | STS-b dev: first -> last step (kept step) | label s | train s "
        "| distill stage s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    f = lambda v, d=2: "–" if v is None else f"{v:.{d}f}"  # noqa: E731

    def dev(r: dict) -> str:
        if r.get("sts_dev_start") is None:
            return "–"
        return (f"{r['sts_dev_start']:.2f} -> {r['sts_dev_end']:.2f} "
                f"(step {r['kept_step']} of {r['train_steps']})")
    for r in rows:
        lines.append(
            f"| {r['variant']} | {f(r['params_m'], 1)} | {f(r['sts_spearman'])} | {f(r['sts_retention_pct'], 1)} "
            f"| {f(r['retrieval_ndcg10'])} | {f(r['retrieval_retention_pct'], 1)} | {f(r['retrieval_ndcg10_cross'])} "
            f"| {f(r['teacher_cosine'], 4)} | {f(r['sts_before_training'])} | {dev(r)} | {f(r['label_s'], 0)} "
            f"| {f(r['train_s'], 0)} | {f(r['distill_stage_s'], 0)}{' (reused)' if r['reused'] else ''} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ablation", action="store_true", help="also run variants of the default recipe")
    parser.add_argument("--only", nargs="*", help="run only these variant names")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "benchmarks" / "runs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("edgedistill").setLevel(logging.INFO)
    variants = dict(RECIPES, **(ABLATIONS if args.ablation else {}))
    if args.only:
        variants = {k: v for k, v in variants.items() if k in args.only}
    results_file = RESULTS / "distill.json"
    previous = {r["variant"]: r for r in json.loads(results_file.read_text())} if results_file.is_file() else {}
    for label, (recipe, overrides) in variants.items():
        previous[label] = run_one(label, recipe, overrides, args.runs_dir)
        RESULTS.mkdir(parents=True, exist_ok=True)
        results_file.write_text(json.dumps(list(previous.values()), indent=2) + "\n")
    order = list(RECIPES) + list(ABLATIONS)
    rows = sorted(previous.values(), key=lambda r: order.index(r["variant"]) if r["variant"] in order else 99)
    md = "# Distillation benchmark\n\nCommand: `.venv/bin/python benchmarks/distill.py --ablation`\n\n" + \
        to_markdown(rows)
    (RESULTS / "distill.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
