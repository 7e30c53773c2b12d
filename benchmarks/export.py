"""Export variants of the default recipe's student, side by side: size, validation, batch-1 latency.

    flock /tmp/edgedistill-heavy.lock .venv/bin/python benchmarks/export.py

Takes the student of runs/mpnet-to-tiny (its distill artifact) when that run exists, else the smoke run's
(/tmp/runs/smoke), or --student PATH. Exports it with both exporters, with and without onnxruntime's
transformer fusions, with and without the tokenizer inside the graph, and as dynamic INT8 of the plain and
the fused graph; checks each against PyTorch on real held-out sentences; times every variant at batch
size 1 (text in, embedding out) in the same interleaved rounds, at 1 thread and at all cores.
Writes benchmarks/results/export.md and export.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from edgedistill.data import load_sentences, sample
from edgedistill.optimize import (
    IN_GRAPH_MODEL,
    build_tokenizer_in_graph,
    fuse_transformer,
    interleaved_latency,
)
from edgedistill.runtime import InGraphEncoder, OnnxEncoder
from edgedistill.tasks.embedding import export

ROOT = Path(__file__).resolve().parent.parent

log = logging.getLogger("benchmarks.export")
RESULTS = ROOT / "benchmarks" / "results"


def find_student(explicit: str | None) -> tuple[Path, Path | None]:
    """The default recipe's distilled student (and its run folder), else the smoke run's."""
    if explicit:
        return Path(explicit), None
    for run in (ROOT / "runs" / "mpnet-to-tiny", Path("/tmp/runs/smoke")):
        done = sorted(p for p in run.glob("00-distill-*") if (p / "metrics.json").is_file())
        if done:
            return max(done, key=lambda p: p.stat().st_mtime) / "artifact", run
    sys.exit("no distilled student found: run `edgedistill run recipes/mpnet-to-tiny.yaml` (or smoke) or pass --student")


def make_bundle(folder: Path, source: Path, model_file: Path | None = None) -> Path:
    """A bundle folder: manifest and tokenizer of ``source``, and a model.onnx."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("manifest.json", "tokenizer.json", "tokenizer_config.json"):
        if (source / name).is_file():
            shutil.copy2(source / name, folder / name)
    if model_file:
        shutil.copy2(model_file, folder / "model.onnx")
    return folder


def quantize(source: Path, folder: Path, op_types: list[str]) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    make_bundle(folder, source)
    quantize_dynamic(str(source / "model.onnx"), str(folder / "model.onnx"), op_types_to_quantize=op_types,
                     weight_type=QuantType.QInt8)
    return folder


def no_spin_session(model_path: Path, threads: int, custom_ops: bool):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if custom_ops:
        from onnxruntime_extensions import get_library_path

        options.register_custom_ops_library(get_library_path())
    return ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])


