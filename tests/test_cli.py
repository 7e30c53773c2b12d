"""The command line, driven with click's CliRunner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from edgedistill.cli import main
from tests.conftest import tiny_recipe, write_recipe


def test_help_lists_commands() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "validate", "report", "recipes", "assets"):
        assert command in result.output


def test_cli_import_is_light() -> None:
    code = "import sys, edgedistill.cli; print(sorted({'torch', 'onnxruntime', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_recipes_lists_shipped_recipes() -> None:
    result = CliRunner().invoke(main, ["recipes"])
    assert result.exit_code == 0
    names = [line.split("\t")[0] for line in result.output.splitlines()]
    assert "mpnet-to-tiny" in names and "smoke" in names


def test_validate_good_and_bad(tmp_path: Path, tiny_world: dict) -> None:
    path = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_world))
    ok = CliRunner().invoke(main, ["validate", str(path)])
    assert ok.exit_code == 0 and "valid" in ok.output
    bad = CliRunner().invoke(main, ["validate", str(path), "--set", "stages.0.lerning_rate=1"])
    assert bad.exit_code == 2
    assert "stages.0.lerning_rate" in bad.output and "did you mean 'learning_rate'" in bad.output
    assert "Traceback" not in bad.output


def test_run_bad_recipe_exits_2_without_traceback(tmp_path: Path, tiny_world: dict) -> None:
    recipe = tiny_recipe(tiny_world)
    recipe["stages"][0]["student"]["layers"] = [2, 0]
    result = CliRunner().invoke(main, ["run", str(write_recipe(tmp_path / "r.yaml", recipe)),
                                       "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "stages.0.student.layers" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_run_then_report(tmp_path: Path, tiny_world: dict) -> None:
    path = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_world))
    runs = tmp_path / "runs"
    result = CliRunner().invoke(main, ["run", str(path), "--runs-dir", str(runs), "--set", "stages.3.sentences=5"])
    assert result.exit_code == 0, result.output
    assert "| teacher |" in result.output
    (runs / "tiny" / "report.md").unlink()
    again = CliRunner().invoke(main, ["report", str(runs / "tiny")])
    assert again.exit_code == 0, again.output
    assert (runs / "tiny" / "report.md").read_text() == again.output.rstrip("\n") + "\n"


def test_report_on_a_non_run_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 1
    assert "not a run folder" in result.output
