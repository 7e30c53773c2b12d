"""SIGKILL during distill, export and quantize; the rerun resumes and ends with the metrics of an uninterrupted
run. Two clean runs with the same seed agree too (determinism). Tiny models, one thread: ~10 s a test on
an idle core (a killed subprocess, then the rerun in this process).

The kill is deterministic: `EDGEDISTILL_TEST_KILL_ON` makes the runner SIGKILL its own process as soon as a
chosen file appears in the run folder (a training checkpoint, the exported graph, a quantization trial), so the
process always dies mid-stage, with the stage's temporary folder half-written.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from edgedistill.cli import main
from edgedistill.integrity import KILL_ENV, check_folder
from edgedistill.pipeline import run_recipe
from edgedistill.recipe import load_recipe
from tests.conftest import tiny_recipe, write_recipe

# Quality metrics of a resumed (or repeated) run may differ from the uninterrupted one by at most this much
# (absolute; STS Spearman and nDCG@10 are in percent, cosines in [-1, 1]). Observed: 0.0 (bit-identical).
TOLERANCE = 1e-5
STAGES = ("distill", "export", "quantize")


def _recipe(world: dict) -> dict:
    recipe = tiny_recipe(world)
    distill, export, quantize = recipe["stages"][:3]
    distill.update(checkpoint_steps=2)  # 7 steps: checkpoints at 2, 4, 6
    export.update(optimize="never")  # no timing-dependent choice
    quantize.update(search={"sensitivity": "off", "latency_sentences": 8, "latency_repeats": 1})
    recipe["stages"] = [distill, export, quantize]
    return recipe


def _quality(evaluation: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in evaluation.items() if "latency" not in k}


def _stage_metrics(run_dir: Path) -> dict[str, dict[str, float]]:
    out = {}
    for i, stage in enumerate(STAGES):
        (folder,) = run_dir.glob(f"{i:02d}-{stage}-*")
        out[stage] = _quality(json.loads((folder / "metrics.json").read_text())["evaluation"])
    return out


def _max_diff(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]) -> float:
    assert a.keys() == b.keys() and all(a[s].keys() == b[s].keys() for s in a)
    diffs = [abs(a[s][k] - b[s][k]) for s in a for k in a[s]]
    assert not any(math.isnan(d) for d in diffs)
    return max(diffs)


@pytest.fixture(scope="module")
def reference(tiny_world: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One uninterrupted run; its cache (teacher evaluation and labels) is shared by the runs below."""
    root = tmp_path_factory.mktemp("interrupt")
    cache = root / "cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEDISTILL_CACHE", str(cache))
        recipe = write_recipe(root / "r.yaml", _recipe(tiny_world))
        run_recipe(load_recipe(recipe), root / "runs")
    return {"root": root, "cache": cache, "recipe": recipe, "run_dir": root / "runs" / "tiny",
            "metrics": _stage_metrics(root / "runs" / "tiny")}


