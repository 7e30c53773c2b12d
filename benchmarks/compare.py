"""edgedistill's students against what a user would otherwise pick, on one host with one evaluator.

    .venv/bin/pip install -e '.[bench]'        # model2vec and matplotlib, once
    flock /tmp/edgedistill-heavy.lock .venv/bin/python benchmarks/compare.py            # ~10 min first, ~4 min rerun
    flock /tmp/edgedistill-heavy.lock .venv/bin/python benchmarks/compare.py --retime   # measure latency again

Rows: the teacher all-mpnet-base-v2 (PyTorch fp32); all-MiniLM-L6-v2 and paraphrase-MiniLM-L3-v2 exported by
edgedistill's export stage (ONNX fp32) and quantized with onnxruntime's `quantize_dynamic` defaults (INT8);
a model2vec static model distilled from the same teacher (`model2vec.distill` defaults: PCA to 256-d, fp16);
and every stage of `runs/mpnet-to-tiny` and `runs/mpnet-to-small` (distill PyTorch fp32, export ONNX fp32,
quantize INT8 from the accuracy-aware search) with, beside it, `quantize_dynamic` defaults applied to the same
fp32 export. A run without a finished `final` is skipped with a note; rerun this command when it finishes.

Quality: the recipe's evaluator (STS-b test Spearman x100, nDCG@10 x100 on snli-retrieval), the same as the
runner uses; the teacher's is the runner's cached teacher evaluation and a run's stages reuse their
metrics.json. Other quality results are cached per model (keyed by its files and the evaluation config) in
~/.cache/edgedistill/bench/compare/, so a rerun only evaluates what changed. Speed: every model is loaded
at once and timed side by side at 1 thread, text in, embedding out (tokenisation included), on the runner's
latency sentences: each round times every sentence at batch 1 on every model in turn (order reversed every
other round), then each model embeds all sentences at batch 32. Timings are reused when the set of models is
unchanged, unless --retime; a changed set is timed again as a whole, so every ratio is a side-by-side one.
Writes benchmarks/results/compare.{json,csv,md,svg}.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

log = logging.getLogger("benchmarks.compare")
RESULTS = ROOT / "benchmarks" / "results"
RECIPE = ROOT / "recipes" / "mpnet-to-tiny.yaml"
RUNS = ("mpnet-to-tiny", "mpnet-to-small")
TEACHER = "sentence-transformers/all-mpnet-base-v2"
BASELINES = ("sentence-transformers/all-MiniLM-L6-v2", "sentence-transformers/paraphrase-MiniLM-L3-v2")
COMMAND = "flock /tmp/edgedistill-heavy.lock .venv/bin/python benchmarks/compare.py"
QUALITY = ("sts_spearman", "retrieval_ndcg10")
WEIGHT_SUFFIXES = {".onnx", ".data", ".safetensors", ".bin", ".pt"}
CSV_COLUMNS = ("key", "label", "group", "runtime", "params_m", "size_mb", "sts_spearman", "sts_retention_pct",
               "retrieval_ndcg10", "ndcg_retention_pct", "latency_ms_p50", "latency_ms_p90", "spread_pct", "speedup_b1",
               "sentences_per_s_b32", "speedup_b32", "front_sts", "front_ndcg", "quality_source", "path")


# -- pure logic (tested in tests/test_compare.py) --------------------------------------------------------
def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """For (latency, quality) points (lower latency and higher quality are better): whether each point is on
    the Pareto front, i.e. no other point is at least as fast and as good and strictly better in one."""
    front = []
    for i, (lat, q) in enumerate(points):
        dominated = any(ol <= lat and oq >= q and (ol < lat or oq > q)
                        for j, (ol, oq) in enumerate(points) if j != i)
        front.append(not dominated)
    return front


def add_ratios(rows: list[dict[str, Any]], teacher_key: str = "teacher") -> None:
    """Retention (% of the teacher), speed-ups versus the teacher and Pareto-front flags, in place."""
    teacher = next(r for r in rows if r["key"] == teacher_key)
    for r in rows:
        r["sts_retention_pct"] = _pct(r.get("sts_spearman"), teacher.get("sts_spearman"))
        r["ndcg_retention_pct"] = _pct(r.get("retrieval_ndcg10"), teacher.get("retrieval_ndcg10"))
        lat, tlat = r.get("latency_ms_p50"), teacher.get("latency_ms_p50")
        r["speedup_b1"] = tlat / lat if lat and tlat else None
        sps, tsps = r.get("sentences_per_s_b32"), teacher.get("sentences_per_s_b32")
        r["speedup_b32"] = sps / tsps if sps and tsps else None
        r["spread_pct"] = spread_pct(r.get("round_p50_ms") or [])
    timed = [r for r in rows if r.get("latency_ms_p50")]
    for flag, metric in (("front_sts", "sts_spearman"), ("front_ndcg", "retrieval_ndcg10")):
        for r, on in zip(timed, pareto_front([(r["latency_ms_p50"], r[metric]) for r in timed]), strict=True):
            r[flag] = on


def spread_pct(values: list[float]) -> float | None:
    """Range of per-round medians as % of their median: how far one round's timing can be off."""
    if len(values) < 2:
        return None
    ordered = sorted(values)
    median = (ordered[(len(ordered) - 1) // 2] + ordered[len(ordered) // 2]) / 2
    return 100 * (ordered[-1] - ordered[0]) / median if median else None


def _pct(value: float | None, reference: float | None) -> float | None:
    return 100 * value / reference if value is not None and reference else None


def _f(value: Any, fmt: str = ".2f") -> str:
    return format(value, fmt) if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The comparison as a Markdown table (Pareto-front rows marked: S = STS-b front, R = retrieval front)."""
    lines = [("| # | model | runtime | params M | size MB | STS-b | retention % | nDCG@10 | retention % "
             "| batch-1 p50 ms | speed-up | sentences/s (b32) | speed-up | Pareto |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, r in enumerate(rows, 1):
        front = "".join(m for m, flag in (("S", "front_sts"), ("R", "front_ndcg")) if r.get(flag)) or ""
        lines.append(
            f"| {n} | {r['label']} | {r['runtime']} | {_f(r.get('params_m'), '.1f')} | {_f(r.get('size_mb'), '.1f')} "
            f"| {_f(r.get('sts_spearman'))} | {_f(r.get('sts_retention_pct'), '.1f')} "
            f"| {_f(r.get('retrieval_ndcg10'))} | {_f(r.get('ndcg_retention_pct'), '.1f')} "
            f"| {_f(r.get('latency_ms_p50'))} | {_f(r.get('speedup_b1'), '.1f')}x "
            f"| {_f(r.get('sentences_per_s_b32'), '.0f')} | {_f(r.get('speedup_b32'), '.1f')}x | {front} |")
    return "\n".join(lines)


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """One line per model, the columns of CSV_COLUMNS (empty when unknown)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_COLUMNS})


