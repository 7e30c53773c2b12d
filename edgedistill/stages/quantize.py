"""Quantize: onnxruntime dynamic INT8, kept only if it stays within the recipe's quality budget."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from edgedistill.errors import GateError
from edgedistill.evaluate import PRIMARY_METRIC, relative_drop
from edgedistill.recipe import QuantizeStage
from edgedistill.runner import StageContext, StageResult, artifact_size_mb, write_json_atomic
from edgedistill.stages.export import update_manifest_hashes

log = logging.getLogger(__name__)


def ffn_down_projections(model_path: Path) -> list[str]:
    """MatMul nodes whose weight maps the wide feed-forward layer back down (shape [4h, h]).

    These are the most sensitive to INT8 in BERT-like encoders (their inputs have large outliers).
    """
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    names = []
    for node in model.graph.node:
        if node.op_type != "MatMul":
            continue
        shape = next((shapes[i] for i in node.input if i in shapes), None)
        if shape and len(shape) == 2 and shape[0] == 4 * shape[1]:
            names.append(node.name)
    return names


def quantize_dynamic_int8(source: Path, target: Path, cfg: QuantizeStage, exclude: list[str]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source), str(target), op_types_to_quantize=cfg.op_types, per_channel=cfg.per_channel,
        reduce_range=cfg.reduce_range, weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
    )


def run(cfg: QuantizeStage, ctx: StageContext) -> StageResult:
    from edgedistill.runtime import OnnxEncoder

    source = ctx.input.path
    reference = ctx.input_evaluation.get(PRIMARY_METRIC)
    candidates = [("all " + "/".join(cfg.op_types), list(cfg.exclude_nodes))]
    sensitive = ffn_down_projections(source / "model.onnx")
    if sensitive:
        candidates.append((f"fp32 FFN down-projections ({len(sensitive)})", sorted(set(cfg.exclude_nodes + sensitive))))

    trials, chosen = [], None
    for i, (label, exclude) in enumerate(candidates):
        trial_dir = ctx.work_dir / f"trial-{i}"
        trial_dir.mkdir()
        for f in source.iterdir():
            if f.is_file() and f.name != "model.onnx":
                shutil.copy2(f, trial_dir / f.name)
        t0 = time.perf_counter()
        quantize_dynamic_int8(source / "model.onnx", trial_dir / "model.onnx", cfg, exclude)
        quality = ctx.evaluator.quality(OnnxEncoder(trial_dir))
        drop = relative_drop(reference, quality[PRIMARY_METRIC]) if reference and quality else 0.0
        trial = {"trial": i, "setting": label, "excluded_nodes": len(exclude), **quality, "relative_drop": drop,
                 "size_mb": artifact_size_mb(trial_dir), "seconds": round(time.perf_counter() - t0, 1)}
        trials.append(trial)
        log.info("quantize trial %d (%s): %s=%.3f, drop %.2f%% (budget %.2f%%)", i, label, PRIMARY_METRIC,
                 quality.get(PRIMARY_METRIC, float("nan")), 100 * drop, 100 * cfg.max_drop)
        if drop <= cfg.max_drop:
            chosen = i
            break
    passed = chosen is not None
    if not passed:
        chosen = min(range(len(trials)), key=lambda i: trials[i]["relative_drop"])
        message = (f"quantize: no setting stayed within max_drop {100 * cfg.max_drop:.2f}% of the fp32 "
                   f"{PRIMARY_METRIC} ({reference:.3f}); best was trial {chosen} with a drop of "
                   f"{100 * trials[chosen]['relative_drop']:.2f}%. Raise max_drop, exclude more nodes, or set "
                   "on_fail: warn to keep the best anyway.")
        if cfg.on_fail == "error":
            write_json_atomic(ctx.work_dir / "trials.json", trials)
            raise GateError(message)
        log.warning(message)
    (ctx.work_dir / f"trial-{chosen}").rename(ctx.artifact_dir)
    for i in range(len(trials)):
        shutil.rmtree(ctx.work_dir / f"trial-{i}", ignore_errors=True)

    bundle = ctx.artifact_dir
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["quantization"] = {
        "method": cfg.method, "op_types": cfg.op_types, "per_channel": cfg.per_channel,
        "reduce_range": cfg.reduce_range, "weight_type": "int8", "excluded_nodes": candidates[chosen][1],
    }
    write_json_atomic(bundle / "quantization_config.json", manifest["quantization"])
    update_manifest_hashes(bundle, manifest)
    return StageResult(metrics={"trials": trials, "chosen_trial": chosen, "within_budget": passed})


def report_section(metrics: dict) -> str:
    """The quantization trials as a Markdown table."""
    lines = ["| trial | setting | fp32 nodes | STS-b | drop % | size MB | chosen |", "|---|---|---|---|---|---|---|"]
    for t in metrics.get("trials", []):
        chosen = "yes" if t["trial"] == metrics.get("chosen_trial") else ""
        lines.append(f"| {t['trial']} | {t['setting']} | {t['excluded_nodes']} | {t.get('sts_spearman', float('nan')):.2f} "
                     f"| {100 * t['relative_drop']:.2f} | {t['size_mb']:.1f} | {chosen} |")
    return "\n".join(lines)
