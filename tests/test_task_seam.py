"""The task seam for kinds beyond embeddings: a task's own recipe sections and stage configs, and a ``finetune``
stage whose output becomes the teacher of the later stages and of the report. Uses a minimal task written here
(a "counter" whose model is a JSON file), so it tests the seam and nothing of a real task."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
import torch
from pydantic import Field

from edgedistill.contract import StageContext, StageResult
from edgedistill.errors import RecipeError
from edgedistill.stages.configs import SOURCE, Strict
from edgedistill.tasks import TASKS, Metric


class CounterData(Strict):
    labelled: str = Field(json_schema_extra=SOURCE)
    seed: int = 0


class CounterEvaluation(Strict):
    target: int = 10


class CounterFinetune(Strict):
    type: Literal["finetune"] = "finetune"
    steps: int = Field(default=3, gt=0)


class CounterDistill(Strict):
    type: Literal["distill"] = "distill"
    shrink: int = 1


class Predictor:
    def __init__(self, path: Path) -> None:
        self.value = json.loads((Path(path) / "model.json").read_text())["value"]
        self.model = torch.nn.Linear(1, 1)


class Evaluator:
    def __init__(self, target: int, reference: dict) -> None:
        self.target = target

    def quality(self, predictor: Predictor) -> dict[str, float]:
        return {"closeness": -abs(self.target - predictor.value)}

    def latency(self, predictor: Predictor) -> dict[str, float]:
        return {"latency_ms_p50": 1.0, "latency_ms_p90": 1.0}

    def evaluate(self, predictor: Predictor, label: str = "") -> dict[str, float]:
        return {**self.quality(predictor), **self.latency(predictor)}


class CounterTask:
    name: ClassVar[str] = "counter"
    primary_metric: ClassVar[str] = "closeness"
    metrics: ClassVar[tuple[Metric, ...]] = (Metric("closeness", "closeness"),)
    data_config = CounterData
    evaluation_config = CounterEvaluation
    stage_configs: ClassVar[dict[str, type]] = {"finetune": CounterFinetune, "distill": CounterDistill}
    seen: ClassVar[dict[str, Any]] = {}

    def load(self, kind: str, path: Path, device: str = "cpu", threads: int = 0) -> Predictor:
        return Predictor(path)

    def eval_set(self, evaluation: CounterEvaluation) -> int:
        return evaluation.target

    def evaluate_teacher(self, teacher: Path, data: int, device: str) -> tuple[dict, dict]:
        self.seen.setdefault("evaluated_teachers", []).append(Path(teacher))
        return Evaluator(data, {}).quality(Predictor(teacher)), {}

    def evaluator(self, data: int, reference: dict) -> Evaluator:
        return Evaluator(data, reference)

    def finetune(self, cfg: CounterFinetune, ctx: StageContext) -> StageResult:
        labelled = Path(ctx.inputs.data.labelled).read_text().split()
        ctx.artifact_dir.mkdir(parents=True)
        value = Predictor(ctx.input.path).value + cfg.steps * len(labelled)
        (ctx.artifact_dir / "model.json").write_text(json.dumps({"value": value}))
        return StageResult({"steps": cfg.steps})

    def distill(self, cfg: CounterDistill, ctx: StageContext) -> StageResult:
        self.seen["distill_teacher"] = ctx.teacher
        ctx.artifact_dir.mkdir(parents=True)
        value = Predictor(ctx.teacher).value - cfg.shrink
        (ctx.artifact_dir / "model.json").write_text(json.dumps({"value": value}))
        return StageResult({})


@pytest.fixture
def counter_task(monkeypatch: pytest.MonkeyPatch) -> CounterTask:
    module = types.ModuleType("edgedistill_test_counter")
    module.TASK = CounterTask()
    monkeypatch.setitem(sys.modules, "edgedistill_test_counter", module)
    monkeypatch.setitem(TASKS, "counter", "edgedistill_test_counter")
    CounterTask.seen.clear()
    import edgedistill.recipe as recipe_module

    monkeypatch.setattr(recipe_module, "_RECIPE_MODELS", {})
    return module.TASK


def write(path: Path, data: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data))
    return path


def counter_recipe(tmp_path: Path, **changes: Any) -> dict:
    encoder = tmp_path / "encoder"
    encoder.mkdir(exist_ok=True)
    (encoder / "model.json").write_text(json.dumps({"value": 1}))
    labelled = tmp_path / "labelled.txt"
    labelled.write_text("a b")
    return {"name": "counter", "task": "counter", "teacher": str(encoder), "data": {"labelled": str(labelled)},
            "evaluation": {"target": 7},
            "stages": [{"type": "finetune", "steps": 3}, {"type": "distill", "shrink": 2}], **changes}


def test_task_sections_and_stage_configs_are_validated_by_the_tasks_classes(tmp_path: Path,
                                                                          counter_task: CounterTask) -> None:
    from edgedistill.recipe import load_recipe

    recipe = load_recipe(write(tmp_path / "r.yaml", counter_recipe(tmp_path)))
    assert isinstance(recipe.data, CounterData) and isinstance(recipe.evaluation, CounterEvaluation)
    assert [type(s) for s in recipe.stages] == [CounterFinetune, CounterDistill]

    bad = counter_recipe(tmp_path, stages=[{"type": "finetune", "stepz": 3}])
    with pytest.raises(RecipeError, match=r"stages\.0\.stepz: unknown key 'stepz'; did you mean 'steps'"):
        load_recipe(write(tmp_path / "bad.yaml", bad))
    with pytest.raises(RecipeError, match=r"unknown stage type 'prune' for task counter; expected one of "
                                          r"\['distill', 'export', 'finetune', 'profile', 'quantize'\]"):
        load_recipe(write(tmp_path / "bad.yaml", counter_recipe(tmp_path, stages=[{"type": "prune"}])))
    with pytest.raises(RecipeError, match=r"data\.labelled: required field is missing"):
        load_recipe(write(tmp_path / "bad.yaml", counter_recipe(tmp_path, data={"seed": 1})))


def test_embedding_recipes_have_no_finetune_stage(tmp_path: Path, tiny_world: dict) -> None:
    from edgedistill.recipe import load_recipe
    from tests.conftest import tiny_recipe, write_recipe

    recipe = tiny_recipe(tiny_world)
    recipe["stages"].insert(0, {"type": "finetune"})
    with pytest.raises(RecipeError, match="unknown stage type 'finetune' for task embedding"):
        load_recipe(write_recipe(tmp_path / "r.yaml", recipe))


def test_finetuned_teacher_is_the_teacher_of_later_stages_and_of_the_report(tmp_path: Path,
                                                                           counter_task: CounterTask) -> None:
    from edgedistill.recipe import load_recipe
    from edgedistill.runner import Runner

    recipe = load_recipe(write(tmp_path / "r.yaml", counter_recipe(tmp_path)))
    records = Runner(recipe, tmp_path / "runs").run()
    finetuned = records[0].artifact.path
    assert records[0].artifact.kind == "teacher" and (finetuned / "model.json").is_file()
    # the pretrained encoder is never evaluated as a teacher; the fine-tuned one is (1 + 3 * 2 = 7 = target)
    assert counter_task.seen["evaluated_teachers"] == [finetuned]
    assert records[0].evaluation["closeness"] == 0
    assert counter_task.seen["distill_teacher"] == finetuned
    assert records[1].evaluation["closeness"] == -2
    teacher = json.loads((tmp_path / "runs" / "counter" / "teacher.json").read_text())
    assert teacher["path"] == str(finetuned) and teacher["evaluation"]["closeness"] == 0

    # a rerun reuses both stages; changing the labelled data (same path, new content) reruns the finetune
    again = Runner(recipe, tmp_path / "runs").run()
    assert all(r.reused for r in again)
    (tmp_path / "labelled.txt").write_text("a b c")
    third = Runner(recipe, tmp_path / "runs").run()
    assert not third[0].reused and third[0].evaluation["closeness"] == -3
