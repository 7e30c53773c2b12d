"""Stage keys never go stale: local files enter keys by content, and every input a stage reads is in its key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgedistill.recipe import load_recipe
from edgedistill.runner import Runner
from tests.conftest import tiny_recipe, write_recipe


def _distill_only(world: dict, tmp_path: Path, **changes: object) -> dict:
    recipe = tiny_recipe(world, **changes)
    recipe["stages"] = [recipe["stages"][0]]
    recipe["stages"][0].update(train_sentences=64, eval_steps=0)
    return recipe


def _run(tmp_path: Path, recipe: dict, name: str = "r.yaml") -> list:
    return Runner(load_recipe(write_recipe(tmp_path / name, recipe)), tmp_path / "runs").run()


@pytest.fixture
def local_world(tiny_world: dict, tmp_path: Path) -> dict:
    """The tiny world with the teacher and the training text copied into this test's folder (edited in place)."""
    world = dict(tiny_world)
    world["teacher"] = Path(shutil.copytree(tiny_world["teacher"], tmp_path / "my-teacher"))
    world["train"] = Path(shutil.copy(tiny_world["train"], tmp_path / "sentences.txt"))
    return world


def test_unchanged_inputs_reuse_every_stage(tmp_path: Path, local_world: dict) -> None:
    first = _run(tmp_path, _distill_only(local_world, tmp_path))
    again = _run(tmp_path, _distill_only(local_world, tmp_path))
    assert [r.dir for r in again] == [r.dir for r in first] and all(r.reused for r in again)


def _perturb_weights(model_dir: Path) -> None:
    """'Retrain' a model in place: same path, same file size, new weights."""
    import torch
    from safetensors.torch import load_file, save_file

    weights = next(model_dir.rglob("model.safetensors"))
    tensors = load_file(weights)
    name = next(k for k, v in tensors.items() if v.dtype == torch.float32 and v.ndim == 2)
    tensors[name] = tensors[name] + 0.01
    save_file(tensors, weights, metadata={"format": "pt"})


def test_teacher_retrained_in_place_reruns_distill(tmp_path: Path, local_world: dict) -> None:
    first = _run(tmp_path, _distill_only(local_world, tmp_path))
    _perturb_weights(local_world["teacher"])
    second = _run(tmp_path, _distill_only(local_world, tmp_path))
    assert second[0].dir != first[0].dir and not second[0].reused


def test_local_student_init_changed_in_place_reruns_distill(tmp_path: Path, local_world: dict) -> None:
    student = Path(shutil.copytree(local_world["student"], tmp_path / "my-student"))
    recipe = _distill_only(local_world, tmp_path)
    recipe["stages"][0]["student"]["init"] = str(student)
    first = _run(tmp_path, recipe)
    _perturb_weights(student)
    second = _run(tmp_path, recipe)
    assert second[0].dir != first[0].dir and not second[0].reused


def test_sentence_file_rewritten_in_place_reruns_distill(tmp_path: Path, local_world: dict) -> None:
    first = _run(tmp_path, _distill_only(local_world, tmp_path))
    lines = local_world["train"].read_text().splitlines()
    local_world["train"].write_text("\n".join(reversed(lines)) + "\n")  # same path, same size, other order
    second = _run(tmp_path, _distill_only(local_world, tmp_path))
    assert second[0].dir != first[0].dir and not second[0].reused


def test_changing_only_the_selection_set_reruns_distill(tmp_path: Path, local_world: dict) -> None:
    recipe = _distill_only(local_world, tmp_path)
    first = _run(tmp_path, recipe)
    other_sts = Path(shutil.copytree(local_world["sts"], tmp_path / "other-sts"))
    dev = next(other_sts.rglob("*dev*"))
    dev.write_text(dev.read_text().replace("\t4.", "\t1."))  # other gold scores on the dev split
    recipe["evaluation"]["sts"] = str(other_sts)
    second = _run(tmp_path, recipe, "r2.yaml")
    assert second[0].dir != first[0].dir and not second[0].reused


def test_changing_only_the_latency_sample_reuses_distill(tmp_path: Path, local_world: dict) -> None:
    """Settings distill does not read (here the latency sample) do not retrain it; it is only re-evaluated."""
    recipe = _distill_only(local_world, tmp_path)
    first = _run(tmp_path, recipe)
    recipe["evaluation"]["latency_sentences"] = 3
    second = _run(tmp_path, recipe, "r2.yaml")
    assert second[0].dir == first[0].dir and second[0].reused
