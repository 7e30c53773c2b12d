"""Progress people can read: a few log lines per long step (counts, rate, ETA), no library progress bars,
``--quiet`` and ``--log-format json`` for scripts, and a closing summary of the run.

A long step (evaluating the teacher, labelling, training) is a ``Progress``: it logs when it starts, at most
once every ``every`` seconds while it runs (done/total, rate, ETA) and when it ends. Every line is an ordinary
log record of the ``edgedistill.progress`` logger with the numbers attached (``record.progress``), so the JSON
formatter emits them as fields.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("edgedistill.progress")

EVERY_S = 30.0  # at most one progress line per step this often (plus its first and last)
CHUNK = 256  # sentences per encode call when an encoder's progress is tracked


def fmt_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    """Counts of one long step, logged as a line at its start, every ``every`` seconds, and at its end."""

    def __init__(self, what: str, total: int, unit: str, every: float = EVERY_S, initial: int = 0) -> None:
        self.what, self.total, self.unit, self.every = what, max(0, int(total)), unit, every
        self.done = self.start_done = int(initial)
        self.t0 = self.last = time.monotonic()
        self.closed = False
        self._emit("start", f"{what}: {self.done}/{self.total} {unit}" if self.done else f"{what}: {self.total} {unit}")

    def fields(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.t0
        rate = (self.done - self.start_done) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else None
        return {"step": self.what, "done": self.done, "total": self.total, "unit": self.unit,
                "elapsed_s": round(elapsed, 1), "rate": round(rate, 2), "eta_s": None if eta is None else round(eta)}

    def _emit(self, event: str, message: str) -> None:
        log.info(message, extra={"progress": {"event": event, **self.fields()}})

    def update(self, n: int = 1, note: str = "") -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every and self.done < self.total:
            self.last = now
            f = self.fields()
            pct = 100 * self.done / self.total if self.total else 100.0
            eta = f"ETA {fmt_duration(f['eta_s'])}" if f["eta_s"] is not None else "ETA ?"
            self._emit("update", f"{self.what}: {self.done}/{self.total} {self.unit} ({pct:.0f}%), "
                       f"{f['rate']:.3g} {self.unit}/s, {eta}{', ' + note if note else ''}")

    def close(self, note: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        f = self.fields()
        self._emit("done", f"{self.what}: done, {self.done} {self.unit} in {fmt_duration(f['elapsed_s'])}"
                   f"{f' ({rate:.3g} {self.unit}/s)' if (rate := f['rate']) else ''}{', ' + note if note else ''}")



class TrackedEncoder:
    """An encoder whose ``encode`` calls advance a Progress (in chunks, so long calls report as they go)."""

    def __init__(self, encoder: Any, progress: Progress) -> None:
        self._encoder, self.progress = encoder, progress
        self.dimension = encoder.dimension

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)

    def encode(self, sentences: list[str], batch_size: int = 64) -> np.ndarray:
        sentences = list(sentences)
        if len(sentences) <= CHUNK:
            out = self._encoder.encode(sentences, batch_size=batch_size)
            self.progress.update(len(sentences))
            return out
        # Longest first, in chunks of whole batches, so batches pad as little as in one call that sorts by length.
        order = np.argsort([-len(s) for s in sentences], kind="stable")
        step = max(CHUNK // batch_size, 1) * batch_size
        out = None
        for start in range(0, len(sentences), step):
            idx = order[start:start + step]
            part = self._encoder.encode([sentences[i] for i in idx], batch_size=batch_size)
            if out is None:
                out = np.zeros((len(sentences), *part.shape[1:]), dtype=part.dtype)
            out[idx] = part
            self.progress.update(len(idx))
        return out


# -- logging set-up ---------------------------------------------------------------------------------------
class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, plus the progress/summary fields if any."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": round(record.created, 3), "level": record.levelname.lower(),
                               "logger": record.name, "message": record.getMessage()}
        for extra in ("progress", "summary"):
            if hasattr(record, extra):
                out[extra] = getattr(record, extra)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def silence_library_bars() -> None:
    """No per-batch bars from tqdm, transformers, sentence-transformers or the hub (also in child processes)."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # torch's C++ warnings go straight to stderr
    for name in ("sentence_transformers", "transformers", "huggingface_hub", "onnxruntime", "torch"):
        logging.getLogger(name).setLevel(logging.WARNING)


def configure_logging(verbose: bool = False, quiet: bool = False, log_format: str = "text") -> None:
    """Our logs at INFO (DEBUG with verbose, WARNING with quiet), third-party libraries at WARNING."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_edgedistill", False):
            root.removeHandler(old)
    if not root.handlers:  # like logging.basicConfig: a host that set up logging (pytest, an app) keeps its own
        handler._edgedistill = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    ours = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.getLogger("edgedistill").setLevel(ours)
    if not verbose:
        silence_library_bars()
    # Python warnings (torch's exporter, ...) become log records: one format on stderr, JSON lines stay JSON.
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.DEBUG if verbose else logging.ERROR)


# -- closing summary ---------------------------------------------------------------------------------------
HEADLINE = ("sts_spearman", "retrieval_ndcg10", "teacher_cosine_mean", "accuracy")  # the first a task measures


def headline(evaluation: dict[str, Any]) -> tuple[str, float] | None:
    """The first quality metric the evaluation measured (STS-b Spearman, else nDCG@10, else cosine)."""
    for key in HEADLINE:
        if isinstance(evaluation.get(key), (int, float)):
            return key, float(evaluation[key])
    return None


def summary(run_dir: Path, records: list[Any], elapsed_s: float) -> dict[str, Any]:
    """The run in numbers: per stage its time (0 if reused), headline metric and latency; the bundle's path."""
    rows = []
    for r in records:
        head = headline(r.evaluation)
        rows.append({"stage": r.type, "reused": r.reused,
                     "time_s": 0.0 if r.reused else round(sum(v for v in r.timings.values()), 1),
                     "metric": head[0] if head else None, "value": head[1] if head else None,
                     "latency_ms_p50": r.evaluation.get("latency_ms_p50")})
    bundle = Path(run_dir) / "bundle"
    return {"run_dir": str(run_dir), "elapsed_s": round(elapsed_s, 1), "stages": rows,
            "bundle": str(bundle) if (bundle / "manifest.json").is_file() else None,
            "report": str(Path(run_dir) / "report.md")}


def summary_text(s: dict[str, Any]) -> str:
    lines = [f"run finished in {fmt_duration(s['elapsed_s'])}: {s['run_dir']}"]
    for row in s["stages"]:
        time_s = "reused" if row["reused"] else fmt_duration(row["time_s"])
        metric = f"{row['metric']} {row['value']:.4g}" if row["metric"] else "no quality metric"
        lat = f", batch-1 p50 {row['latency_ms_p50']:.2f} ms" if row.get("latency_ms_p50") is not None else ""
        lines.append(f"  {row['stage']:<9} {time_s:>7}  {metric}{lat}")
    lines.append(f"  bundle: {s['bundle'] or 'none (the last stage is not an ONNX model)'}")
    lines.append(f"  report: {s['report']}")
    return "\n".join(lines)