def size_mb(path: Path) -> float:
    return round(path.stat().st_size / 1e6, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", help="A sentence-transformers folder (default: the default recipe's student).")
    parser.add_argument("--sentences", type=int, default=100, help="Held-out sentences timed per round.")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgedistill-export-bench"))
    parser.add_argument("--results", type=Path, default=RESULTS, help="Where export.md/.json go.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    logging.getLogger("edgedistill").setLevel(logging.INFO)

    import onnxruntime
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(os.cpu_count() or 1)
    student, run_dir = find_student(args.student)
    log.info("student: %s", student)
    heldout = load_sentences("snli-heldout")
    check = export.check_sentences(sample(heldout, 64, seed=0), 64, 128)
    timing = sample(heldout, args.sentences, seed=1)
    if args.work.exists():
        shutil.rmtree(args.work)
    work = args.work
    model = SentenceTransformer(str(student), device="cpu")
    config = model[0].auto_model.config

    t0 = time.perf_counter()
    bundles: dict[str, Path] = {}
    export_s: dict[str, float] = {}
    for exporter in ("dynamo", "torchscript"):
        folder = work / exporter
        folder.mkdir(parents=True)
        t = time.perf_counter()
        inputs = export.export_onnx(model, folder / "model.onnx", 18, exporter)
        export_s[exporter] = round(time.perf_counter() - t, 1)
        model[0].tokenizer.save_pretrained(str(folder))
        export.build_manifest(model, folder, export.graph_opset(folder / "model.onnx"), exporter, inputs)
        bundles[f"{exporter} fp32"] = folder
        fused = make_bundle(work / f"{exporter}-fused", folder)
        fusions = fuse_transformer(folder / "model.onnx", fused / "model.onnx", int(config.num_attention_heads),
                                   int(config.hidden_size))
        log.info("%s fusions: %s", exporter, fusions)
        bundles[f"{exporter} fp32 optimised"] = fused
    plain, fused = bundles["torchscript fp32"], bundles["torchscript fp32 optimised"]
    bundles["torchscript INT8 (MatMul)"] = quantize(plain, work / "int8", ["MatMul"])
    bundles["torchscript INT8 optimised (MatMul)"] = quantize(fused, work / "int8-fused", ["MatMul"])
    bundles["torchscript INT8 optimised (MatMul+Attention)"] = quantize(fused, work / "int8-fused-att",
                                                                       ["MatMul", "Attention"])
    shipped = (run_dir / "bundle") if run_dir and (run_dir / "bundle" / "manifest.json").is_file() else None
    if shipped:
        bundles["shipped bundle (run's final)"] = shipped

    reference = model.encode(check, batch_size=16, convert_to_numpy=True, normalize_embeddings=True)
    rows: dict[str, dict] = {}
    encoders: dict[str, object] = {}
    for name, folder in bundles.items():
        encoders[name] = OnnxEncoder(folder)
        got = encoders[name].encode(check, batch_size=1)
        cos = (got * reference).sum(axis=1)
        rows[name] = {"size_mb": size_mb(folder / "model.onnx"), "max_abs_diff_vs_torch": float(np.abs(got - reference).max()),
                      "min_cosine_vs_torch": float(cos.min()), "mean_cosine_vs_torch": float(cos.mean())}
        if "fp32" in name:
            rows[name]["validation"] = export.validate(model, folder, check)
    in_graph_of = {"torchscript fp32": plain, "torchscript fp32 optimised": fused,
                   "torchscript INT8 optimised (MatMul)": bundles["torchscript INT8 optimised (MatMul)"]}
    for base, folder in in_graph_of.items():
        build_tokenizer_in_graph(folder / "model.onnx", folder / "tokenizer.json",
                                 json.loads((folder / "manifest.json").read_text()), folder / IN_GRAPH_MODEL)
        name = f"{base} + tokenizer in graph"
        encoders[name] = InGraphEncoder(folder)
        got = encoders[name].encode(check)
        two_file = encoders[base].encode(check, batch_size=1)
        rows[name] = {"size_mb": size_mb(folder / IN_GRAPH_MODEL),
                      "max_abs_diff_vs_two_file": float(np.abs(got - two_file).max()),
                      "max_abs_diff_vs_torch": float(np.abs(got - reference).max()),
                      "min_cosine_vs_torch": float((got * reference).sum(axis=1).min()),
                      "mean_cosine_vs_torch": float((got * reference).sum(axis=1).mean())}

    latency: dict[str, dict] = {}
    for threads in (1, 0):
        per = {n: (OnnxEncoder(e.model_path.parent, threads=threads) if isinstance(e, OnnxEncoder)
                   else InGraphEncoder(e.model_path.parent, threads=threads)) for n, e in encoders.items()}
        if threads != 1:
            # Interleaving many multi-threaded sessions: an idle session's pool threads spin-wait and steal
            # the cores from the one being timed. Without spinning each is timed as if it ran alone.
            for e in per.values():
                e.session = no_spin_session(e.model_path, threads, isinstance(e, InGraphEncoder))
        label = "1 thread" if threads == 1 else f"{os.cpu_count()} threads"
        log.info("timing %d variants x %d sentences x %d rounds at %s", len(per), len(timing), args.rounds, label)
        latency[label] = interleaved_latency(per, timing, args.rounds)
    result = {
        "student": str(student), "run": str(run_dir) if run_dir else None, "export_seconds": export_s,
        "check_sentences": len(check), "timing_sentences": len(timing), "rounds": args.rounds,
        "variants": rows, "latency": latency, "seconds": round(time.perf_counter() - t0, 1),
        "host": {"cpu": next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                                 if ln.startswith("model name")), platform.processor()),
                 "cores": os.cpu_count(), "onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
                 "python": platform.python_version()},
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "export.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.results / "export.md").write_text(to_markdown(result))
    print(to_markdown(result))


def to_markdown(r: dict) -> str:
    labels = list(r["latency"])
    base = {lab: r["latency"][lab]["torchscript fp32"]["latency_ms_p50"] for lab in labels}
    lines = [
        "# Export variants of the default recipe's student", "",
        (f"Student: `{r['student']}`. Checked on {r['check_sentences']} real held-out sentences (SNLI test, incl. "
        f"4 long ones truncated at 128 tokens); batch-1 latency (text in, embedding out, tokenisation included) "
        f"over {r['timing_sentences']} held-out sentences x {r['rounds']} interleaved rounds, every variant in "
        f"the same rounds. Host: {r['host']['cpu']}, {r['host']['cores']} cores, onnxruntime "
        f"{r['host']['onnxruntime']}; at several threads, sessions run without spin-waiting so interleaved "
        f"variants do not steal each other's cores. Command: `flock /tmp/edgedistill-heavy.lock .venv/bin/python benchmarks/export.py`."), "",
        "| variant | model MB | max abs diff vs torch | min cosine vs torch | "
        + " | ".join(f"p50 ms ({lab}) | p90 ms ({lab}) | speed-up ({lab})" for lab in labels) + " |",
        "|---|---|---|---|" + "---|---|---|" * len(labels),
    ]
    for name, v in r["variants"].items():
        cells = []
        for lab in labels:
            lat = r["latency"][lab][name]
            cells.append(f"{lat['latency_ms_p50']:.2f} | {lat['latency_ms_p90']:.2f} | x{base[lab] / lat['latency_ms_p50']:.2f}")
        lines.append(f"| {name} | {v['size_mb']:.1f} | {v['max_abs_diff_vs_torch']:.1e} | {v['min_cosine_vs_torch']:.5f} | "
                     + " | ".join(cells) + " |")
    lines += ["", ("Speed-up is relative to the plain torchscript fp32 graph in the same column. INT8 rows are not "
              "gated against torch (quantization changes the numbers by design; the quantize stage gates them on "
              "STS-b)."), ""]
    tig = {n: v for n, v in r["variants"].items() if "tokenizer in graph" in n}
    if tig:
        lines.append("Tokenizer in graph vs the same model with tokenizer.json (batch 1): "
                     + "; ".join(f"{n}: max abs diff {v['max_abs_diff_vs_two_file']:.1e}" for n, v in tig.items())
                     + ". Tolerance used by the export stage and the bundle: 1e-4.")
    lines.append(f"\nExport time: {', '.join(f'{k} {v} s' for k, v in r['export_seconds'].items())}; whole benchmark "
                 f"{r['seconds']} s.\n")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
