"""Shared fixtures: tiny models and data built in code, an isolated cache, no network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tests.tiny import build_st_model, make_sentences, write_retrieval, write_sts

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# CPU bf16 autocast only where a test asks for it: results must not depend on the CPU the suite runs on.
os.environ["EDGEDISTILL_CPU_BF16"] = "0"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own asset/label cache."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("EDGEDISTILL_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny MPNet teacher (32-d), a tiny 3-layer BERT student init (16-d) and small data files."""
    root = tmp_path_factory.mktemp("world")
    world = {
        "teacher": build_st_model(root / "teacher", family="mpnet", hidden=32, layers=2, seed=0),
        "student": build_st_model(root / "student", family="bert", hidden=16, layers=3, seed=1),
        "sts": write_sts(root / "sts"),
        "retrieval": write_retrieval(root / "retrieval"),
        "train": root / "train.txt",
        "heldout": root / "heldout.txt",
    }
    world["train"].write_text("\n".join(make_sentences(300, seed=5)) + "\n")
    world["heldout"].write_text("\n".join(make_sentences(40, seed=6)) + "\n")
    return world


def tiny_recipe(world: dict[str, Path], **changes: object) -> dict:
    """A full-chain recipe over the tiny world, as a dict (tests tweak it, then write YAML)."""
    recipe = {
        "name": "tiny",
        "teacher": str(world["teacher"]),
        "data": {"train": str(world["train"]), "seed": 0},
        "evaluation": {"sts": str(world["sts"]), "heldout": str(world["heldout"]), "heldout_sentences": 40,
                       "retrieval": str(world["retrieval"]),
                       "latency_sentences": 5, "batch_size": 16},
        "stages": [
            {"type": "distill", "student": {"init": str(world["student"]), "layers": [0, 2],
                                            "projection_sentences": 100},
             "train_sentences": 200, "epochs": 1, "batch_size": 32},
            {"type": "export", "exporter": "torchscript"},
            {"type": "quantize", "max_drop": 0.5, "on_fail": "warn"},
            {"type": "profile", "sentences": 10, "warmup": 2},
        ],
        "threads": 1,
    }
    recipe.update(changes)
    return recipe


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path
