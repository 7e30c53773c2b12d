"""Classifier distillation: the INT8 student against its teacher, and an ablation of the distillation losses.

    .venv/bin/python benchmarks/classifier.py                    # both parts
    .venv/bin/python benchmarks/classifier.py --skip-ablation

Part 1 (goals): runs (or reuses) the benchmark recipe (default spam-classifier), then on its held-out test split
measures, side by side in one process: the fine-tuned teacher (PyTorch fp32) and the final INT8 student bundle
(onnxruntime): accuracy, macro-F1, argmax agreement, KL to the teacher, ECE, batch-1 latency (text in, logits
out, tokenisation included; the two interleaved input by input at the same thread count) and size.
Goals: accuracy retention >= 98%, agreement >= 95%, latency ratio >= 10x, INT8 model <= 25 MB.

Part 2 (ablation, default on the spam-classifier recipe; --ablation-recipe snli-classifier for the other): the same student, the same labelled examples and
the same fine-tuned teacher (its finetune stage is copied from that recipe's run, so it is reused), trained with
1. ce: hard labels only (no teacher), 2. kl+ce (alpha 0.5, T 4 -> 2), 3. kl+ce + TinyBERT losses (hidden states
of every student layer against uniformly mapped teacher layers through a learned projection, attention maps,
embedding layer), 4. kl+ce + teacher soft labels on unlabelled in-domain inputs (the recipe's count). Every
variant keeps its best checkpoint by dev accuracy (the no-teacher baseline has no teacher to agree with). Each
student is scored (PyTorch fp32) on the test split.

Writes benchmarks/results/classifier.md and classifier.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.contract import artifact_size_mb

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
log = logging.getLogger("benchmarks.classifier")

GOALS = {"accuracy_retention_pct": 98.0, "agreement_pct": 95.0, "latency_ratio": 10.0, "size_mb": 25.0}
QUALITY = ("accuracy", "macro_f1", "agreement", "kl_to_teacher", "ece")


def run_recipe(name: str, runs: Path, overrides: list[str] = ()) -> list:
    from edgedistill.pipeline import run_recipe as run
    from edgedistill.recipe import load_recipe

    return run(load_recipe(name, overrides), runs)


def interleaved_batch1(predictors: dict[str, Any], inputs: list, warmup: int = 5) -> dict[str, dict[str, float]]:
    """Batch-1 latency of several predictors, input by input in turn (alternating order), so machine drift hits
    all alike."""
    names = list(predictors)
    for name in names:
        for x in inputs[:warmup]:
            predictors[name].logits([x], batch_size=1)
    times: dict[str, list[float]] = {n: [] for n in names}
    for i, x in enumerate(inputs):
        for name in names if i % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            predictors[name].logits([x], batch_size=1)
            times[name].append(time.perf_counter() - t0)
    return {n: {"latency_ms_p50": 1000 * float(np.median(t)), "latency_ms_p90": 1000 * float(np.percentile(t, 90))}
            for n, t in times.items()}


def goals_part(recipe: str, runs: Path, threads: int) -> dict[str, Any]:
    import torch

    from edgedistill.recipe import load_recipe
    from edgedistill.tasks.classifier import TASK
    from edgedistill.tasks.classifier.evaluate import Evaluator, scores
    from edgedistill.tasks.classifier.runtime import Classifier
    from edgedistill.tasks.seqcls.models import load_classifier
    from edgedistill.tasks.seqcls.teacher_cache import compute_logits

    t0 = time.perf_counter()
    records = run_recipe(recipe, runs)
    run_s = time.perf_counter() - t0
    config = load_recipe(recipe)
    teacher_dir = records[0].artifact.path
    finetune = records[0]
    bundle = runs / config.name / "bundle"
    data = TASK.eval_set(config.evaluation)
    teacher = load_classifier(teacher_dir)
    reference = {"logits": compute_logits(teacher, data.inputs, 32, "teacher on the test split"),
                 "labels": np.array(teacher.labels)}
    evaluator = Evaluator(data, reference)
    student = Classifier(bundle, threads=threads)
    teacher_quality = scores(reference["logits"], evaluator.gold, len(evaluator.label_names), reference["logits"],
                             data.ece_bins)
    quality = {"teacher": teacher_quality, "int8_student": evaluator.quality(student)}
    torch.set_num_threads(threads)  # timing: both models at the same thread count
    latency = interleaved_batch1({"teacher": teacher, "int8_student": student}, data.latency_inputs)
    size = {"teacher": artifact_size_mb(teacher_dir), "int8_student": round((bundle / student.model_path.relative_to(
        bundle)).stat().st_size / 1e6, 3)}
    ratio = latency["teacher"]["latency_ms_p50"] / latency["int8_student"]["latency_ms_p50"]
    measured = {"accuracy_retention_pct": 100 * quality["int8_student"]["accuracy"] / quality["teacher"]["accuracy"],
                "agreement_pct": quality["int8_student"]["agreement"], "latency_ratio": ratio,
                "size_mb": size["int8_student"]}
    met = {k: (v <= GOALS[k] if k == "size_mb" else v >= GOALS[k]) for k, v in measured.items()}
    return {"recipe": config.name, "run_s": round(run_s, 1), "threads": threads, "test_examples": len(data.inputs),
            "latency_examples": len(data.latency_inputs), "quality": quality, "latency": latency, "size_mb": size,
            "measured": measured, "goals": GOALS, "met": met, "teacher_finetune_s": finetune.metrics.get("train_s"),
            "teacher_finetune_stage_s": finetune.timings.get("stage_s"),
            "stage_times_s": {r.type: r.timings.get("stage_s") for r in records},
            "student_params": records[1].metrics.get("params"), "teacher_params": finetune.metrics.get("params")}


KL_CE = [{"type": "kl", "temperature": 4, "temperature_end": 2}, {"type": "ce"}]


def uniform_layer_map(student_layers: int, teacher_layers: int = 12) -> dict[int, int]:
    """TinyBERT's uniform mapping: student layer i -> teacher layer (i + 1) * T / S - 1."""
    return {i: (i + 1) * teacher_layers // student_layers - 1 for i in range(student_layers)}


def variants(student_layers: int, teacher_layers: int, unlabelled: int) -> dict[str, dict[str, Any]]:
    layer_map = uniform_layer_map(student_layers, teacher_layers)
    return {
        "ce only (no teacher)": {"losses": [{"type": "ce"}], "alpha": None, "unlabelled_examples": 0},
        "kl + ce": {"losses": KL_CE, "alpha": 0.5, "unlabelled_examples": 0},
        "kl + ce + TinyBERT layers": {"losses": [*KL_CE, {"type": "hidden", "layer_map": layer_map},
                                                 {"type": "attention", "layer_map": layer_map},
                                                 {"type": "embedding"}], "alpha": 0.5, "unlabelled_examples": 0},
        "kl + ce + unlabelled soft labels": {"losses": KL_CE, "alpha": 0.5, "unlabelled_examples": unlabelled},
    }


def ablation_part(recipe: str, runs: Path, source_runs: Path) -> dict[str, Any]:
    """The students of the ablation: the recipe's finetune and distill stages, the distill losses varied; the
    fine-tuned teacher is copied from the recipe's own run (so it is reused, not trained again)."""
    import yaml

    from edgedistill.pipeline import run_recipe as run
    from edgedistill.recipe import find_recipe, load_recipe

    base = yaml.safe_load(find_recipe(recipe).read_text())
    run_dir = runs / base["name"]
    run_dir.mkdir(parents=True, exist_ok=True)
    for folder in (source_runs / base["name"]).glob("00-finetune-*"):
        if (folder / "metrics.json").is_file() and not (run_dir / folder.name).exists():
            shutil.copytree(folder, run_dir / folder.name)  # copy2 keeps mtimes: the runner reuses it
    from edgedistill.assets import resolve
    from edgedistill.tasks.seqcls.models import transformer_dir

    def layers(spec: str) -> int:
        return int(json.loads((transformer_dir(resolve(spec)) / "config.json").read_text())["num_hidden_layers"])

    distill = base["stages"][1]
    unlabelled = int(distill.get("unlabelled_examples") or 0) or 2 * int(base["data"].get("examples", 1000))
    rows: dict[str, dict[str, Any]] = {}
    for label, change in variants(layers(distill["student"]["init"]), layers(base["teacher"]), unlabelled).items():
        log.info("ablation: %s", label)
        # every variant keeps its best checkpoint by dev accuracy, the only rule the no-teacher baseline can use
        variant = {**base, "stages": [base["stages"][0], {**base["stages"][1], **change, "select_on": "accuracy"}]}
        path = runs / f"{base['name']}-ablation.yaml"
        path.write_text(yaml.safe_dump(variant, sort_keys=False))
        t0 = time.perf_counter()
        records = run(load_recipe(path), runs)
        distill = records[1]
        rows.setdefault("teacher", {k: records[0].evaluation.get(k) for k in QUALITY})
        rows[label] = {**{k: distill.evaluation.get(k) for k in QUALITY}, "train_s": distill.metrics.get("train_s"),
                       "examples": distill.metrics.get("train_examples"),
                       "unlabelled": distill.metrics.get("unlabelled_examples"),
                       "wall_s": round(time.perf_counter() - t0, 1)}
    return {"recipe": base["name"], "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    lines = ["# Classifier distillation benchmark", "",
             f"Host: {result['host']}. Command: `{result['command']}`.", ""]
    g = result.get("goals")
    if g:
        q, lat, size = g["quality"], g["latency"], g["size_mb"]
        lines += [f"## INT8 student vs teacher ({g['recipe']}, {g['test_examples']} held-out test inputs)", "",
                  "| model | accuracy | macro-F1 | agreement | KL to teacher | ECE | batch-1 p50 ms | p90 ms | size MB |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, label in (("teacher", "teacher (PyTorch fp32)"), ("int8_student", "student (ONNX INT8)")):
            lines.append(f"| {label} | " + " | ".join(f"{q[name][k]:.2f}" if k != "kl_to_teacher"
                                                     else f"{q[name][k]:.4f}" for k in QUALITY)
                         + f" | {lat[name]['latency_ms_p50']:.2f} | {lat[name]['latency_ms_p90']:.2f} "
                           f"| {size[name]:.1f} |")
        m, met = g["measured"], g["met"]
        lines += ["", "| goal | target | measured | met |", "|---|---|---|---|",
                  f"| accuracy retention | >= {GOALS['accuracy_retention_pct']:g}% | "
                  f"{m['accuracy_retention_pct']:.1f}% | {'yes' if met['accuracy_retention_pct'] else 'no'} |",
                  f"| argmax agreement | >= {GOALS['agreement_pct']:g}% | {m['agreement_pct']:.1f}% | "
                  f"{'yes' if met['agreement_pct'] else 'no'} |",
                  f"| batch-1 latency ratio (teacher PyTorch fp32 / INT8) | >= {GOALS['latency_ratio']:g}x | "
                  f"{m['latency_ratio']:.1f}x | {'yes' if met['latency_ratio'] else 'no'} |",
                  f"| INT8 model size | <= {GOALS['size_mb']:g} MB | {m['size_mb']:.1f} MB | "
                  f"{'yes' if met['size_mb'] else 'no'} |", "",
                  f"Latency: {g['latency_examples']} test inputs one at a time, the two models interleaved input by "
                  f"input, {g['threads']} thread(s) each. Recipe run (cold or reused stages): {g['run_s']:.0f} s; "
                  f"teacher fine-tuning {g['teacher_finetune_s']} s of training "
                  f"({g['teacher_finetune_stage_s']} s for the stage); stage times {g['stage_times_s']}.", ""]
    for a in result.get("ablations", {}).values():
        lines += [f"## Ablation ({a['recipe']}: same student init, labelled examples and teacher)", "",
                  "| student trained with | accuracy | macro-F1 | agreement | KL to teacher | ECE | train s |",
                  "|---|---|---|---|---|---|---|"]
        for label, row in a["rows"].items():
            if label == "teacher":
                label = "(the teacher itself)"
            cells = [f"{row[k]:.4f}" if k == "kl_to_teacher" else f"{row[k]:.2f}" for k in QUALITY]
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {row.get('train_s', '–')} |")
        unlabelled = max((row.get("unlabelled") or 0) for row in a["rows"].values())
        lines += ["", a.get("verdict", ""), "",
                  f"Every variant: the recipe's distill stage with only the losses changed (kl + ce: alpha 0.5, T 4 -> 2; "
                  f"the last row adds {unlabelled} unlabelled inputs scored by the teacher), each keeping its best "
                  "checkpoint by dev accuracy.", ""]
    return "\n".join(lines)


def verdict(rows: dict[str, dict[str, Any]]) -> str:
    ce = rows["ce only (no teacher)"]["accuracy"]
    best_label, best = max(((k, v["accuracy"]) for k, v in rows.items() if k not in ("teacher", "ce only (no teacher)")),
                           key=lambda kv: kv[1])
    if best > ce:
        return (f"Distillation beat CE-only fine-tuning of the same student: {best_label} {best:.2f} vs {ce:.2f} "
                f"accuracy (+{best - ce:.2f} points).")
    return (f"Distillation did NOT beat CE-only fine-tuning here: the best distilled student ({best_label}) reached "
            f"{best:.2f} vs {ce:.2f} accuracy with CE only.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="spam-classifier", help="recipe of part 1 (goals)")
    parser.add_argument("--ablation-recipe", default="spam-classifier")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs")
    parser.add_argument("--threads", type=int, default=1, help="threads for both models when timing")
    parser.add_argument("--skip-goals", action="store_true")
    parser.add_argument("--skip-ablation", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    from edgedistill.progress import configure_logging

    configure_logging()
    out = RESULTS / "classifier.json"
    result: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {}
    result.update(host=f"{platform.processor() or platform.machine()}, {platform.node()}",
                  command=".venv/bin/python benchmarks/classifier.py")
    if not args.skip_goals:
        result["goals"] = goals_part(args.recipe, args.runs, args.threads)
    if not args.skip_ablation:
        ablation = ablation_part(args.ablation_recipe, args.runs / "ablation", args.runs)
        ablation["verdict"] = verdict(ablation["rows"])
        result.setdefault("ablations", {})[ablation["recipe"]] = ablation
    RESULTS.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    (RESULTS / "classifier.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
