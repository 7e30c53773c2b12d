"""The runner on tiny models: the whole chain, resume after a crash, nothing redone on a rerun."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgedistill import stages
from edgedistill.pipeline import run_recipe
from edgedistill.recipe import load_recipe
from edgedistill.runner import Runner
from tests.conftest import tiny_recipe, write_recipe


def _runner(tmp_path: Path, world: dict, **changes: object) -> Runner:
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", tiny_recipe(world, **changes)))
    return Runner(recipe, tmp_path / "runs")


def test_full_chain_writes_stage_folders_and_report(tmp_path: Path, tiny_world: dict) -> None:
    runner = _runner(tmp_path, tiny_world)
    records = run_recipe(runner.recipe, tmp_path / "runs")
    run_dir = tmp_path / "runs" / "tiny"
    assert [r.type for r in records] == ["distill", "export", "quantize", "profile"]
    for i, r in enumerate(records):
        assert r.dir.name.startswith(f"{i:02d}-{r.type}-")
        for name in ("config.json", "metrics.json", "timings.json"):
            assert (r.dir / name).is_file()
    student = records[0].artifact.path
    assert (student / "modules.json").is_file()
    assert records[0].metrics["label_backend"] == "onnx"  # auto on CPU: the teacher labelled through ONNX Runtime
    bundle = records[2].artifact.path
    assert {"model.onnx", "tokenizer.json", "manifest.json"} <= {p.name for p in bundle.iterdir()}
    assert records[3].artifact.path == bundle  # profile hands its input on
    assert (run_dir / "final").resolve() == bundle.resolve()
    # The student was projected into the teacher's 32-d space and is compared with it.
    assert records[0].evaluation["dimension"] == 32
    assert 0 < records[0].evaluation["teacher_cosine_mean"] <= 1.0001
    report = json.loads((run_dir / "report.json").read_text())
    assert [row["stage"] for row in report["rows"]] == ["teacher", "distill (step 0)", "distill", "export", "quantize",
                                                        "profile"]
    assert report["rows"][0]["retention_pct"] == pytest.approx(100.0)
    assert "| quantize |" in (run_dir / "report.md").read_text()
    assert not list(run_dir.glob(".tmp-*"))


def test_rerun_redoes_nothing(tmp_path: Path, tiny_world: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _runner(tmp_path, tiny_world).run()

    def boom(stage_type: str):
        raise AssertionError(f"stage {stage_type} ran again")

    monkeypatch.setattr(stages, "get", boom)
    again = _runner(tmp_path, tiny_world).run()
    assert [r.dir for r in again] == [r.dir for r in first]
    assert all(r.reused for r in again)


def test_crash_resumes_from_last_finished_stage(tmp_path: Path, tiny_world: dict,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    real_get = stages.get
    calls: list[str] = []

    def crashing_get(stage_type: str):
        calls.append(stage_type)
        if stage_type != "quantize":
            return real_get(stage_type)

        def half_written(cfg, ctx):
            ctx.artifact_dir.mkdir()
            (ctx.artifact_dir / "model.onnx").write_bytes(b"half")
            raise KeyboardInterrupt  # killed mid-stage

        return half_written

    monkeypatch.setattr(stages, "get", crashing_get)
    with pytest.raises(KeyboardInterrupt):
        _runner(tmp_path, tiny_world).run()
    run_dir = tmp_path / "runs" / "tiny"
    assert len(list(run_dir.glob("0[01]-*"))) == 2
    assert not list(run_dir.glob("02-quantize-*"))
    assert list(run_dir.glob(".tmp-02-quantize-*"))  # the half-written attempt is not taken as finished

    calls.clear()
    monkeypatch.setattr(stages, "get", lambda t: (calls.append(t), real_get(t))[1])
    records = _runner(tmp_path, tiny_world).run()
    assert calls == ["quantize", "profile"]
    assert [r.reused for r in records] == [True, True, False, False]
    assert (records[2].artifact.path / "model.onnx").stat().st_size > 1000
    assert not list(run_dir.glob(".tmp-*"))


def test_changed_stage_config_reruns_only_that_stage_and_after(tmp_path: Path, tiny_world: dict,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    first = _runner(tmp_path, tiny_world).run()
    recipe = tiny_recipe(tiny_world)
    recipe["stages"][3]["sentences"] = 12
    runner = Runner(load_recipe(write_recipe(tmp_path / "r2.yaml", recipe)), tmp_path / "runs")
    second = runner.run()
    assert [r.dir for r in second[:3]] == [r.dir for r in first[:3]]
    assert second[3].dir != first[3].dir and not second[3].reused


def test_missing_asset_is_a_clear_error(tmp_path: Path, tiny_world: dict) -> None:
    from edgedistill.errors import AssetError

    runner = _runner(tmp_path, tiny_world, teacher=str(tmp_path / "no-such-model"))
    with pytest.raises(AssetError, match="no-such-model"):
        runner.run()
