"""Recipe validation: typed stages, order checks, overrides, and readable errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgedistill.errors import RecipeError
from edgedistill.recipe import DistillStage, apply_override, load_recipe, shipped_recipes_dir
from tests.conftest import tiny_recipe, write_recipe


@pytest.mark.parametrize("name", ["mpnet-to-tiny.yaml", "mpnet-to-small.yaml", "mpnet-6layer.yaml", "smoke.yaml",
                                  "mpnet-to-tiny-gpu.yaml"])
def test_shipped_recipes_validate(name: str) -> None:
    recipe = load_recipe(shipped_recipes_dir() / name)
    assert [s.type for s in recipe.stages] == ["distill", "export", "quantize", "profile"]
    assert isinstance(recipe.stages[0], DistillStage)


def test_shipped_recipes_say_how_to_run_them() -> None:
    for path in shipped_recipes_dir().glob("*.yaml"):
        head = path.read_text().splitlines()[:4]
        assert head[0].startswith("# ")
        assert any(f"edgedistill run recipes/{path.name}" in line for line in head), path


def test_override_is_applied_and_validated(tmp_path: Path, tiny_world: dict) -> None:
    path = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_world))
    recipe = load_recipe(path, ["stages.0.epochs=3", "stages.0.student.layers=[1, 2]"])
    assert recipe.stages[0].epochs == 3
    assert recipe.stages[0].student.layers == [1, 2]
    with pytest.raises(RecipeError, match=r"stages\.0\.epochs"):
        load_recipe(path, ["stages.0.epochs=-1"])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("stages.0.epoch=2", r"stages\.0\.epoch: unknown key 'epoch'; did you mean 'epochs'"),
        ("teachr=x", r"did you mean 'teacher'"),
        ("stages.0.type=distil", r"unknown stage type 'distil'"),
        ("stages.1={type: quantize}", r"stages\.1 \(quantize\) needs a onnx input"),
        ("stages.0.student.layers=[3, 1]", r"ascending"),
        ("stages.2.max_drop=2", r"stages\.2\.max_drop"),
        ("stages.9.epochs=1", r"not an index of a list of 4"),
        ("stages.0.epochs", r"expected KEY=VALUE"),
    ],
)
def test_bad_recipes_name_the_field(tmp_path: Path, tiny_world: dict, override: str, expected: str) -> None:
    path = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_world))
    with pytest.raises(RecipeError, match=expected):
        load_recipe(path, [override])


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="no such recipe"):
        load_recipe(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(RecipeError, match="expected a mapping"):
        load_recipe(tmp_path / "list.yaml")


def test_missing_required_field(tmp_path: Path, tiny_world: dict) -> None:
    recipe = tiny_recipe(tiny_world)
    del recipe["teacher"]
    with pytest.raises(RecipeError, match="teacher: required field is missing"):
        load_recipe(write_recipe(tmp_path / "r.yaml", recipe))


def test_apply_override_creates_nested_sections() -> None:
    data: dict = {"stages": [{"type": "distill"}]}
    apply_override(data, "evaluation.sts=null")
    apply_override(data, "stages.0.student.init=foo")
    assert data == {"stages": [{"type": "distill", "student": {"init": "foo"}}], "evaluation": {"sts": None}}


def test_a_shipped_recipe_loads_by_name_from_the_package() -> None:
    from edgedistill.recipe import find_recipe

    assert find_recipe("mpnet-to-tiny") == shipped_recipes_dir() / "mpnet-to-tiny.yaml"
    assert shipped_recipes_dir().parent.name == "edgedistill"  # inside the package: it ships in the wheel
    assert load_recipe("smoke").name == "smoke"
