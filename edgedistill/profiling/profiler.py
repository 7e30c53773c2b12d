"""Profile an ONNX bundle on each target, and the chain's earlier artifacts beside it on this machine.

Every model is measured by the same code (bench.py; torch_bench.py wraps the same timing functions for
PyTorch models) on the same sentences with the same settings, back to back in one run, so each speed-up is
a ratio of two numbers measured side by side.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgedistill.profiling.bundle import make_bench_bundle
from edgedistill.profiling.targets import SshDevice, run_local_onnx, run_local_torch

log = logging.getLogger(__name__)

TORCH_KINDS = ("teacher", "sentence-transformer")


@dataclass(frozen=True)
class ChainItem:
    """One artifact of a run: the stage that made it, its folder name (``teacher`` for the teacher), kind, path."""

    stage: str
    dir: str
    kind: str
    path: Path

    def label(self, precision: str) -> str:
        if self.kind in TORCH_KINDS:
            who = "teacher" if self.kind == "teacher" else "student"
            return f"{who} · PyTorch {precision}"
        return f"{self.stage} · ONNX {precision}"


def upstream_chain(artifact: Path, kind: str = "onnx") -> list[ChainItem]:
    """The artifacts that led to ``artifact`` (oldest first, ``artifact`` last), read from each stage's config.json."""
    from edgedistill import stages

    items: list[ChainItem] = []
    path = Path(artifact)
    while True:
        config_file = path.parent / "config.json"
        if path.name != "artifact" or not config_file.is_file():
            break
        config = json.loads(config_file.read_text())
        items.append(ChainItem(config["type"], path.parent.name, stages.output_kind(config["type"]), path))
        if config.get("input_kind") == "teacher" or "input_path" not in config:
            break
        path = Path(config["input_path"])
    if not items:
        items.append(ChainItem("input", Path(artifact).name, kind, Path(artifact)))
    return items[::-1]


def is_sentence_transformer(path: Path | None) -> bool:
    return path is not None and (Path(path) / "modules.json").is_file()


def bench_settings(cfg: Any) -> dict[str, Any]:
    """The bench.py settings a ProfileStage config stands for."""
    from edgedistill.profiling.bench import DEFAULT_SETTINGS

    return {key: getattr(cfg, key) for key in DEFAULT_SETTINGS}


def precision(result: dict[str, Any]) -> str:
    return "int8" if result.get("model", {}).get("quantized") else "fp32"


def _tag(model_dir: Path, sentences: list[str], settings: dict[str, Any]) -> str:
    blob = json.dumps([str(model_dir), sentences, settings], sort_keys=True).encode()
    return "bench-" + hashlib.sha256(blob).hexdigest()[:12]


def profile(item: ChainItem, sentences: list[str], settings: dict[str, Any], targets: Iterable[Any],
            work_dir: Path, compare: Iterable[ChainItem] = (), run_dir: str = "runs/<recipe>") -> list[dict[str, Any]]:
    """Measure ``item`` (an ONNX bundle) on every target, and ``compare`` items on the local target.

    Writes the bench bundle to ``work_dir/bench`` (kept with the stage so it can be run by hand) and returns
    one measurement per (target, artifact): ``{target, artifact, stage, label, runtime, precision, profiled,
    result}``.
    """
    bundle = make_bench_bundle(item.path, sentences, settings, Path(work_dir) / "bench", run_dir)
    compare, targets = list(compare), list(targets)
    out: list[dict[str, Any]] = []
    total = len(targets) + (len(compare) if any(t.is_local for t in targets) else 0)
    t0 = time.monotonic()

    def add(target: str, it: ChainItem, result: dict[str, Any], profiled: bool) -> None:
        prec = precision(result)
        out.append({"target": target, "artifact": it.dir, "stage": it.stage, "label": it.label(prec),
                    "runtime": result["runtime"], "precision": prec, "profiled": profiled, "result": result})
        lat = result["latency_ms"][str(result["headline_threads"])]
        log.info("profile %s on %s: batch-1 p50 %.2f ms (p90 %.2f, spread %.1f%%); %d/%d measured in %.0f s",
                 it.label(prec), target, lat["p50"], lat["p90"], lat.get("spread_pct", 0.0), len(out), total,
                 time.monotonic() - t0)

    for target in targets:
        if target.is_local:
            torch_items = [c for c in compare if c.kind in TORCH_KINDS]
            if torch_items:
                log.info("profile: measuring %s (PyTorch) on this machine", ", ".join(c.dir for c in torch_items))
                results = run_local_torch({c.dir: c.path for c in torch_items}, bundle)
                for c in torch_items:
                    add("local", c, results[c.dir], False)
            for c in compare:
                if c.kind not in TORCH_KINDS:
                    add("local", c, run_local_onnx(bundle, c.path, label="local"), False)
            add("local", item, run_local_onnx(bundle, label="local"), True)
        else:
            add(target.name, item, SshDevice(target).profile(bundle, _tag(item.path, sentences, settings)), True)
    return out


def speedups(measurements: list[dict[str, Any]], target: str = "local") -> dict[str, float]:
    """Teacher batch-1 p50 / artifact batch-1 p50, per artifact, on one target (only side-by-side ratios)."""
    from edgedistill.profiling.bench import headline

    on_target = {m["artifact"]: headline(m["result"]) for m in measurements if m["target"] == target}
    teacher = on_target.get("teacher")
    if not teacher:
        return {}
    return {a: teacher["latency_ms_p50"] / h["latency_ms_p50"] for a, h in on_target.items()}
