"""Export a cross-encoder: (query, passage) token ids -> one relevance logit per pair, gated against PyTorch.

The graph, its check and the manifest are the shared sequence-classification ones (``seqcls.export``); the
reranker adds its task name, the activation that turns a logit into a score (recorded, not in the graph: the
ranking is the logits') and the config.json other clients read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from edgedistill.contract import StageContext, StageResult
from edgedistill.stages.configs import Strict


class RerankerExport(Strict):
    """Export the cross-encoder to one ONNX graph and check it numerically against PyTorch."""

    type: Literal["export"]
    opset: int = Field(default=18, ge=14, le=21)
    exporter: Literal["dynamo", "torchscript"] = "dynamo"
    max_abs_diff: float = Field(default=1e-4, gt=0, description="Gate: largest allowed |onnx - torch| logit.")
    check_pairs: int = Field(default=64, gt=0, description="Held-out (query, candidate) pairs the graph is checked "
                             "on (plus truncated long ones), at batch sizes 1, 7 and 32.")


def run(cfg: RerankerExport, ctx: StageContext) -> StageResult:
    from edgedistill.tasks.seqcls.export import export_bundle
    from edgedistill.tasks.seqcls.models import load_classifier, read_sidecar

    clf = load_classifier(ctx.input.path, num_labels=1, field="export input")
    activation = read_sidecar(Path(ctx.input.path)).get("activation", "sigmoid")
    data = ctx.evaluator.data
    candidates = ctx.evaluator.reference.candidates
    check = [(q, data.corpus[d]) for q, row in zip(data.queries, candidates, strict=False) for d in row[:2]]
    bundle = ctx.artifact_dir
    metrics = export_bundle(clf, bundle, check[: cfg.check_pairs], task="reranker", activation=activation,
                            opset=cfg.opset, exporter=cfg.exporter, max_abs_diff=cfg.max_abs_diff,
                            extra={"score": "relevance of the passage to the query (higher: more relevant)"})
    clf.model.config.to_json_file(str(bundle / "config.json"))  # for other clients (transformers.js, ...)
    from edgedistill.manifest import read_manifest, write_manifest

    write_manifest(bundle, read_manifest(bundle))  # config.json's sha256 too
    v = metrics["validation"]
    metrics["report_markdown"] = (
        f"Opset {metrics['opset']} ({cfg.exporter}), inputs {', '.join(metrics['inputs'])} ((query, passage) pairs) "
        f"-> one {metrics['output'][:-1]} per pair; activation {activation} (recorded in the manifest). Checked "
        f"against PyTorch on {v['check_inputs']} held-out pairs (a truncated long one included) at batch sizes "
        f"{v['batch_sizes']}: max abs diff {v['max_abs_diff']:.2e} (gate {cfg.max_abs_diff:g}).")
    return StageResult(metrics={**metrics, "activation": activation})