def _kill_run(reference: dict, runs: Path, pattern: str) -> subprocess.CompletedProcess:
    env = {**os.environ, KILL_ENV: pattern, "EDGEDISTILL_CACHE": str(reference["cache"]), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "edgedistill.cli", "run", str(reference["recipe"]), "--runs-dir", str(runs)]
    return subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize(("index", "pattern"), [
    (0, ".ckpt-00-distill-*/latest.pt"),  # mid-training, after the checkpoint at step 2 of 7
    (1, ".tmp-01-export-*/artifact/model.onnx"),  # graph written, not yet checked, evaluated or recorded
    (2, ".tmp-02-quantize-*/search/trials/*/model.onnx"),  # a quantization trial written, search unfinished
], ids=STAGES)
def test_sigkill_mid_stage_then_resume(reference: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       caplog: pytest.LogCaptureFixture, index: int, pattern: str) -> None:
    stage = STAGES[index]
    runs = tmp_path / "runs"
    run_dir = runs / "tiny"
    run_dir.mkdir(parents=True)
    for earlier in range(index):  # the stages an earlier run finished (copied with their mtimes)
        (folder,) = reference["run_dir"].glob(f"{earlier:02d}-*")
        shutil.copytree(folder, run_dir / folder.name)

    killed = _kill_run(reference, runs, pattern)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not list(run_dir.glob(f"{index:02d}-{stage}-*"))  # nothing half-written looks finished
    assert list(run_dir.glob(f".tmp-{index:02d}-{stage}-*"))
    if stage == "distill":
        assert list(run_dir.glob(".ckpt-00-distill-*/latest.pt"))

    monkeypatch.setenv("EDGEDISTILL_CACHE", str(reference["cache"]))
    with caplog.at_level(logging.INFO, logger="edgedistill"):
        result = CliRunner().invoke(main, ["run", str(reference["recipe"]), "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    assert "discarding an unfinished attempt" in caplog.text
    if stage == "distill":
        assert "resuming training from step 2/7" in caplog.text
    for earlier in range(index):
        assert f"stage {earlier} {STAGES[earlier]}: finished earlier, reusing" in caplog.text
    assert not list(run_dir.glob(".tmp-*")) and not list(run_dir.glob(".ckpt-*"))
    for folder in run_dir.glob("0*"):
        assert check_folder(folder, full=True) == []
    diff = _max_diff(_stage_metrics(run_dir), reference["metrics"])
    assert diff <= TOLERANCE, (diff, _stage_metrics(run_dir), reference["metrics"])


def test_same_seed_same_metrics(reference: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Determinism: a second clean run (own run folder, no cached teacher labels or evaluation) matches."""
    monkeypatch.setenv("EDGEDISTILL_CACHE", str(tmp_path / "cache"))
    run_recipe(load_recipe(reference["recipe"]), tmp_path / "runs")
    diff = _max_diff(_stage_metrics(tmp_path / "runs" / "tiny"), reference["metrics"])
    assert diff <= TOLERANCE, diff


def test_sigkill_mid_profile_then_resume(reference: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    """The profile stage resumes like the others: killed after writing its bench bundle, before any measurement;
    the rerun reuses distill, export and quantize, discards the half-written profile folder and profiles."""
    recipe = yaml.safe_load(Path(reference["recipe"]).read_text())
    recipe["stages"].append({"type": "profile", "sentences": 4, "warmup": 1, "repeats": 1, "min_repeats": 1,
                                   "threads": [1], "batch_sizes": [1], "seq_lengths": [8], "cell_repeats": 1,
                                   "cell_seconds": 0.2, "compare": []})
    path = write_recipe(tmp_path / "r.yaml", recipe)
    runs = tmp_path / "runs"
    run_dir = runs / "tiny"
    run_dir.mkdir(parents=True)
    for folder in reference["run_dir"].glob("0*"):
        shutil.copytree(folder, run_dir / folder.name)

    killed = _kill_run({**reference, "recipe": path}, runs, ".tmp-03-profile-*/bench/README.txt")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not list(run_dir.glob("03-profile-*")) and list(run_dir.glob(".tmp-03-profile-*"))

    monkeypatch.setenv("EDGEDISTILL_CACHE", str(reference["cache"]))
    with caplog.at_level(logging.INFO, logger="edgedistill"):
        result = CliRunner().invoke(main, ["run", str(path), "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    assert "stage 3 profile: discarding an unfinished attempt" in caplog.text
    for earlier, stage in enumerate(STAGES):
        assert f"stage {earlier} {stage}: finished earlier, reusing" in caplog.text
    (profile,) = run_dir.glob("03-profile-*")
    assert check_folder(profile, full=True) == []
    assert json.loads((profile / "metrics.json").read_text())["latency_ms_p50"] > 0
    assert not list(run_dir.glob(".tmp-*"))
    assert _max_diff(_stage_metrics(run_dir), reference["metrics"]) <= TOLERANCE
