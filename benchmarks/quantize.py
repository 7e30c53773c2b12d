"""INT8 quantization methods side by side, on the default recipe's student and on the teacher.

    flock /tmp/edgedistill-heavy.lock .venv/bin/python benchmarks/quantize.py            # ~14 min, 25 CPU-min
    flock /tmp/edgedistill-heavy.lock .venv/bin/python benchmarks/quantize.py --no-teacher --no-inc   # ~3 min

Student: the export artifact of runs/mpnet-to-tiny when that run exists, else the smoke run's
(/tmp/runs/smoke), or --student PATH. Teacher: all-mpnet-base-v2 exported to ONNX here (cached).
Student: fp32; onnxruntime dynamic INT8 per tensor and per channel (8- and 7-bit weights); the word-embedding
table alone in INT8 (per row, ours; per tensor, onnxruntime's); the portable preset (dynamic 7-bit per channel
+ INT8 table), also with the feed-forward down-projections kept in fp32; static QDQ calibrated on in-domain
training sentences with MinMax, Entropy and Percentile (U8S8) and symmetric S8S8; the accuracy-aware search of
each target preset (what the quantize stage does) and, with INC installed on demand, Intel Neural Compressor's
autotune. Teacher (each variant takes ~1.5 min to score): fp32, onnxruntime's default dynamic INT8, the
portable preset with and without the FFN down-projections in fp32, static MinMax QDQ and the portable search.
Every variant is scored by the recipe's evaluator (STS-b test Spearman, retrieval nDCG@10, cosine to the fp32
model on training sentences) and timed in the same interleaved rounds (batch 1, text in, embedding out; and
batch 32). Finished variants are kept in --work and reused by the next run (delete it to start over).
Writes benchmarks/results/quantize.md and quantize.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from edgedistill.assets import cache_dir, resolve
from edgedistill.contract import artifact_size_mb, content_key
from edgedistill.integrity import sha256_file
from edgedistill.quant import calibration, graph, measure
from edgedistill.quant.ort import prepare, quantize_file
from edgedistill.quant.presets import PRESETS, QuantSettings
from edgedistill.quant.search import Budget, Search, SearchConfig
from edgedistill.recipe import load_recipe
from edgedistill.runner import Runner
from edgedistill.runtime import OnnxEncoder

ROOT = Path(__file__).resolve().parent.parent

log = logging.getLogger("benchmarks.quantize")
RESULTS = ROOT / "benchmarks" / "results"
RECIPE = ROOT / "recipes" / "mpnet-to-tiny.yaml"
B32 = "latency_ms_per_sentence_b32"


def find_student(explicit: str | None) -> Path:
    """The default recipe's fp32 export artifact, else the smoke run's."""
    if explicit:
        return Path(explicit)
    for run in (ROOT / "runs" / "mpnet-to-tiny", Path("/tmp/runs/smoke")):
        done = [p for p in run.glob("*-export-*") if (p / "metrics.json").is_file()]
        if done:
            return max(done, key=lambda p: p.stat().st_mtime) / "artifact"
    sys.exit("no exported student: run `edgedistill run recipes/mpnet-to-tiny.yaml` (or smoke) or pass --student")


def teacher_bundle(teacher: Path) -> Path:
    """The teacher as a plain (unfused) ONNX bundle, exported once and cached."""
    from sentence_transformers import SentenceTransformer

    from edgedistill.tasks.embedding.export import build_manifest, export_onnx

    folder = cache_dir() / "bench" / f"teacher-onnx-{content_key(str(teacher))}"
    if (folder / "manifest.json").is_file():
        return folder
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model = SentenceTransformer(str(teacher), device="cpu")
    log.info("exporting the teacher to ONNX (once)")
    inputs = export_onnx(model, tmp / "model.onnx", 18, "dynamo")
    model[0].tokenizer.save_pretrained(str(tmp))
    for extra in ("vocab.txt", "special_tokens_map.json", "chat_template.jinja"):
        (tmp / extra).unlink(missing_ok=True)
    build_manifest(model, tmp, 18, "dynamo", inputs)
    tmp.rename(folder)
    return folder


class Bench:
    """Variants of one fp32 bundle, each quantized, scored and kept for the final interleaved timing."""

    def __init__(self, name: str, source: Path, work: Path, evaluator, calib: list[str], proxy_sentences: list[str],
                 timing: list[str], max_evaluations: int, granularity: str) -> None:
        self.name, self.source, self.work = name, source, work
        self.evaluator, self.timing = evaluator, timing
        self.max_evaluations, self.granularity = max_evaluations, granularity
        self.calib_sentences = calib
        self.feeds = calibration.feeds(source, calib)
        self.proxy = measure.Proxy(source, proxy_sentences)
        self.prepared = work / "prepared.onnx"
        work.mkdir(parents=True, exist_ok=True)
        prepare(source / "model.onnx", self.prepared)
        self.nodes = graph.quantizable_nodes(self.prepared, ["MatMul", "Attention"])
        self.table = next((n.name for n in self.nodes if n.role == "embedding"), None)
        self.down = [n.name for n in graph.ffn_down_projections(self.nodes)]
        self.rows: list[dict] = []
        self.bundles: dict[str, Path] = {}
        # Finished variants are kept in progress.json, so a rerun after a crash picks up where it stopped.
        self.progress_path = work / "progress.json"
        stamp = {"source": str(source), "mtime": (source / "model.onnx").stat().st_mtime}
        self.progress = json.loads(self.progress_path.read_text()) if self.progress_path.is_file() else {}
        if self.progress.get("stamp") != stamp:
            self.progress = {"stamp": stamp, "done": {}}
        if "fp32" in self.progress["done"]:
            self.reference = self.progress["reference"]
        else:
            self.reference = evaluator.quality(OnnxEncoder(source))
            self.progress["reference"] = self.reference
        if not self.reuse("fp32"):
            self.add("fp32", source, {"method": "fp32"}, quality=self.reference)

    def reuse(self, key: str, searches: list | None = None) -> bool:
        """Take a variant finished by an earlier run of this benchmark (its bundle must still exist)."""
        done = self.progress["done"].get(key)
        if not done or not Path(done["row"]["bundle"]).exists():
            return False
        self.rows.append(done["row"])
        self.bundles[done["row"]["variant"]] = Path(done["row"]["bundle"])
        if searches is not None and done.get("search"):
            searches.append(done["search"])
        log.info("%s / %s: reused from an earlier run", self.name, done["row"]["variant"])
        return True

    def quality(self, bundle: Path) -> dict:
        """The evaluator's scores, once per distinct model file: a search trial identical to a fixed variant
        (the portable preset's all-INT8 trial, the teacher's FFN down-projections in fp32) is not scored again."""
        digest = sha256_file(bundle / "model.onnx")
        scored = self.progress.setdefault("quality", {})
        if digest in scored:
            log.info("%s: %s is the same model as one already scored; its scores are reused", self.name, bundle)
        else:
            scored[digest] = self.evaluator.quality(OnnxEncoder(bundle))
        return scored[digest]

    def folder(self, key: str) -> Path:
        folder = self.work / f"v-{content_key(key)}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for f in self.source.iterdir():
            if f.is_file() and f.suffix != ".onnx":
                shutil.copy2(f, folder / f.name)
        return folder

    def add(self, label: str, bundle: Path, config: dict, fp32_nodes: int = 0, seconds: float = 0.0,
            quality: dict | None = None, note: str = "", key: str | None = None, search: dict | None = None,
            proxy_cosine: float | None = None) -> None:
        t0 = time.perf_counter()
        quality = quality or self.quality(bundle)
        row = {"model": self.name, "variant": label, "config": config, "fp32_nodes": fp32_nodes,
               "sts_spearman": quality.get("sts_spearman"), "retrieval_ndcg10": quality.get("retrieval_ndcg10"),
               "teacher_cosine_mean": quality.get("teacher_cosine_mean"),
               "proxy_cosine": proxy_cosine if proxy_cosine is not None else self.proxy.cosine(bundle),
               "size_mb": artifact_size_mb(bundle),
               "seconds": round(seconds + time.perf_counter() - t0, 1), "note": note, "bundle": str(bundle)}
        for metric in ("sts_spearman", "retrieval_ndcg10"):
            ref = self.reference.get(metric)
            row[f"{metric}_retention_pct"] = 100 * row[metric] / ref if ref and row[metric] is not None else None
        self.rows.append(row)
        self.bundles[label] = bundle
        self.progress["done"][key or label] = {"row": row, "search": search}
        self.progress_path.write_text(json.dumps(self.progress, default=str))
        log.info("%s / %s: STS %.2f, retrieval %.2f, proxy %.5f, %.1f MB", self.name, label,
                 row["sts_spearman"] or float("nan"), row["retrieval_ndcg10"] or float("nan"), row["proxy_cosine"],
                 row["size_mb"])

    def variant(self, label: str, settings: QuantSettings, exclude: list[str] | None = None,
                table: str | None = None) -> None:
        """Quantize with ``settings``; ``table`` 'only' quantizes just the embedding table, 'per-tensor' uses
        onnxruntime's Gather quantization for it instead of ours."""
        if self.reuse(label):
            return
        t0 = time.perf_counter()
        folder = self.folder(label)
        exclude = list(exclude or [])
        if table == "only":
            from edgedistill.quant.ort import quantize_embedding

            shutil.copy2(self.prepared, folder / "model.onnx")
            quantize_embedding(folder / "model.onnx", self.table)
        elif table == "per-tensor":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            from edgedistill.quant.ort import quiet

            with quiet():
                quantize_dynamic(str(self.prepared), str(folder / "model.onnx"), op_types_to_quantize=["Gather"],
                                 nodes_to_quantize=[self.table], weight_type=QuantType.QInt8)
        else:
            reader = calibration.FeedsReader(self.feeds) if settings.method == "static" else None
            cache = self.work / f"calib-{settings.calibration}.json" if reader else None
            quantize_file(self.prepared, folder / "model.onnx", settings, exclude, embedding_node=self.table,
                          calibration=reader, calibration_cache=cache)
        config = settings.model_dump(mode="json") if table is None else {"table": table}
        self.add(label, folder, config, fp32_nodes=len(exclude), seconds=time.perf_counter() - t0)

    def search(self, target: str, evaluations: list) -> None:
        """The quantize stage's search for a target preset, scored by the same evaluator."""
        if self.reuse(f"search {target}", evaluations):
            return
        t0 = time.perf_counter()
        budget = Budget(self.reference, ["sts_spearman", "retrieval_ndcg10"], 0.01)
        timing = self.timing
        search = Search(self.source, self.work / f"search-{target}", PRESETS[target](), budget=budget,
                        evaluate=self.quality, proxy=self.proxy,
                        calibration_feeds=self.feeds, latency_fn=lambda b: measure.latency(b, timing, repeats=2),
                        config=SearchConfig(granularity=self.granularity, max_evaluations=self.max_evaluations),
                        final_timing=lambda bundles: measure.interleaved_latency(bundles, timing, rounds=2))
        result = search.run()
        entry = {"model": self.name, "target": target, "trials": [t.record() for t in result.trials],
                 "sensitivity": result.sensitivity, "within_budget": result.within_budget,
                 "chosen_trial": result.chosen.id if result.chosen else None}
        evaluations.append(entry)
        chosen = result.chosen
        note = (f"{len(result.trials)} trials, {result.evaluations} full evaluations"
                + ("" if result.within_budget else "; nothing met the budget, best kept"))
        self.add(f"search {target}: {chosen.label}", chosen.bundle, chosen.settings.model_dump(mode="json"),
                 fp32_nodes=len(chosen.excluded), seconds=time.perf_counter() - t0, quality=chosen.quality,
                 proxy_cosine=chosen.proxy_cosine,
                 note=note + (f"; fp32 groups: {', '.join(chosen.excluded_groups)}" if chosen.excluded_groups else ""),
                 key=f"search {target}", search=entry)

    def inc(self, evaluations: list) -> None:
        from edgedistill.quant.inc import IncSearch

        if self.reuse("inc", evaluations):
            return
        t0 = time.perf_counter()
        budget = Budget(self.reference, ["sts_spearman", "retrieval_ndcg10"], 0.01)
        search = IncSearch(self.source, self.work / "search-inc", PRESETS["avx2"](),
                           calibration_sentences=self.calib_sentences, budget=budget,
                           evaluate=self.quality, proxy=self.proxy,
                           latency_fn=lambda b: measure.latency(b, self.timing, repeats=2),
                           config=SearchConfig(max_evaluations=self.max_evaluations),
                           final_timing=lambda bundles: measure.interleaved_latency(bundles, self.timing, rounds=2))
        result = search.run()
        entry = {"model": self.name, "target": "inc (avx2 candidates)", "inc_status": search.inc_status,
                 "trials": [t.record() for t in result.trials], "within_budget": result.within_budget,
                 "chosen_trial": result.chosen.id if result.chosen else None}
        evaluations.append(entry)
        chosen = result.chosen
        note = f"{len(result.trials)} INC trials; worker: {search.inc_status.get('status')}" + (
            "" if result.within_budget else "; nothing met the budget, best kept")
        self.add(f"INC autotune: {chosen.label}", chosen.bundle, chosen.extra.get("inc_config", {}),
                 seconds=time.perf_counter() - t0, quality=chosen.quality, note=note, key="inc", search=entry,
                 proxy_cosine=chosen.proxy_cosine)

    def time_all(self, rounds: int) -> None:
        time_rows(self.rows, self.timing, rounds)


