"""Does a refactor change what the chain produces? Run the same tiny recipe with two checkouts of edgedistill
and compare every quality metric and every artifact file, stage by stage.

    .venv/bin/python scripts/version_equivalence.py OLD_CHECKOUT NEW_CHECKOUT [--work DIR]

e.g. ``git worktree add --detach /tmp/old <commit>`` for the old side. The tiny world (models built in code by
tests/tiny.py, seeded) is made once and shared, the export is not fused and the quantization has one candidate,
so nothing timing-driven decides an output. Latencies and paths are reported apart: they differ by nature.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def recipe(world: Path) -> dict:
    return {
        "name": "tiny", "teacher": str(world / "teacher"), "data": {"train": str(world / "train.txt"), "seed": 0},
        "evaluation": {"sts": str(world / "sts"), "heldout": str(world / "heldout.txt"), "heldout_sentences": 40,
                       "retrieval": str(world / "retrieval"), "latency_sentences": 5, "batch_size": 16},
        "stages": [
            {"type": "distill", "student": {"init": str(world / "student"), "layers": [0, 2],
                                            "projection_sentences": 100},
             "train_sentences": 200, "epochs": 1, "batch_size": 32, "eval_steps": 2},
            {"type": "export", "exporter": "torchscript", "optimize": "never"},
            {"type": "quantize", "max_drop": 0.5, "on_fail": "warn", "search": {"sensitivity": "off"}},
        ],
        "threads": 1,
    }


def worker(source: Path, work: Path, world: Path) -> None:
    """In a child process: run the recipe with ``source``'s edgedistill; write metrics and file hashes."""
    sys.path[:0] = [str(source), str(ROOT)]  # the checkout under test first; tests.tiny from this one
    os.environ.update(EDGEDISTILL_CACHE=str(work / "cache"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    import yaml

    import edgedistill
    from edgedistill.recipe import load_recipe

    assert Path(edgedistill.__file__).is_relative_to(source), edgedistill.__file__
    path = work / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe(world)))
    if (source / "edgedistill" / "pipeline.py").is_file():
        from edgedistill.pipeline import run_recipe

        records = run_recipe(load_recipe(path), work / "runs")
    else:  # before the pipeline module: the runner wrote the report and bundle itself
        from edgedistill.runner import Runner

        records = Runner(load_recipe(path), work / "runs").run()
    out = {r.type: {
        "evaluation": {k: v for k, v in r.evaluation.items() if "latency" not in k},
        "files": {p.relative_to(r.artifact.path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                  for p in sorted(r.artifact.path.rglob("*")) if p.is_file()},
    } for r in records}
    (work / "result.json").write_text(json.dumps(out, indent=1))


def make_world(world: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.tiny import build_st_model, make_sentences, write_retrieval, write_sts

    build_st_model(world / "teacher", family="mpnet", hidden=32, layers=2, seed=0)
    build_st_model(world / "student", family="bert", hidden=16, layers=3, seed=1)
    write_sts(world / "sts")
    write_retrieval(world / "retrieval")
    (world / "train.txt").write_text("\n".join(make_sentences(300, seed=5)) + "\n")
    (world / "heldout.txt").write_text("\n".join(make_sentences(40, seed=6)) + "\n")


def compare(old: dict, new: dict) -> list[str]:
    lines = []
    for stage in old:
        a, b = old[stage], new.get(stage, {"evaluation": {}, "files": {}})
        shared = set(a["evaluation"]) & set(b["evaluation"])
        worst = max((abs(a["evaluation"][k] - b["evaluation"][k]) for k in shared), default=float("nan"))
        same = sorted(f for f in a["files"] if b["files"].get(f) == a["files"][f])
        differ = sorted(f for f in a["files"] if f in b["files"] and b["files"][f] != a["files"][f])
        lines.append(f"{stage}: {len(shared)} metrics, max |old - new| {worst:.3g}; metrics only old "
                     f"{sorted(set(a['evaluation']) - shared)}, only new {sorted(set(b['evaluation']) - shared)}; "
                     f"files identical {len(same)}, different {differ}, only old {sorted(set(a['files']) - set(b['files']))}, "
                     f"only new {sorted(set(b['files']) - set(a['files']))}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgedistill-equivalence"))
    parser.add_argument("--worker", nargs=3, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    world = args.work / "world"
    if not world.is_dir():
        make_world(world)
    results = []
    for side, source in (("old", args.old), ("new", args.new)):
        work = args.work / side
        subprocess.run(["rm", "-rf", str(work)], check=True)
        work.mkdir(parents=True)
        subprocess.run([sys.executable, __file__, str(args.old), str(args.new), "--worker",
                        str(source.resolve()), str(work), str(world)], check=True, cwd=work)
        results.append(json.loads((work / "result.json").read_text()))
    print("\n".join(compare(*results)))


if __name__ == "__main__":
    main()
