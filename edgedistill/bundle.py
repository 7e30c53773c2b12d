"""What ships: the deploy bundle of a run (runs/<name>/bundle/) and the distilled student's model card."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgedistill.tasks import get_task

if TYPE_CHECKING:
    from edgedistill.contract import StageRecord

log = logging.getLogger(__name__)

BUNDLE_DIR = "bundle"


# -- deploy bundle -----------------------------------------------------------------------------------
def figures(records: list[StageRecord], teacher: dict[str, Any], task: str = "embedding") -> dict[str, Any]:
    """The final model's quality and latency, as in the report (the profile row when there is one)."""
    from edgedistill.report import build_rows

    primary = get_task(task).primary_metric
    rows = build_rows(teacher, records, task)
    final = rows[-1]
    evaluation = next((r.evaluation for r in reversed(records) if not r.metrics.get("passthrough")), {})
    profile = next((r.metrics for r in reversed(records) if r.type == "profile"), None)
    quality = {k: v for k, v in evaluation.items()
               if not k.startswith("latency") and k not in ("size_mb", "params", "dimension")}
    quality.update(retention_pct=final["retention_pct"], **{f"teacher_{primary}": teacher.get(primary)})
    if profile:
        latency = {k: profile.get(k) for k in ("latency_ms_p50", "latency_ms_p90", "latency_ms_p99",
                                               "throughput_per_s", "throughput_batch_size", "cold_start_ms",
                                               "threads", "host")}
        latency["measured_by"] = profile.get("measured_by") or "profile stage (batch 1, text in, embedding out)"
    else:
        latency = {k: evaluation.get(k) for k in ("latency_ms_p50", "latency_ms_p90")}
        latency["measured_by"] = "evaluation (batch 1, text in, embedding out)"
    teacher_p50 = teacher.get("latency_ms_p50")
    if teacher_p50 and latency.get("latency_ms_p50"):
        latency["speedup_vs_teacher"] = teacher_p50 / latency["latency_ms_p50"]
    return {"quality": quality, "latency": latency, "size_mb": final["size_mb"], "params_m": final["params_m"],
            "teacher": {k: teacher.get(k) for k in (primary, "latency_ms_p50", "size_mb", "params")}}


def write_bundle(run_dir: Path, records: list[StageRecord], teacher: dict[str, Any],
                 sentences: list[str], task: str = "embedding") -> Path | None:
    """Copy the run's final ONNX model into ``run_dir/bundle`` with a complete manifest and a README.

    Written to a temporary folder and swapped in, so the bundle folder is never half-written.
    Returns None when the final artifact is not an ONNX bundle (e.g. a distill-only recipe).
    """
    from edgedistill.client_layout import write_layout
    from edgedistill.manifest import read_manifest, write_manifest

    source = records[-1].artifact.path
    if not (source / "manifest.json").is_file():
        log.info("bundle: the final artifact (%s) is not an ONNX bundle; nothing to ship", source)
        return None
    manifest = read_manifest(source)
    for leftover in run_dir.glob(f".{BUNDLE_DIR}.*"):  # from a run killed while writing its bundle
        shutil.rmtree(leftover, ignore_errors=True)
    tmp = run_dir / f".{BUNDLE_DIR}.{os.getpid()}.tmp"
    tmp.mkdir()
    shutil.copy2(source / manifest["tokenizer"], tmp / manifest["tokenizer"])
    sources = [r.artifact.path for r in records if (r.artifact.path / "manifest.json").is_file()]
    manifest.update(write_layout(tmp, manifest, sources))
    manifest.pop("sha256", None)
    manifest["source"] = {"recipe": run_dir.name, "artifact": str(source.relative_to(run_dir))
                          if source.is_relative_to(run_dir) else str(source),
                          "chain": [f"{r.index:02d}-{r.type}" for r in records]}
    manifest["task"] = task
    manifest.update(figures(records, teacher, task))
    model_task = get_task(task)
    write_manifest(tmp, manifest)  # the task's predictors read manifest.json
    variants = model_task.bundle_variants(tmp, manifest, sentences)
    if variants:
        manifest["variants"] = variants
    (tmp / "README.md").write_text(model_task.bundle_card(manifest))
    write_manifest(tmp, manifest)
    final = run_dir / BUNDLE_DIR
    old = run_dir / f".{BUNDLE_DIR}.{os.getpid()}.old"
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    log.info("bundle: %s (%s)", final, ", ".join(sorted(manifest["sha256"]) + ["manifest.json"]))
    return final
