"""Export: the torch student to one ONNX graph (token ids -> logits, or probabilities), gated against PyTorch."""

from __future__ import annotations

from typing import Any

from edgedistill.contract import StageContext, StageResult


def run(cfg: Any, ctx: StageContext) -> StageResult:
    from edgedistill.tasks.seqcls.export import export_bundle
    from edgedistill.tasks.seqcls.models import load_classifier

    model = load_classifier(ctx.input.path, device="cpu", field=f"stages.{ctx.index} (export) input")
    check = ctx.evaluator.data.inputs
    metrics = export_bundle(model, ctx.artifact_dir, check, task="classifier", activation="softmax",
                            probabilities=cfg.probabilities, opset=cfg.opset, exporter=cfg.exporter,
                            max_abs_diff=cfg.max_abs_diff, check_count=cfg.check_examples)
    return StageResult(metrics=metrics)
