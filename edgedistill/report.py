"""Turn a run into report.md, report.json and report.html: quality and retention of every metric at every
stage, side-by-side latency, targets; compare two runs; merge a device's hand-run bench result."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgedistill.errors import EdgedistillError
from edgedistill.html_report import rss_cell
from edgedistill.profiling.bench import BUSY_CORES
from edgedistill.tasks import get_task

if TYPE_CHECKING:
    from edgedistill.contract import StageRecord

log = logging.getLogger(__name__)

DEVICES_DIR = "devices"
NOISY_SPREAD_PCT = 10  # range of per-process round medians above which the report flags a latency
SPEED_KEYS = ("latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "spread_pct", "throughput_per_s",
              "throughput_batch_size", "cold_start_ms", "peak_rss_mb", "model_rss_mb",
              "model_rss_batch1_mb", "other_cores", "rounds", "rounds_used", "threads")


# -- building blocks ----------------------------------------------------------------------------------------
def quality_columns(task: str = "embedding") -> list[dict[str, Any]]:
    """The task's quality metrics as report columns: key, header, digits, reference, description."""
    return [{"key": m.key, "label": m.label, "digits": m.digits, "reference": m.reference,
             "description": m.description} for m in get_task(task).metrics]


def _columns(report: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(key, header, digits) of a report's quality columns (reports from before tasks: the embedding ones)."""
    return [(c["key"], c["label"], c["digits"]) for c in report.get("columns") or quality_columns()]


def retention(evaluation: dict[str, Any], teacher: dict[str, Any], task: str = "embedding") -> dict[str, float]:
    """% of the teacher's score for every quality metric both have (a metric without a teacher value of its own,
    such as cross-space nDCG, against its reference metric)."""
    out = {}
    for column in quality_columns(task):
        key = column["key"]
        value = evaluation.get(key)
        reference = teacher.get(key)
        if reference is None and column["reference"]:
            reference = teacher.get(column["reference"])
        if value is not None and reference:
            out[key] = 100 * value / reference
    return out


def _artifact_id(record: StageRecord) -> str:
    """The folder name of the artifact a record evaluates (its own, or its input's for pass-through stages)."""
    path = Path(record.artifact.path)
    return path.parent.name if path.name == "artifact" else record.dir.name


def _model_kind(kind: str, path: Path | None) -> str:
    if kind in ("teacher", "sentence-transformer"):
        return "PyTorch fp32"
    manifest = Path(path) / "manifest.json" if path else None
    quantized = manifest is not None and manifest.is_file() and bool(json.loads(manifest.read_text()).get("quantization"))
    return "ONNX int8" if quantized else "ONNX fp32"


def _short(stage: str, model: str) -> str:
    if stage == "teacher":
        return "teacher"
    return {"PyTorch fp32": "student fp32", "ONNX fp32": "ONNX fp32", "ONNX int8": "INT8"}.get(model, stage)


def profile_data(records: list[StageRecord]) -> dict[str, Any] | None:
    """The last profile stage's measurements (new format), or None."""
    for r in reversed(records):
        if r.type == "profile" and r.metrics.get("measurements"):
            return {"dir": r.dir.name, "stage_s": r.timings.get("stage_s"), **{
                k: r.metrics.get(k) for k in ("measurements", "settings", "host", "sentences")}}
    return None


def _local_speed(profile: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    from edgedistill.profiling.bench import headline

    if not profile:
        return {}
    return {m["artifact"]: {**headline(m["result"]), "label": m["label"]}
            for m in profile["measurements"] if m["target"] == "local"}


def build_rows(teacher: dict[str, Any], records: list[StageRecord], task: str = "embedding") -> list[dict[str, Any]]:
    """One row per stage (teacher first): every quality metric with retention, latency, size, time."""
    columns = [c["key"] for c in quality_columns(task)]
    primary = get_task(task).primary_metric
    profile = profile_data(records)
    speed = _local_speed(profile)
    entries: list[tuple[str, str, str, dict[str, Any], dict[str, Any], bool]] = [
        ("teacher", None, "teacher", teacher, {"stage_s": None, "model": "PyTorch fp32"}, False)]
    before_training: set[str] = set()
    for r in records:
        artifact = _artifact_id(r)
        model = _model_kind(r.artifact.kind, r.artifact.path)
        evaluation = dict(r.evaluation)
        if r.type == "profile" and not profile and r.metrics.get("latency_ms_p50") is not None:  # older format
            evaluation.update({k: r.metrics.get(k) for k in ("latency_ms_p50", "latency_ms_p90", "size_mb")})
        passthrough = bool(r.metrics.get("passthrough"))
        # The student as it started (step 0, before any training), and after its projection alone was fitted, so
        # every metric shows what each part of training bought.
        for key, when, suffix in (("before_training", "step 0", "step0"), ("after_projection_fit", "projection fit",
                                                                           "projection-fit")):
            if isinstance(r.metrics.get(key), dict) and r.metrics[key]:
                entries.append((f"{r.type} ({when})", r.dir.name, f"{artifact}#{suffix}", r.metrics[key],
                                {"stage_s": None, "model": model}, False))
                before_training.add(f"{artifact}#{suffix}")
        entries.append((r.type, r.dir.name, artifact, evaluation,
                        {"stage_s": r.timings.get("stage_s"), "model": model}, passthrough))
    rows = []
    for stage, folder, artifact, evaluation, extra, passthrough in entries:
        ret = retention(evaluation, teacher, task)
        measured = speed.get(artifact)
        row = {
            "stage": stage, "dir": folder, "artifact": artifact, "passthrough": passthrough,
            "before_training": artifact in before_training,
            "model": extra["model"], "short": _short(stage, extra["model"]),
            "label": f"{stage} · {extra['model']}",
            **{key: evaluation.get(key) for key in columns},
            "retention": ret,
            "retention_pct": ret.get(primary),
            "size_mb": evaluation.get("size_mb"),
            "params_m": evaluation["params"] / 1e6 if evaluation.get("params") else None,
            "stage_s": extra["stage_s"],
        }
        if measured:
            row.update({k: measured.get(k) for k in SPEED_KEYS}, latency_source="profile")
            row["size_mb"] = measured.get("size_mb") or row["size_mb"]
        else:
            row.update({k: evaluation.get(k) for k in ("latency_ms_p50", "latency_ms_p90")},
                       latency_source="evaluation" if evaluation.get("latency_ms_p50") is not None else None)
        rows.append(row)
    teacher_row = rows[0]
    for row in rows:
        same = row["latency_source"] and row["latency_source"] == teacher_row["latency_source"]
        row["speedup"] = (teacher_row["latency_ms_p50"] / row["latency_ms_p50"]
                          if same and row["latency_ms_p50"] and teacher_row["latency_ms_p50"] else None)
    return rows


def load_devices(run_dir: Path) -> list[dict[str, Any]]:
    """Bench results merged into the run by hand (``devices/*.json``)."""
    from edgedistill.profiling.bundle import load_result

    folder = Path(run_dir) / DEVICES_DIR
    return [{"file": f"{DEVICES_DIR}/{p.name}", "result": load_result(p)} for p in sorted(folder.glob("*.json"))]


def _targets(profile: dict[str, Any] | None, devices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from edgedistill.profiling.bench import headline

    out = []
    for m in (profile or {}).get("measurements", []):
        if m["profiled"]:
            out.append({"target": m["target"], "source": "profile stage" + ("" if m["target"] == "local" else " (ssh)"),
                        "host": m["result"]["host"], **headline(m["result"])})
    for d in devices:
        r = d["result"]
        out.append({"target": r["label"], "source": f"merged ({d['file']})", "host": r["host"], **headline(r)})
    return out


def host_line(host: dict[str, Any] | None) -> str:
    if not host:
        return ""
    parts = [host.get("cpu") or "unknown CPU", host.get("machine") or "", f"{host.get('cores')} cores",
             "ISA " + (" ".join(host.get("isa") or []) or "–"),
             f"int8 dot-product {'yes' if host.get('int8_dot_product') else 'no'}",
             f"onnxruntime {host.get('onnxruntime')}"]
    if host.get("board"):
        parts.insert(0, host["board"])
    return " · ".join(p for p in parts if p)


def _speed_note(profile: dict[str, Any] | None, rows: list[dict[str, Any]], task: str = "embedding") -> str:
    if not profile:
        own = getattr(get_task(task), "latency_note", None)  # a task whose latency is not one text per call
        if own and any(r.get("latency_ms_p50") for r in rows):
            return own
        if any(r.get("latency_ms_p50") for r in rows):
            return ("Latency from the evaluator (batch 1, text in to embedding out, tokenisation included, on the "
                    "run's latency sentences); add a profile stage for side-by-side percentiles, throughput, "
                    "threads, cold start and memory.")
        return ""
    s, n = profile.get("settings") or {}, profile.get("sentences") or {}
    output = {"embedding": "normalised embedding", "classifier": "class logits"}.get(task, "model output")
    return (f"Batch-1 latency: text in to {output} out (tokenisation included), one input at a time "
            f"over {n.get('count')} held-out inputs ({n.get('words_min')}–{n.get('words_max')} words, median "
            f"{n.get('words_p50')}), up to {s.get('repeats')} rounds, each in a fresh process after "
            f"{s.get('warmup')} warm-up calls; spread = range of the per-round medians as % of their median; "
            "rounds = round processes kept / run (a round during which other processes kept more than a quarter "
            "of a core busy is run again, up to twice as many rounds); others' CPU = average cores other processes "
            f"kept busy during the kept rounds (0 on an idle machine). Throughput: sentences/s on the same sentences at batch {s.get('batch_size')}. Cold start: "
            "session creation to first embedding; model RSS: peak resident memory a fresh process gains by loading "
            "and running the model, at batch 1 and at the largest batch profiled; peak RSS: that whole process "
            "(runtime included); medians over the round processes. Every row measured by the profile stage in the "
            "same run on the same host with the same sentences, so speed-ups are side-by-side ratios.")


def _warnings(rows: list[dict[str, Any]], profile: dict[str, Any] | None) -> list[str]:
    out = []
    busy = [f"{r['label']} ({r['other_cores']:.2f})" for r in rows
            if (r.get("other_cores") or 0) > BUSY_CORES and not r["passthrough"]]
    if busy:
        out.append("Other processes kept the CPU busy while these were timed (average cores in use by others): "
                   + ", ".join(busy) + ". Their latencies may be inflated; re-run the profile on an idle machine "
                   "(`edgedistill run` reuses every other stage).")
    noisy = [f"{r['label']} ({r['spread_pct']:.1f}%)" for r in rows
             if r.get("spread_pct") is not None and r["spread_pct"] > NOISY_SPREAD_PCT and not r["passthrough"]]
    if noisy:
        out.append(f"Batch-1 medians of the round processes ranged more than {NOISY_SPREAD_PCT}% for "
                   + ", ".join(noisy) + "; treat those latencies as approximate.")
    return out


def _summary(rows: list[dict[str, Any]], host: dict[str, Any] | None, columns: list[tuple[str, str, int]],
             latency_label: str) -> tuple[str, dict[str, Any] | None]:
    candidates = [r for r in rows[1:] if not r["passthrough"]]
    if not candidates:
        return "", None
    final = candidates[-1]
    bits = [f"Final model ({final['label']}, {final['size_mb']:.1f} MB)" if final.get("size_mb") else
            f"Final model ({final['label']})"]
    quality = [f"{name} {final[key]:.{d}f} = {final['retention'][key]:.1f}% of the teacher"
               for key, name, d in columns[:3] if final.get(key) is not None and key in final["retention"]]
    text = bits[0] + ": " + "; ".join(quality) if quality else bits[0]
    if final.get("latency_ms_p50"):
        threads = final.get("threads")
        where = (f" on {host.get('cpu')} ({threads} thread{'' if threads == 1 else 's'})"
                 if host and threads else "")
        text += f". {latency_label} {final['latency_ms_p50']:.2f} ms{where}"
        if final.get("speedup"):
            text += f", {final['speedup']:.1f}x faster than the teacher measured side by side"
    return text + ".", final


def build_report(run_dir: Path, name: str, teacher: dict[str, Any], records: list[StageRecord],
                 task: str = "embedding") -> dict[str, Any]:
    """Everything the Markdown, JSON and HTML reports show."""
    rows = build_rows(teacher, records, task)
    columns = quality_columns(task)
    profile = profile_data(records)
    devices = load_devices(run_dir)
    host = (profile or {}).get("host")
    summary, final = _summary(rows, host, [(c["key"], c["label"], c["digits"]) for c in columns],
                              getattr(get_task(task), "latency_label", "Batch-1 p50"))
    return {
        "recipe": name,
        "task": task,
        "columns": columns,
        "summary": summary,
        "final": final,
        "warnings": _warnings(rows, profile),
        "teacher": teacher,
        "rows": rows,
        "host": host,
        "host_line": host_line(host),
        "speed_note": _speed_note(profile, rows, task),
        "targets": _targets(profile, devices),
        "profile": profile,
        "devices": devices,
        "stages": [{"index": r.index, "type": r.type, "key": r.key, "dir": r.dir.name, "config": r.config,
                    "metrics": r.metrics, "timings": r.timings} for r in records],
    }


# -- Markdown -------------------------------------------------------------------------------------------------
def _fmt(value: Any, digits: int = 2, suffix: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}{suffix}"
    return f"{value}{suffix}"


def _rounds(d: dict[str, Any]) -> str:
    """Round processes whose timings count / rounds run (a round disturbed by other processes is run again)."""
    if d.get("rounds") is None:
        return "–"
    return f"{d.get('rounds_used')}/{d['rounds']}"


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _quality_cell(row: dict[str, Any], key: str, digits: int) -> str:
    value = row.get(key)
    if value is None:
        return "–"
    pct = row["retention"].get(key)
    return f"{value:.{digits}f} ({pct:.1f}%)" if pct is not None else f"{value:.{digits}f}"


def to_markdown(report: dict[str, Any], stage_sections: list[tuple[str, str]] = ()) -> str:
    """The Markdown report."""
    rows = [r for r in report["rows"] if not r["passthrough"]]
    quality = _columns(report)
    lines = [f"# edgedistill report: {report['recipe']}", ""]
    if report["summary"]:
        lines += [report["summary"], ""]
    lines += [f"> Warning: {w}" for w in report["warnings"]] + ([""] if report["warnings"] else [])
    header = ["stage", "model"] + [f"{name} (retention)" for _, name, _ in quality] + [
        "batch-1 p50 ms", "speed-up", "size MB", "params M", "stage time s"]
    body = [[r["stage"], r["model"]] + [_quality_cell(r, k, d) for k, _, d in quality] + [
        _fmt(r["latency_ms_p50"]), _fmt(r["speedup"], 1, "x"), _fmt(r["size_mb"], 1), _fmt(r["params_m"], 1),
        _fmt(r["stage_s"], 0)] for r in rows]
    lines += ["## Quality and speed per stage", ""] + _md_table(header, body) + [
        "", "Quality: " + "; ".join(c["description"] for c in report.get("columns") or quality_columns()
                                     if c.get("description")) + ". Retention: % of the teacher's score.", ""]
    profile = report.get("profile")
    if profile:
        header = ["stage", "model", "threads", "p50 ms", "p90 ms", "p99 ms", "spread %", "rounds", "others' CPU",
                  "speed-up", "sentences/s", "cold start ms", "model RSS MB (batch 1 / largest)", "peak RSS MB",
                  "size MB"]
        body = [[r["stage"], r["model"], _fmt(r.get("threads")), _fmt(r.get("latency_ms_p50")),
                 _fmt(r.get("latency_ms_p90")), _fmt(r.get("latency_ms_p99")), _fmt(r.get("spread_pct"), 1),
                 _rounds(r), _fmt(r.get("other_cores"), 2), _fmt(r.get("speedup"), 1, "x"), _fmt(r.get("throughput_per_s"), 0), _fmt(r.get("cold_start_ms"), 0),
                 rss_cell(r), _fmt(r.get("peak_rss_mb"), 0), _fmt(r.get("size_mb"), 1)]
                for r in rows if r.get("latency_source") == "profile"]
        lines += ["## Speed on this machine", "", f"Host: {report['host_line']}.", ""] + _md_table(header, body)
        lines += ["", report["speed_note"], ""]
    elif report["speed_note"]:
        lines += [report["speed_note"], ""]
    targets = report["targets"]
    if len(targets) > 1 or any(t["target"] != "local" for t in targets):
        header = ["target", "source", "CPU", "arch", "cores", "ISA", "onnxruntime", "p50 ms", "p90 ms", "p99 ms",
                  "spread %", "sentences/s", "cold start ms", "model RSS MB (batch 1 / largest)"]
        body = [[t["target"], t["source"], str(t["host"].get("cpu")), str(t["host"].get("machine")),
                 str(t["host"].get("cores")), " ".join(t["host"].get("isa") or []) or "–",
                 str(t["host"].get("onnxruntime")), _fmt(t.get("latency_ms_p50")), _fmt(t.get("latency_ms_p90")),
                 _fmt(t.get("latency_ms_p99")), _fmt(t.get("spread_pct"), 1), _fmt(t.get("throughput_per_s"), 0),
                 _fmt(t.get("cold_start_ms"), 0), rss_cell(t)] for t in targets]
        lines += ["## Targets", ""] + _md_table(header, body) + [""]
    for title, section in stage_sections:
        lines += [f"## {title}", "", section.strip(), ""]
    return "\n".join(lines)


# -- writing, regenerating, merging, comparing -------------------------------------------------------------------
def write_report(run_dir: Path, name: str, teacher: dict[str, Any], records: list[StageRecord],
                 task: str = "embedding") -> Path:
    """Write report.md, report.json and report.html into the run folder; returns the Markdown path."""
    from edgedistill import stages as stage_registry
    from edgedistill.html_report import render

    run_dir = Path(run_dir)
    report = build_report(run_dir, name, teacher, records, task)
    sections = []
    for r in records:
        # a task's version of a stage may write its own section (metrics["report_markdown"])
        section = r.metrics.get("report_markdown") or stage_registry.report_section(r.type, r.metrics)
        if section:
            sections.append((f"{r.index:02d} {r.type}", section))
    md = to_markdown(report, sections)
    (run_dir / "report.md").write_text(md)
    (run_dir / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (run_dir / "report.html").write_text(render([(name, report)], f"edgedistill report: {name}", md))
    log.info("report: %s (.json, .html)", run_dir / "report.md")
    return run_dir / "report.md"


def regenerate(run_dir: Path) -> Path:
    """Rebuild the report from the finished stage folders of a run (the chain named in report.json)."""
    from edgedistill.records import TEACHER_RECORD, read_record

    run_dir = Path(run_dir)
    teacher_file = run_dir / TEACHER_RECORD
    if not teacher_file.is_file():
        raise EdgedistillError(f"{run_dir}: not a run folder (no {TEACHER_RECORD}); pass runs/<recipe-name>")
    teacher_record = json.loads(teacher_file.read_text())
    teacher = teacher_record["evaluation"]
    previous_report = run_dir / "report.json"
    chain, name = None, run_dir.name
    if previous_report.is_file():
        data = json.loads(previous_report.read_text())
        chain, name = data.get("stages"), data.get("recipe", name)
    folders = [run_dir / s["dir"] for s in chain] if chain else sorted(
        p for p in run_dir.iterdir() if p.is_dir() and p.name[:2].isdigit() and (p / "metrics.json").is_file())
    missing = [f.name for f in folders if not (f / "metrics.json").is_file()]
    if missing:
        raise EdgedistillError(f"{run_dir}: stage folder(s) {', '.join(missing)} named in report.json are gone; "
                               "delete report.json to rebuild from the folders present, or re-run the recipe")
    records, previous = [], None
    for folder in folders:
        record = read_record(folder, previous)
        records.append(record)
        previous = record.artifact
    return write_report(run_dir, name, teacher, records, teacher_record.get("task", "embedding"))


def _run_models(run_dir: Path) -> dict[str, str]:
    """sha256 of every ONNX model in a run's stage folders -> the stage folder name."""
    import hashlib

    out = {}
    for manifest in sorted(Path(run_dir).glob("[0-9][0-9]-*/artifact/manifest.json")):
        data = json.loads(manifest.read_text())
        model = manifest.parent / data.get("model", "model.onnx")
        digest = data.get("sha256", {}).get(model.name)
        if not digest and model.is_file():
            digest = hashlib.sha256(model.read_bytes()).hexdigest()
        if digest:
            out[digest] = manifest.parent.parent.name
    return out


def merge(run_dir: Path, result_file: Path, label: str | None = None) -> Path:
    """Add a bench result (bench.py run by hand on a device) to a run as devices/<label>.json."""
    from edgedistill.profiling.bundle import load_result

    run_dir = Path(run_dir)
    result = load_result(Path(result_file))
    sha = result["model"].get("sha256")
    models = _run_models(run_dir)
    if sha not in models:
        raise EdgedistillError(
            f"{result_file}: measured a model (sha256 {str(sha)[:12]}...) that is not in {run_dir}; merge it into "
            "the run whose bench bundle was copied to the device (its stage folders hold that model)")
    label = label or result["label"]
    if label == "local" or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", label):
        raise EdgedistillError(f"--label {label!r}: use letters, digits, '.', '_' or '-' (and not 'local'), e.g. pixel8")
    result = {**result, "label": label, "artifact": models[sha]}
    folder = run_dir / DEVICES_DIR
    folder.mkdir(exist_ok=True)
    path = folder / f"{label}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(path)
    log.info("merged %s as device %s (model of %s)", result_file, label, models[sha])
    return path


def load_report(run_dir: Path) -> dict[str, Any]:
    """A run's report data, regenerated when report.json is missing or from an older version."""
    path = Path(run_dir) / "report.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    if "summary" not in data:
        regenerate(run_dir)
        data = json.loads(path.read_text())
    return data


def _labels(run_a: Path, run_b: Path) -> tuple[str, str]:
    a, b = Path(run_a).resolve(), Path(run_b).resolve()
    if a.name != b.name:
        return a.name, b.name
    return f"{a.parent.name}/{a.name}", f"{b.parent.name}/{b.name}"


def compare_markdown(la: str, a: dict[str, Any], lb: str, b: dict[str, Any]) -> str:
    """Two runs side by side: quality and retention per stage, latency and speed-up, hosts."""
    ra = {r["stage"]: r for r in a["rows"] if not r["passthrough"]}
    rb = {r["stage"]: r for r in b["rows"] if not r["passthrough"]}
    stages = list(ra) + [s for s in rb if s not in ra]
    lines = [f"# edgedistill comparison: {la} vs {lb}", ""]
    lines += _md_table(["", la, lb], [["recipe", a["recipe"], b["recipe"]],
                                      ["final model", a.get("summary") or "–", b.get("summary") or "–"],
                                      ["host", a.get("host_line") or "–", b.get("host_line") or "–"]]) + [""]
    if (a.get("host_line") or "") != (b.get("host_line") or ""):
        lines += [("> Latencies were measured on different hosts: compare each run's speed-up over its own "
                   "teacher, not milliseconds."), ""]
    header, body = ["stage"], []
    quality = _columns(a)
    for _, name, _ in quality:
        header += [f"{name} {la}", f"{name} {lb}", "Δ"]
    for stage in stages:
        x, y = ra.get(stage, {}), rb.get(stage, {})
        cells = [stage]
        for key, _, d in quality:
            delta = y[key] - x[key] if x.get(key) is not None and y.get(key) is not None else None
            cells += [_quality_cell(x, key, d) if x else "–", _quality_cell(y, key, d) if y else "–",
                      f"{delta:+.{d}f}" if delta is not None else "–"]
        body.append(cells)
    lines += ["## Quality (retention = % of each run's teacher)", ""] + _md_table(header, body) + [""]
    header = ["stage", f"model {la}", f"model {lb}", f"p50 ms {la}", f"p50 ms {lb}", f"{lb} / {la}",
              f"speed-up {la}", f"speed-up {lb}", f"size MB {la}", f"size MB {lb}"]
    body = []
    for stage in stages:
        x, y = ra.get(stage, {}), rb.get(stage, {})
        ratio = (y["latency_ms_p50"] / x["latency_ms_p50"]
                 if x.get("latency_ms_p50") and y.get("latency_ms_p50") else None)
        body.append([stage, x.get("model", "–"), y.get("model", "–"), _fmt(x.get("latency_ms_p50")),
                     _fmt(y.get("latency_ms_p50")), _fmt(ratio, 2, "x"), _fmt(x.get("speedup"), 1, "x"),
                     _fmt(y.get("speedup"), 1, "x"), _fmt(x.get("size_mb"), 1), _fmt(y.get("size_mb"), 1)])
    lines += ["## Speed (batch-1 p50)", ""] + _md_table(header, body) + [""]
    return "\n".join(lines)


def compare(run_a: Path, run_b: Path, out_dir: Path | None = None) -> Path:
    """Write compare-<A>-vs-<B>.md/.json/.html for two runs into ``out_dir`` (default: the current folder)."""
    from edgedistill.html_report import render

    a, b = load_report(run_a), load_report(run_b)
    la, lb = _labels(run_a, run_b)
    out_dir = Path(out_dir or ".")
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", f"compare-{la}-vs-{lb}")
    md = compare_markdown(la, a, lb, b)
    (out_dir / f"{stem}.md").write_text(md)
    (out_dir / f"{stem}.json").write_text(json.dumps({"runs": {la: a, lb: b}}, indent=2, default=str) + "\n")
    (out_dir / f"{stem}.html").write_text(render([(la, a), (lb, b)], f"edgedistill comparison: {la} vs {lb}", md))
    log.info("comparison: %s (.json, .html)", out_dir / f"{stem}.md")
    return out_dir / f"{stem}.md"
