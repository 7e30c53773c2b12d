"""Turn stage records into report.md and report.json: quality, retention vs the teacher, latency, size."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgedistill.errors import EdgedistillError
from edgedistill.evaluate import PRIMARY_METRIC

if TYPE_CHECKING:
    from edgedistill.runner import StageRecord

log = logging.getLogger(__name__)


def _row(name: str, evaluation: dict[str, Any], teacher: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    sts, teacher_sts = evaluation.get(PRIMARY_METRIC), teacher.get(PRIMARY_METRIC)
    return {
        "stage": name,
        "sts_spearman": sts,
        "retention_pct": 100 * sts / teacher_sts if sts is not None and teacher_sts else None,
        "teacher_cosine": evaluation.get("teacher_cosine_mean"),
        "latency_ms_p50": evaluation.get("latency_ms_p50"),
        "size_mb": evaluation.get("size_mb"),
        "params_m": evaluation["params"] / 1e6 if evaluation.get("params") else None,
        **extra,
    }


def build_rows(teacher: dict[str, Any], records: list[StageRecord]) -> list[dict[str, Any]]:
    rows = [_row("teacher", teacher, teacher, {"stage_s": None, "dir": None})]
    for r in records:
        extra = {"stage_s": r.timings.get("stage_s"), "dir": r.dir.name}
        if r.type == "profile":
            m = r.metrics
            evaluation = {**r.evaluation, "latency_ms_p50": m.get("latency_ms_p50"), "size_mb": m.get("size_mb")}
            extra.update(latency_ms_p90=m.get("latency_ms_p90"), throughput_per_s=m.get("throughput_per_s"))
        else:
            evaluation = r.evaluation
        rows.append(_row(r.type, evaluation, teacher, extra))
    return rows


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def to_markdown(name: str, rows: list[dict[str, Any]], teacher_latency: float | None) -> str:
    header = ("| stage | STS-b Spearman | retention % | cosine to teacher | batch-1 p50 ms | speed-up | size MB "
              "| params M | stage time s |")
    lines = [f"# edgedistill report: {name}", "", header, "|" + "---|" * 9]
    for r in rows:
        speedup = teacher_latency / r["latency_ms_p50"] if teacher_latency and r["latency_ms_p50"] else None
        lines.append(
            f"| {r['stage']} | {_fmt(r['sts_spearman'])} | {_fmt(r['retention_pct'], 1)} "
            f"| {_fmt(r['teacher_cosine'], 4)} | {_fmt(r['latency_ms_p50'])} | "
            f"{_fmt(speedup, 1) + 'x' if speedup else '–'} | {_fmt(r['size_mb'], 1)} | {_fmt(r['params_m'], 1)} "
            f"| {_fmt(r['stage_s'], 0)} |"
        )
    lines += ["", "STS-b: Spearman x100 of cosine similarity on the STS-benchmark split named in the recipe. "
              "Retention: % of the teacher's score. Latency: text in, embedding out, one sentence at a time "
              "(tokenisation included), on this machine; the profile row uses the profile stage's measurement.", ""]
    return "\n".join(lines)


def write_report(run_dir: Path, name: str, teacher: dict[str, Any], records: list[StageRecord]) -> Path:
    """Write report.md and report.json into the run folder; returns the Markdown path."""
    rows = build_rows(teacher, records)
    from edgedistill import stages as stage_registry

    md = to_markdown(name, rows, teacher.get("latency_ms_p50"))
    for r in records:
        section = stage_registry.report_section(r.type, r.metrics)
        if section:
            md += f"\n## {r.index:02d} {r.type}\n\n{section.strip()}\n"
    (run_dir / "report.md").write_text(md)
    stages = [{"index": r.index, "type": r.type, "key": r.key, "dir": r.dir.name, "config": r.config,
               "metrics": r.metrics, "timings": r.timings} for r in records]
    (run_dir / "report.json").write_text(json.dumps(
        {"recipe": name, "teacher": teacher, "rows": rows, "stages": stages}, indent=2, default=str) + "\n")
    log.info("report: %s", run_dir / "report.md")
    return run_dir / "report.md"


def regenerate(run_dir: Path) -> Path:
    """Rebuild the report from the finished stage folders of a run (the chain named in report.json)."""
    from edgedistill.runner import TEACHER_RECORD, read_record

    run_dir = Path(run_dir)
    teacher_file = run_dir / TEACHER_RECORD
    if not teacher_file.is_file():
        raise EdgedistillError(f"{run_dir}: not a run folder (no {TEACHER_RECORD}); pass runs/<recipe-name>")
    teacher = json.loads(teacher_file.read_text())["evaluation"]
    chain = json.loads((run_dir / "report.json").read_text())["stages"] if (run_dir / "report.json").is_file() else None
    folders = [run_dir / s["dir"] for s in chain] if chain else sorted(
        p for p in run_dir.iterdir() if p.is_dir() and p.name[:2].isdigit() and (p / "metrics.json").is_file())
    records, previous = [], None
    for folder in folders:
        record = read_record(folder, previous)
        records.append(record)
        previous = record.artifact
    return write_report(run_dir, run_dir.name, teacher, records)