def time_rows(rows: list[dict], timing: list[str], rounds: int) -> None:
    """Time every variant of one model side by side (fp32 first) and add latency and speed-ups to its row."""
    import os

    load = os.getloadavg()[0]
    timed = measure.interleaved_latency({r["variant"]: Path(r["bundle"]) for r in rows}, timing, rounds=rounds)
    fp32 = timed["fp32"]
    for row in rows:
        row.update(timed[row["variant"]], load_average_1min=round(load, 2))
        row["speedup_b1"] = fp32["latency_ms_p50"] / row["latency_ms_p50"]
        row["speedup_b32"] = fp32[B32] / row[B32]


def retime(args, timing: list[str]) -> None:
    """Measure the latency of a finished run's variants again (e.g. after other jobs loaded the machine)."""
    out = Path(args.results)
    result = json.loads((out / "quantize.json").read_text())
    for model in ("student", "teacher"):
        rows = [r for r in result["rows"] if r["model"] == model]
        if rows:
            log.info("re-timing %d %s variants", len(rows), model)
            time_rows(rows, timing, args.rounds)
    result["retimed"] = time.strftime("%Y-%m-%d %H:%M")
    result["rounds"] = args.rounds
    (out / "quantize.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (out / "quantize.md").write_text(markdown(result) + "\n")


def run_model(name: str, source: Path, args, evaluator, calib, proxy_sentences, timing, evaluations,
              started: float) -> list[dict]:
    """Every variant of one model, then all of them timed side by side. The student gets the full list; the
    teacher (each variant ~1.5 min to evaluate) only what the comparison needs: plain dynamic, the portable
    preset, the same with the FFN down-projections in fp32, static MinMax QDQ and the search's choice."""
    student = name == "student"
    t0 = time.perf_counter()
    log.info("%s: preparing %s and scoring fp32", name, source)
    bench = Bench(name, source, Path(args.work) / name, evaluator, calib, proxy_sentences, timing,
                  args.max_evaluations, "auto" if student else "role")
    log.info("%s: fp32 ready in %.0f s", name, time.perf_counter() - t0)
    S = QuantSettings
    steps: list[tuple[str, Callable[[], None]]] = []

    def variant(label: str, settings: QuantSettings, **kw) -> None:
        steps.append((label, lambda: bench.variant(label, settings, **kw)))

    variant("dynamic per-tensor 8-bit (onnxruntime defaults)",
            S(per_channel=False, reduce_range=False, embedding="fp32"))
    if student:
        variant("dynamic per-channel 8-bit", S(per_channel=True, reduce_range=False, embedding="fp32"))
        variant("dynamic per-channel 7-bit", S(per_channel=True, reduce_range=True, embedding="fp32"))
        if bench.table:
            variant("word embeddings only, INT8 per row (ours)", S(), table="only")
            variant("word embeddings only, INT8 per tensor (onnxruntime)", S(), table="per-tensor")
    variant("dynamic per-channel 7-bit + INT8 embeddings (portable)", S(per_channel=True, reduce_range=True))
    variant("dynamic per-channel 7-bit + INT8 embeddings, FFN down fp32", S(per_channel=True, reduce_range=True),
            exclude=bench.down)
    for calib_method in args.calibrations if student else args.teacher_calibrations:
        variant(f"static QDQ {calib_method} U8S8 per-channel 7-bit + INT8 embeddings",
                S(method="static", calibration=calib_method, per_channel=True, reduce_range=True))
    if student:
        variant("static QDQ minmax S8S8 symmetric per-channel + INT8 embeddings",
                S(method="static", calibration="minmax", activation_type="int8", activation_symmetric=True,
                  per_channel=True))
    for target in args.targets if student else args.teacher_targets:
        steps.append((f"search {target}", lambda target=target: bench.search(target, evaluations)))
    if args.inc and student:
        steps.append(("INC autotune", lambda: _inc(bench, evaluations)))
    for i, (label, step) in enumerate(steps, 1):
        log.info("%s [%d/%d] %s (%.0f s since the benchmark started)", name, i, len(steps), label,
                 time.perf_counter() - started)
        step()
    log.info("%s: timing %d variants side by side (%d rounds of %d sentences)", name, len(bench.rows), args.rounds,
             len(timing))
    bench.time_all(args.rounds)
    log.info("%s: done in %.0f s", name, time.perf_counter() - t0)
    return bench.rows


def _inc(bench: Bench, evaluations: list) -> None:
    try:
        bench.inc(evaluations)
    except Exception as e:  # noqa: BLE001 - reported in the results, the rest still counts
        log.warning("INC backend failed: %s", e)
        evaluations.append({"model": bench.name, "target": "inc", "error": str(e)})


def markdown(result: dict) -> str:
    def f(v, fmt=".2f"):
        return format(v, fmt) if isinstance(v, (int, float)) else "–"

    loads = ", ".join(f"{m} {r['load_average_1min']}" for m in ("student", "teacher")
                      for r in result["rows"] if r["model"] == m and r["variant"] == "fp32"
                      and "load_average_1min" in r) or "not recorded"
    where = (f"`{result['command']}` on {result['host']['cpu']} ({result['host']['cores']} cores), onnxruntime "
             f"{result['host']['onnxruntime']}, {result['date']}. Student: `{result['student']}`.")
    how = ("Quality: the recipe's evaluator (STS-b test Spearman x100, retrieval nDCG@10 x100 on snli-retrieval); "
           "retention = % of the same model's fp32 score; cosine = mean cosine to the fp32 model's embeddings on "
           f"{result['proxy_sentences']} training sentences. Latency: text in, embedding out, median over "
           f"{result['timing_sentences']} sentences x {result['rounds']} interleaved rounds at batch 1, and per "
           "sentence at batch 32; all variants of a model timed side by side (sessions without spin-waiting)"
           + (f", re-timed {result['retimed']}" if result.get("retimed") else "")
           + f"; 1-min load average when timing began: {loads}.")
    lines = ["# Quantization benchmark", "", where, "", how, ""]
    for model in ("student", "teacher"):
        rows = [r for r in result["rows"] if r["model"] == model]
        if not rows:
            continue
        header = ("| variant | STS-b | retention % | retrieval | retention % | cosine to fp32 | batch-1 ms | speed-up "
                  "| b32 ms/sent | speed-up | size MB |")
        lines += [f"## {model}", "", header, "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(
                f"| {r['variant']} | {f(r['sts_spearman'])} | {f(r['sts_spearman_retention_pct'], '.1f')} "
                f"| {f(r['retrieval_ndcg10'])} | {f(r['retrieval_ndcg10_retention_pct'], '.1f')} "
                f"| {f(r['proxy_cosine'], '.4f')} | {f(r['latency_ms_p50'], '.3f')} | {f(r['speedup_b1'])}x "
                f"| {f(r[B32], '.3f')} | {f(r['speedup_b32'])}x | {f(r['size_mb'], '.1f')} |")
        notes = [f"- {r['variant']}: {r['note']}" for r in rows if r.get("note")]
        lines += ["", *notes, ""]
    for ev in result["searches"]:
        if "trials" not in ev:
            lines += [f"Search {ev['model']} / {ev['target']}: {ev.get('error')}", ""]
            continue
        lines += [f"### Search trials: {ev['model']}, {ev['target']}", "",
                  "| trial | setting | proxy cos | STS-b | retrieval | worst drop % | batch-1 ms (search) | size MB | |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for t in ev["trials"]:
            mark = "**chosen**" if t["trial"] == ev["chosen_trial"] else t.get("note", "")
            drop = 100 * t["relative_drop"] if t.get("relative_drop") is not None else None
            lines.append(f"| {t['trial']} | {t['setting']} | {f(t['proxy_cosine'], '.4f')} | {f(t.get('sts_spearman'))} "
                         f"| {f(t.get('retrieval_ndcg10'))} | {f(drop)} | {f(t.get('latency_ms_p50'), '.3f')} "
                         f"| {f(t['size_mb'], '.1f')} | {mark} |")
        for label, groups in (ev.get("sensitivity") or {}).items():
            top = ", ".join(f"{g['group']} ({g['proxy_error']:.1e})" for g in groups[:6])
            lines += ["", f"Most sensitive ({label}): {top}."]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", help="fp32 ONNX bundle (default: runs/mpnet-to-tiny's export artifact)")
    parser.add_argument("--no-teacher", dest="teacher", action="store_false")
    parser.add_argument("--no-inc", dest="inc", action="store_false", help="skip the INC backend")
    parser.add_argument("--targets", nargs="*", default=["portable", "avx2", "arm64"], help="presets searched (student)")
    parser.add_argument("--teacher-targets", nargs="*", default=["portable"], help="presets searched (teacher)")
    parser.add_argument("--calibrations", nargs="*", default=["minmax", "entropy", "percentile"])
    # onnxruntime's entropy calibrator ran for over 20 minutes on the teacher's activations (single-threaded
    # KL search over histograms widened by the outliers); MinMax alone shows the teacher's static-QDQ collapse.
    parser.add_argument("--teacher-calibrations", nargs="*", default=["minmax"])
    parser.add_argument("--max-evaluations", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", default="/tmp/edgedistill-bench-quantize")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--retime", action="store_true", help="only re-measure latency of the last run's variants")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from edgedistill.stages.profile import host_facts

    recipe = load_recipe(RECIPE)
    runner = Runner(recipe, runs_dir=Path(args.work) / "runs")
    runner.teacher_path = resolve(recipe.teacher)
    evaluator = runner.evaluator()
    calib, proxy_sentences = calibration.split_sentences(recipe.data.train, 200, 256, recipe.data.seed)
    timing = proxy_sentences[:64]
    if args.retime:
        retime(args, timing)
        return
    student = find_student(args.student)
    t0 = time.perf_counter()
    evaluations: list = []
    rows = run_model("student", student, args, evaluator, calib, proxy_sentences, timing, evaluations, t0)
    if args.teacher:
        rows += run_model("teacher", teacher_bundle(runner.teacher_path), args, evaluator, calib, proxy_sentences,
                          timing, evaluations, t0)
    result = {"command": "flock /tmp/edgedistill-heavy.lock .venv/bin/python benchmarks/quantize.py"
                         + "".join(f" {a}" for a in sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d %H:%M"), "host": {**host_facts(), "platform": platform.platform()},
              "student": str(student), "proxy_sentences": len(proxy_sentences), "timing_sentences": len(timing),
              "rounds": args.rounds, "seconds": round(time.perf_counter() - t0), "rows": rows, "searches": evaluations}
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "quantize.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (out / "quantize.md").write_text(markdown(result) + "\n")
    log.info("wrote %s and %s in %.0f s", out / "quantize.md", out / "quantize.json", time.perf_counter() - t0)


if __name__ == "__main__":
    main()