def front_summary(rows: list[dict[str, Any]], flag: str) -> str:
    """The front's members, fastest first."""
    members = sorted((r for r in rows if r.get(flag)), key=lambda r: r["latency_ms_p50"])
    return ", ".join(f"{r['label']} ({r['runtime']})" for r in members)


# -- artifacts ----------------------------------------------------------------------------------------------
def work_dir() -> Path:
    from edgedistill.assets import cache_dir

    return cache_dir() / "bench" / "compare"


def files_key(path: Path) -> str:
    """A key of a model folder's weight and graph files (name, size, mtime): changes when the model does."""
    from edgedistill.contract import content_key

    files = sorted(p for p in Path(path).rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    return content_key([(str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in files])


def export_bundle(name: str, source: Path, evaluator) -> Path:
    """``source`` (sentence-transformers) exported by edgedistill's export stage with its defaults, cached."""
    from edgedistill.contract import Artifact, StageContext, content_key
    from edgedistill.integrity import write_json_atomic
    from edgedistill.recipe import ExportStage
    from edgedistill.stages import export

    cfg = ExportStage(type="export")
    folder = work_dir() / f"{name.split('/')[-1]}-onnx-{content_key(str(source), cfg.model_dump())}"
    if (folder / "metrics.json").is_file():
        return folder / "artifact"
    log.info("%s: exporting to ONNX with edgedistill's export stage (once)", name)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    ctx = StageContext(index=1, teacher=source, work_dir=tmp, device="cpu",
                       input=Artifact("sentence-transformer", source, "bench"), input_evaluation={},
                       _evaluator=lambda: evaluator)
    result = export.run(cfg, ctx)
    write_json_atomic(tmp / "metrics.json", result.metrics)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder / "artifact"


def plain_int8(name: str, source: Path) -> Path:
    """onnxruntime ``quantize_dynamic`` with its defaults on a bundle's model.onnx: what a user gets from the
    usual export-then-quantize recipe. Cached per source graph."""
    from onnxruntime.quantization import quantize_dynamic

    from edgedistill.manifest import write_manifest
    from edgedistill.quant.ort import quiet
    from edgedistill.runtime import read_manifest

    folder = work_dir() / f"{name}-ort-int8-{files_key(source)}"
    if (folder / "manifest.json").is_file():
        return folder
    log.info("%s: onnxruntime quantize_dynamic with default settings", name)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in source.iterdir():
        if f.is_file() and f.suffix not in WEIGHT_SUFFIXES and f.name != "quantization_config.json":
            shutil.copy2(f, tmp / f.name)
    with quiet():
        quantize_dynamic(str(source / "model.onnx"), str(tmp / "model.onnx"))
    manifest = read_manifest(tmp)
    manifest.pop("quantization", None)
    manifest["quantization"] = {"backend": "onnxruntime", "method": "quantize_dynamic defaults"}
    write_manifest(tmp, manifest)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def model2vec_model(teacher: Path) -> Path:
    """A model2vec static model distilled from the local teacher folder with ``model2vec.distill`` defaults."""
    from edgedistill.contract import content_key

    try:
        import model2vec
        from model2vec.distill import distill
    except ImportError as e:
        sys.exit(f"model2vec's distillation is missing ({e}); install the bench extra: "
                 ".venv/bin/pip install -e '.[bench]'")
    folder = work_dir() / f"model2vec-{model2vec.__version__}-{content_key(str(teacher), files_key(teacher))}"
    if (folder / "config.json").is_file():
        return folder
    log.info("model2vec: distilling a static model from %s (once; a forward pass per vocabulary token)", teacher)
    t0 = time.perf_counter()
    model = distill(model_name=str(teacher), device="cpu")
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    (tmp / "distill_seconds.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    log.info("model2vec: distilled in %.0f s", time.perf_counter() - t0)
    return folder


class StaticEncoder:
    """A model2vec StaticModel with the Encoder interface (L2-normalised float32)."""

    def __init__(self, path: Path) -> None:
        from model2vec import StaticModel

        self.model = StaticModel.from_pretrained(str(path))
        self.dimension = int(self.model.dim)
        self.params = int(self.model.embedding.size)

    def encode(self, sentences: list[str], batch_size: int = 64) -> Any:
        from edgedistill.runtime import normalise

        return normalise(self.model.encode(list(sentences), batch_size=batch_size, use_multiprocessing=False))


def open_encoder(kind: str, path: Path, threads: int) -> Any:
    """A torch, ONNX or model2vec encoder for ``path`` (torch: threads set process-wide by the caller)."""
    if kind == "model2vec":
        return StaticEncoder(path)
    from edgedistill.tasks.embedding.encoders import load_encoder

    return load_encoder(kind, path, device="cpu", threads=threads)


# -- the models ---------------------------------------------------------------------------------------------
def candidates(runner, evaluator, notes: list[str]) -> list[dict[str, Any]]:
    """Every model to compare, as rows without measurements (artifacts made and cached on the way)."""
    from edgedistill.assets import resolve
    from edgedistill.profiling.profiler import upstream_chain

    rows = [{"key": "teacher", "label": "all-mpnet-base-v2 (teacher)", "group": "teacher",
             "runtime": "PyTorch fp32", "kind": "teacher", "path": str(runner.teacher_path)}]
    for name in BASELINES:
        short = name.split("/")[-1]
        fp32 = export_bundle(name, resolve(name), evaluator)
        rows.append({"key": f"{short}/onnx-fp32", "label": short, "group": "off-the-shelf", "runtime": "ONNX fp32",
                     "kind": "onnx", "path": str(fp32)})
        rows.append({"key": f"{short}/ort-int8", "label": short, "group": "off-the-shelf",
                     "runtime": "ONNX int8 (ORT defaults)", "kind": "onnx", "path": str(plain_int8(short, fp32))})
    rows.append({"key": "model2vec", "label": "model2vec from the teacher", "group": "static",
                 "runtime": "static fp16 (PCA 256)", "kind": "model2vec",
                 "path": str(model2vec_model(runner.teacher_path))})
    for run in RUNS:
        final = ROOT / "runs" / run / "final"
        if not final.exists():
            notes.append(f"runs/{run}: no finished run (no runs/{run}/final), its rows are left out; after "
                         f"`edgedistill run recipes/{run}.yaml` finishes, rerun `{COMMAND}` to add them.")
            log.warning("%s", notes[-1])
            continue
        for item in upstream_chain(final.resolve()):
            runtime = {"distill": "PyTorch fp32", "export": "ONNX fp32",
                       "quantize": "ONNX int8 (accuracy-aware search)"}.get(item.stage, item.stage)
            row = {"key": f"{run}/{item.stage}", "label": f"edgedistill {run}", "group": "edgedistill",
                   "runtime": runtime, "kind": item.kind, "path": str(item.path), "stage_dir": item.dir}
            rows.append(row)
            if item.stage == "export":
                rows.append({"key": f"{run}/ort-int8", "label": f"edgedistill {run}", "group": "edgedistill",
                             "runtime": "ONNX int8 (ORT defaults)", "kind": "onnx",
                             "path": str(plain_int8(run, item.path))})
    for r in rows:
        r["files_key"] = files_key(Path(r["path"]))
    return rows


# -- quality ------------------------------------------------------------------------------------------------
def fill_quality(rows: list[dict[str, Any]], runner, evaluator) -> None:
    """Quality, parameters and size of every row: the teacher's from the runner's cache, a run's stages from
    their metrics.json (same evaluator), the rest evaluated here once and cached by files and eval config."""
    from edgedistill.contract import artifact_size_mb, content_key
    from edgedistill.integrity import write_json_atomic
    from edgedistill.runner import count_parameters

    eval_key = runner.eval_key()
    cache = work_dir() / "quality"
    cache.mkdir(parents=True, exist_ok=True)
    for r in rows:
        t0 = time.perf_counter()
        if r["key"] == "teacher":
            metrics, _ = runner.teacher_evaluation()
            source = "runner's teacher evaluation (cached)"
        else:
            metrics, source = None, ""
            stage_metrics = Path(r["path"]).parent / "metrics.json"
            if r.get("stage_dir") and stage_metrics.is_file():
                recorded = json.loads(stage_metrics.read_text())
                if recorded.get("eval_key") == eval_key and "params" in recorded.get("evaluation", {}):
                    metrics, source = recorded["evaluation"], f"{r['stage_dir']}/metrics.json"
            file = cache / f"{content_key(r['key'], r['files_key'], eval_key)}.json"
            if metrics is None and file.is_file():
                metrics, source = json.loads(file.read_text()), "cached by this benchmark"
            if metrics is None:
                log.info("%s · %s: evaluating quality", r["label"], r["runtime"])
                encoder = open_encoder(r["kind"], Path(r["path"]), threads=0)
                metrics = evaluator.quality(encoder)
                metrics["params"] = float(encoder.params if r["kind"] == "model2vec" else count_parameters(encoder))
                metrics["size_mb"] = artifact_size_mb(Path(r["path"]))
                write_json_atomic(file, metrics)
                source = "evaluated by this benchmark"
        r.update({k: metrics.get(k) for k in (*QUALITY, "size_mb")}, quality_source=source,
                 params_m=metrics["params"] / 1e6 if metrics.get("params") else None)
        log.info("%s · %s: STS-b %.2f, nDCG@10 %.2f, %.1f M params, %.1f MB (%s, %.0f s)", r["label"], r["runtime"],
                 r["sts_spearman"], r["retrieval_ndcg10"], r["params_m"] or 0, r["size_mb"] or 0, source,
                 time.perf_counter() - t0)


# -- speed --------------------------------------------------------------------------------------------------
def time_side_by_side(encoders: dict[str, Any], sentences: list[str], rounds: int,
                      batch_size: int = 32) -> dict[str, dict[str, Any]]:
    """Batch-1 latency (edgedistill.optimize's interleaved rounds) and batch-``batch_size`` throughput, every
    encoder in turn within each round (order reversed every other round)."""
    import numpy as np

    from edgedistill.optimize import interleaved_latency

    names = list(encoders)
    log.info("timing %d models at batch 1: %d rounds x %d sentences", len(names), rounds, len(sentences))
    out = interleaved_latency(encoders, sentences, rounds)
    rates: dict[str, list[float]] = {n: [] for n in names}
    log.info("timing %d models at batch %d: %d rounds", len(names), batch_size, rounds)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            encoders[name].encode(sentences, batch_size=batch_size)
            rates[name].append(len(sentences) / (time.perf_counter() - t0))
    for name in names:
        out[name]["sentences_per_s_b32"] = float(np.median(rates[name]))
        out[name]["round_sentences_per_s_b32"] = [round(x, 1) for x in rates[name]]
    return out


def fill_speed(rows: list[dict[str, Any]], sentences: list[str], rounds: int, previous: dict | None,
               retime: bool) -> dict[str, Any]:
    """Latency of every row, measured side by side, or the previous result's when the set of models is the
    same and --retime was not given. Returns how and when the timing was done."""
    import torch

    from edgedistill.profiling.bench import CpuWatch

    fingerprint = {r["key"]: r["files_key"] for r in rows}
    if previous and not retime and previous.get("timing", {}).get("models") == fingerprint:
        old = {r["key"]: r for r in previous["rows"]}
        for r in rows:
            r.update({k: old[r["key"]].get(k) for k in ("latency_ms_p50", "latency_ms_p90", "round_p50_ms",
                                                         "sentences_per_s_b32", "round_sentences_per_s_b32")})
        log.info("latency: same models as the last run, reusing its timings (--retime to measure again)")
        return previous["timing"]
    torch.set_num_threads(1)
    log.info("loading %d models for side-by-side timing at 1 thread", len(rows))
    encoders = {r["key"]: open_encoder(r["kind"], Path(r["path"]), threads=1) for r in rows}
    watch = CpuWatch()
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    timed = time_side_by_side(encoders, sentences, rounds)
    for r in rows:
        t = timed[r["key"]]
        r.update(latency_ms_p50=t["latency_ms_p50"], latency_ms_p90=t["latency_ms_p90"],
                 round_p50_ms=t["round_p50_ms"], sentences_per_s_b32=t["sentences_per_s_b32"],
                 round_sentences_per_s_b32=t["round_sentences_per_s_b32"])
        log.info("%s · %s: batch-1 p50 %.2f ms, %.0f sentences/s at batch 32", r["label"], r["runtime"],
                 t["latency_ms_p50"], t["sentences_per_s_b32"])
    return {"models": fingerprint, "date": time.strftime("%Y-%m-%d %H:%M"), "rounds": rounds, "threads": 1,
            "sentences": len(sentences), "seconds": round(time.perf_counter() - t0, 1),
            "load_average_1min": round(load, 2), **(watch.result() or {})}


# -- outputs ------------------------------------------------------------------------------------------------
GROUP_COLOURS = {"teacher": "#444444", "off-the-shelf": "#1f77b4", "static": "#9467bd", "edgedistill": "#d62728"}


def place_labels(points: list[tuple[float, float]], size: tuple[float, float] = (14.0, 10.0)) -> list[tuple[float, float]]:
    """Offsets (display units) for a small label beside each point such that no two labels overlap, where
    possible: the first free spot of a few around the point, in order of the points."""
    w, h = size
    spots = [(4, 2), (4, -h - 1), (-w - 4, 2), (-w - 4, -h - 1), (4, h + 4), (-w / 2, h + 4), (-w / 2, -2 * h - 3),
             (w + 8, 2), (-2 * w - 8, 2)]
    taken: list[tuple[float, float, float, float]] = [(x - 3, y - 3, x + 3, y + 3) for x, y in points]
    out = []
    for x, y in points:
        choice = spots[0]
        for dx, dy in spots:
            box = (x + dx, y + dy, x + dx + w, y + dy + h)
            if not any(box[0] < t[2] and t[0] < box[2] and box[1] < t[3] and t[1] < box[3] for t in taken):
                choice = (dx, dy)
                break
        taken.append((x + choice[0], y + choice[1], x + choice[0] + w, y + choice[1] + h))
        out.append(choice)
    return out


def write_chart(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Quality versus batch-1 latency (log scale) with each metric's Pareto front: top row the full range,
    bottom row zoomed on the models within 85% of the teacher. Points carry the table's row numbers."""
    try:
        import matplotlib
    except ImportError:
        sys.exit("matplotlib is missing; install the bench extra: .venv/bin/pip install -e '.[bench]'")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "edgedistill"  # stable ids: reruns give the same file for the same numbers
    numbered = [(i + 1, r) for i, r in enumerate(rows) if r.get("latency_ms_p50")]
    fig, axes = plt.subplots(2, 2, figsize=(13, 10.5))
    metrics = (("sts_spearman", "front_sts", "STS-b test Spearman x100"),
               ("retrieval_ndcg10", "front_ndcg", "retrieval nDCG@10 x100"))
    teacher = next(r for r in rows if r["key"] == "teacher")
    for col, (metric, flag, name) in enumerate(metrics):
        close = [(n, r) for n, r in numbered if r[metric] >= 0.85 * teacher[metric]]
        for row, (ax, shown) in enumerate(((axes[0][col], numbered), (axes[1][col], close))):
            for group, colour in GROUP_COLOURS.items():
                pts = [r for _, r in shown if r["group"] == group]
                if pts:
                    ax.scatter([r["latency_ms_p50"] for r in pts], [r[metric] for r in pts], c=colour, label=group,
                               s=[64 if r.get(flag) else 30 for r in pts], zorder=3,
                               edgecolors=["black" if r.get(flag) else colour for r in pts])
            front = sorted((r for _, r in shown if r.get(flag)), key=lambda r: r["latency_ms_p50"])
            if front:
                ax.step([r["latency_ms_p50"] for r in front], [r[metric] for r in front], where="post",
                        color="#999999", linestyle="--", linewidth=1, zorder=2, label="Pareto front")
            ax.set_xscale("log")
            xs = [r["latency_ms_p50"] for _, r in shown]
            ys = [r[metric] for _, r in shown]
            pad = (max(ys) - min(ys)) * 0.08 or 1.0
            ax.set_xlim(min(xs) / 1.4, max(xs) * 1.6)
            ax.set_ylim(min(ys) - pad, max(ys) + pad)
            ax.set_ylabel(name + (" (zoom)" if row else ""))
            ax.grid(True, which="both", linewidth=0.3, alpha=0.5)
            fig.canvas.draw()  # fixes the transforms, so labels can be placed in display units
            display = [tuple(ax.transData.transform((r["latency_ms_p50"], r[metric]))) for _, r in shown]
            for (n, r), (dx, dy) in zip(shown, place_labels(display), strict=True):
                ax.annotate(str(n), (r["latency_ms_p50"], r[metric]), textcoords="offset pixels", xytext=(dx, dy),
                            fontsize=8, color=GROUP_COLOURS.get(r["group"], "black"))
        axes[1][col].set_xlabel("batch-1 latency p50, ms (1 thread, text in, embedding out; log scale)")
    axes[0][0].legend(fontsize=8, loc="lower right")
    key = [f"{n}  {r['label']} · {r['runtime']}" for n, r in numbered]
    half = (len(key) + 1) // 2
    fig.text(0.06, 0.01, "\n".join(key[:half]), fontsize=8, va="bottom", family="monospace")
    fig.text(0.53, 0.01, "\n".join(key[half:]), fontsize=8, va="bottom", family="monospace")
    fig.suptitle(title + "; circled: on the Pareto front", fontsize=10)
    fig.tight_layout(rect=(0, 0.012 * (half + 1.5), 1, 1))
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)


def spread_note(rows: list[dict[str, Any]]) -> str:
    spreads = sorted((r["spread_pct"], r) for r in rows if r.get("spread_pct") is not None)
    if not spreads:
        return ""
    worst, r = spreads[-1]
    return (f"Round-to-round spread of each model's batch-1 median: {spreads[len(spreads) // 2][0]:.1f}% typical, "
            f"{worst:.1f}% at most ({r['label']} · {r['runtime']}); latencies closer than that are a tie, and so "
            "is a place on the front won by less.")


README_START, README_END = "<!-- compare:start -->", "<!-- compare:end -->"


def replace_section(text: str, body: str, start: str = README_START, end: str = README_END) -> str | None:
    """``text`` with what lies between the ``start`` and ``end`` marker lines replaced by ``body``; None when
    the markers are missing or out of order."""
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        return None
    return text[: i + len(start)] + "\n" + body.strip("\n") + "\n" + text[j:]


def results_block(rows: list[dict[str, Any]], chart: str) -> list[str]:
    """Table, both fronts, the timing spread and the chart, as Markdown lines."""
    return [markdown_table(rows), "",
            f"STS-b Pareto front, fastest first: {front_summary(rows, 'front_sts')}.", "",
            f"nDCG@10 Pareto front, fastest first: {front_summary(rows, 'front_ndcg')}.", "",
            spread_note(rows), "", f"![quality versus latency]({chart})", ""]


def readme_section(result: dict[str, Any]) -> str:
    """What the README shows between its compare markers: command, host, table, fronts, chart, notes."""
    host, timing = result["host"], result["timing"]
    lines = [
        "```bash", ".venv/bin/pip install -e '.[bench]'   # model2vec and matplotlib", COMMAND, "```", "",
        (f"On {host.get('cpu')} ({host.get('cores')} cores), {result['date']}; latency timed {timing['date']} at 1 thread "
        f"in {timing['rounds']} interleaved rounds x {timing['sentences']} sentences. Full notes: "
        "[benchmarks/results/compare.md](benchmarks/results/compare.md); data: `compare.json` / `compare.csv`."), "",
        *results_block(result["rows"], "benchmarks/results/compare.svg")]
    lines += [f"- {n}" for n in result["notes"] if n.startswith("runs/")]
    return "\n".join(lines)


def markdown(result: dict[str, Any]) -> str:
    host, timing = result["host"], result["timing"]
    busy = (f"; other processes kept {timing['other_cores']:.2f} cores busy while timing"
            if timing.get("other_cores") is not None else "")
    lines = [
        "# edgedistill versus what users would otherwise pick", "",
        (f"`{result['command']}` on {host.get('cpu')} ({host.get('cores')} cores), onnxruntime "
        f"{host.get('onnxruntime')}, {result['date']}. Timed {timing['date']}: {timing['rounds']} interleaved rounds "
        f"x {timing['sentences']} sentences at 1 thread{busy} (1-min load average {timing['load_average_1min']} "
        "when timing began)."), "",
        ("Quality: STS-b test Spearman x100 and retrieval nDCG@10 x100 (snli-retrieval, 500 queries / 2,000 "
        "documents), the recipe's evaluator; retention = % of the teacher. Latency: batch-1 median, text in, "
        "embedding out, tokenisation included; sentences/s at batch 32 (median of rounds); speed-ups are "
        "side-by-side ratios to the teacher. Size: weight and graph files. Pareto: on the latency-quality front "
        "for STS-b (S) or nDCG@10 (R)."), "",
        *results_block(result["rows"], "compare.svg")]
    lines += [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--retime", action="store_true", help="measure latency again even if no model changed")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # batch-32 tokenisation on the one timed thread
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # model2vec and transformers load local folders only
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    t0 = time.perf_counter()

    from edgedistill.assets import resolve
    from edgedistill.recipe import load_recipe
    from edgedistill.runner import Runner
    from edgedistill.stages.profile import host_facts

    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    previous_file = out / "compare.json"
    previous = json.loads(previous_file.read_text()) if previous_file.is_file() else None
    runner = Runner(load_recipe(RECIPE), runs_dir=ROOT / "runs")
    runner.teacher_path = resolve(TEACHER)
    evaluator = runner.evaluator()
    notes: list[str] = []
    rows = candidates(runner, evaluator, notes)
    log.info("%d models: %s", len(rows), ", ".join(r["key"] for r in rows))
    fill_quality(rows, runner, evaluator)
    timing = fill_speed(rows, runner.eval_set().latency_sentences, args.rounds, previous, args.retime)
    add_ratios(rows)
    notes += [
        ("model2vec: `model2vec.distill` with its defaults (vocabulary of the teacher's tokenizer, PCA to 256 "
        "dimensions, SIF weighting, fp16 weights) from the same local teacher folder; `model2vec[distill]` caps "
        "transformers below 5.4, so the bench extra installs model2vec and skeletoken without it beside our pins."),
        ("ORT defaults: `onnxruntime.quantization.quantize_dynamic(fp32, int8)` with no options, on the same fp32 "
        "graph edgedistill exported (per-tensor weights, the Gemm projection left in fp32)."),
        ("Off-the-shelf models are 384-d; edgedistill's students are projected into the teacher's 768-d space "
        "(an app can query an index the teacher built), which the table does not credit."),
    ]
    result = {"command": COMMAND + "".join(f" {a}" for a in sys.argv[1:]), "date": time.strftime("%Y-%m-%d %H:%M"),
              "host": {**host_facts(), "platform": platform.platform()}, "timing": timing, "notes": notes,
              "seconds": round(time.perf_counter() - t0), "rows": rows}
    previous_file.write_text(json.dumps(result, indent=2, default=str) + "\n")
    write_csv(rows, out / "compare.csv")
    write_chart(rows, out / "compare.svg", f"edgedistill vs alternatives, {result['host'].get('cpu')}, 1 thread")
    (out / "compare.md").write_text(markdown(result))
    readme = ROOT / "README.md"
    updated = replace_section(readme.read_text(), readme_section(result)) if args.results == str(RESULTS) else None
    if updated is not None:
        readme.write_text(updated)
        log.info("updated the README section between %s and %s", README_START, README_END)
    log.info("wrote %s/compare.{json,csv,md,svg} in %.0f s", out, time.perf_counter() - t0)


if __name__ == "__main__":
    main()
