"""Progress people can read: a line per long step with counts and ETA, no library bars, --quiet, --log-format
json and the closing summary. One real `edgedistill run` subprocess on tiny models (distill -> export), then a
rerun: ~20 s on an idle core."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgedistill.progress import JsonFormatter, Progress, fmt_duration
from tests.conftest import tiny_recipe, write_recipe


def test_progress_lines_have_counts_rate_and_eta(caplog: pytest.LogCaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(float(t) for t in range(100))
    monkeypatch.setattr("edgedistill.progress.time.monotonic", lambda: next(clock))
    with caplog.at_level(logging.INFO, logger="edgedistill"):
        progress = Progress("labelling", 100, "sentences", every=5)
        for _ in range(10):
            progress.update(10)
        progress.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "labelling: 100 sentences"
    assert any(re.fullmatch(r"labelling: \d+/100 sentences \(\d+%\), [\d.]+ sentences/s, ETA \d+s", line) for line in lines), lines
    assert lines[-1].startswith("labelling: done, 100 sentences in")
    assert len(lines) <= 6  # throttled: not one line per update
    record = caplog.records[1]
    payload = json.loads(JsonFormatter().format(record))
    assert payload["progress"]["total"] == 100 and payload["progress"]["eta_s"] is not None


def test_fmt_duration() -> None:
    assert [fmt_duration(s) for s in (4.4, 75, 3725)] == ["4s", "1m15s", "1h02m"]


def test_run_json_log_quiet_and_summary(tmp_path: Path, tiny_world: dict) -> None:
    recipe = tiny_recipe(tiny_world)
    distill, export = recipe["stages"][:2]
    export.update(optimize="never", check_sentences=8)
    recipe["stages"] = [distill, export]
    path = write_recipe(tmp_path / "r.yaml", recipe)
    env = {**os.environ, "EDGEDISTILL_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "edgedistill.cli", "run", str(path), "--runs-dir", str(tmp_path / "runs")]

    done = subprocess.run([*cmd, "--log-format", "json"], check=False, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]  # every line is JSON
    steps = {r["progress"]["step"] for r in records if "progress" in r}
    assert {"evaluating the teacher", "teacher labels", "training"} <= steps, steps
    ends = [r["progress"] for r in records if r.get("progress", {}).get("event") == "done"]
    assert all(p["done"] >= 1 and p["total"] >= 1 for p in ends)
    assert any("stage 1 export: done" in r["message"] for r in records)
    assert "it/s" not in done.stderr and "Batches" not in done.stderr  # no library bars
    summary = json.loads(done.stdout)
    assert [s["stage"] for s in summary["stages"]] == ["distill", "export"]
    assert summary["stages"][1]["metric"] == "sts_spearman" and summary["bundle"].endswith("bundle")
    assert Path(summary["bundle"], "manifest.json").is_file()

    again = subprocess.run([*cmd, "--quiet"], check=False, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.strip() == summary["bundle"]
    assert " INFO " not in again.stderr

    text = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=900)
    assert text.returncode == 0
    assert "run finished in" in text.stdout and "reused" in text.stdout and "bundle: " in text.stdout
