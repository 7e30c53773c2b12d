"""ARM parity (slow): the arm64 preset's INT8 graph on aarch64 onnxruntime under qemu-user gives x86's embeddings.

Needs Debian's qemu-user, apt-get and dpkg; the first run downloads an aarch64 CPython (Debian arm64 packages,
unpacked, not installed) and aarch64 wheels (about 1 minute, cached). Run with: pytest -m slow tests/test_arm_parity.py
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from edgedistill.pipeline import run_recipe
from edgedistill.recipe import load_recipe
from tests.conftest import tiny_recipe, write_recipe

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "arm_parity.py"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not all(shutil.which(t) for t in ("qemu-aarch64", "apt-get", "dpkg")),
                       reason="needs qemu-user, apt-get and dpkg (Debian: apt-get install -y qemu-user)"),
]


def _script():
    spec = importlib.util.spec_from_file_location("arm_parity", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("method", ["static", "dynamic"])
def test_arm64_int8_matches_x86(method: str, tmp_path: Path, tiny_world: dict,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = tiny_recipe(tiny_world)
    recipe["stages"] = recipe["stages"][:3]
    recipe["stages"][2].update(target="arm64", method=method, calibration_sentences=50)
    run_recipe(load_recipe(write_recipe(tmp_path / "r.yaml", recipe)), tmp_path / "runs")
    monkeypatch.setenv("EDGEDISTILL_CACHE", str(Path.home() / ".cache" / "edgedistill"))  # keep the aarch64 sysroot
    result = _script().parity(tmp_path / "runs" / "tiny" / "bundle")
    assert result["graph_portable"] and result["quantization"]["method"] == method
    for run in result["arm"]:
        assert run["machine"] == "aarch64" and run["min_cosine"] >= 0.999, run
