"""Runs that lock: a second run of the same run folder waits or exits with one line naming the holder; two
recipes sharing the label and teacher-evaluation caches at once both finish with the caches intact.

Real `edgedistill run` subprocesses on tiny models (one short distill stage, one thread each).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgedistill.integrity import check_folder
from edgedistill.locks import RUN_LOCK, RunLockedError, key_lock, run_lock
from tests.conftest import tiny_recipe, write_recipe


def _short_recipe(world: dict, name: str = "tiny") -> dict:
    recipe = tiny_recipe(world, name=name)
    distill = recipe["stages"][0]
    distill["student"]["projection_sentences"] = 40
    distill.update(train_sentences=60, validation_sentences=0, eval_steps=0)
    recipe["stages"] = [distill]
    return recipe


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "EDGEDISTILL_CACHE": str(cache), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1"}


def _cmd(recipe: Path, runs: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "edgedistill.cli", "run", str(recipe), "--runs-dir", str(runs), "--quiet", *extra]


def _hold(run_dir: Path):
    """Take the run folder's lock in this process, as a running `edgedistill run` would."""
    return run_lock(run_dir)


def test_locked_folder_is_one_line_error_naming_the_holder(tmp_path: Path, tiny_world: dict) -> None:
    recipe = write_recipe(tmp_path / "r.yaml", _short_recipe(tiny_world))
    runs = tmp_path / "runs"
    with _hold(runs / "tiny"):
        done = subprocess.run(_cmd(recipe, runs), check=False, env=_env(tmp_path / "cache"), capture_output=True, text=True,
                              timeout=300)
    assert done.returncode == RunLockedError.exit_code, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"pid {os.getpid()}" in lines[0] and "--wait" in lines[0] and "--runs-dir" in lines[0]
    assert not list((runs / "tiny").glob("0*")) and not list((runs / "tiny").glob(".tmp-*"))
    with _hold(runs / "tiny"):
        done = subprocess.run([*_cmd(recipe, runs), "--log-format", "json"], check=False, env=_env(tmp_path / "cache"),
                              capture_output=True, text=True, timeout=300)
    (line,) = done.stderr.strip().splitlines()
    assert json.loads(line)["exit_code"] == RunLockedError.exit_code == done.returncode


def test_wait_starts_when_the_holder_finishes(tmp_path: Path, tiny_world: dict) -> None:
    recipe = write_recipe(tmp_path / "r.yaml", _short_recipe(tiny_world))
    runs = tmp_path / "runs"
    log = tmp_path / "stderr.txt"
    with _hold(runs / "tiny"), log.open("w") as err:
        proc = subprocess.Popen(_cmd(recipe, runs, "--wait"), env=_env(tmp_path / "cache"),
                                stdout=subprocess.DEVNULL, stderr=err, text=True)
        deadline = time.monotonic() + 240
        while "waiting for it to finish" not in log.read_text() and proc.poll() is None:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        time.sleep(1)
        assert proc.poll() is None, log.read_text()  # it waits: nothing started while we hold the lock
        assert not list((runs / "tiny").glob(".tmp-*")) and not list((runs / "tiny").glob("0*"))
    assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    assert f"pid {os.getpid()}" in log.read_text()
    assert len(list((runs / "tiny").glob("0*"))) == 1
    assert json.loads((runs / "tiny" / RUN_LOCK).read_text())["pid"] == proc.pid


def test_same_recipe_twice_at_once_never_corrupts(tmp_path: Path, tiny_world: dict) -> None:
    """The reported bug: two runs of one recipe in one folder. One runs, the other waits (--wait) and then reuses
    every stage; without --wait the second would exit with the lock error instead of a traceback."""
    recipe = write_recipe(tmp_path / "r.yaml", _short_recipe(tiny_world))
    runs = tmp_path / "runs"
    procs = [subprocess.Popen(_cmd(recipe, runs, *extra), env=_env(tmp_path / "cache"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for extra in (("--wait",), ())]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    assert results[0][0] == 0, results[0][1][-3000:]
    code, err = results[1]
    assert code in (0, RunLockedError.exit_code), err[-3000:]
    assert "Traceback" not in err
    if code:
        assert "in use by another edgedistill run" in err
    folders = sorted((runs / "tiny").glob("0*"))
    assert [f.name[:10] for f in folders] == ["00-distill"]
    assert all(check_folder(f, full=True) == [] for f in folders)
    assert not list((runs / "tiny").glob(".tmp-*"))


def test_two_recipes_share_the_caches_at_once(tmp_path: Path, tiny_world: dict) -> None:
    cache = tmp_path / "cache"
    runs = tmp_path / "runs"
    recipes = [write_recipe(tmp_path / f"{n}.yaml", _short_recipe(tiny_world, name=n)) for n in ("a", "b")]
    procs = [subprocess.Popen(_cmd(r, runs), env=_env(cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for r in recipes]
    for p in procs:
        assert p.wait(timeout=600) == 0, p.stderr.read()[-3000:]
    (evaluation,) = [p for p in (cache / "teacher-eval").iterdir() if not p.name.startswith(".")]
    assert check_folder(evaluation, full=True) == []
    shards = [p for p in (cache / "labels").rglob("*.npz")]  # the per-sentence label store's shards
    assert shards
    for shard in shards:
        with np.load(shard) as data:
            assert all(data[name].ndim >= 1 for name in data.files)
    leftovers = [p for p in (cache / "labels").rglob(".*") if p.is_file() and not p.name.endswith(".lock")]
    assert not leftovers  # no half-written shard
    metrics = [json.loads(next((runs / n).glob("00-distill-*/metrics.json")).read_text())["evaluation"]
               for n in ("a", "b")]
    assert metrics[0]["sts_spearman"] == pytest.approx(metrics[1]["sts_spearman"], abs=1e-5)


def test_run_lock_in_process(tmp_path: Path) -> None:
    with run_lock(tmp_path / "run"), pytest.raises(RunLockedError, match=f"pid {os.getpid()}"), \
            run_lock(tmp_path / "run"):
        pass
    with run_lock(tmp_path / "run"):  # released
        pass


def test_key_lock_serialises_writers(tmp_path: Path) -> None:
    code = ("import sys, time; from pathlib import Path; from edgedistill.locks import key_lock\n"
            "with key_lock(Path(sys.argv[1]), 'k', 'test'):\n"
            "    Path(sys.argv[1], 'log').open('a').write('in\\n'); time.sleep(0.5)\n"
            "    Path(sys.argv[1], 'log').open('a').write('out\\n')\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)]) for _ in range(3)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    assert (tmp_path / "log").read_text().split() == ["in", "out"] * 3
    with key_lock(tmp_path, "k", "test"):
        pass
