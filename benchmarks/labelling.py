"""Teacher labelling throughput: today's PyTorch path and the ONNX Runtime options, side by side on the same
sentences, each in a fresh process with the same settings, in alternating rounds.

Run (from the repository root; takes the heavy-job lock so other benchmarks don't run alongside):
    flock /tmp/edgedistill-heavy.lock .venv/bin/python benchmarks/labelling.py
    flock /tmp/edgedistill-heavy.lock .venv/bin/python benchmarks/labelling.py --sentences 500 --rounds 1
Writes benchmarks/results/labelling.md and labelling.json: sentences/s (median over rounds; model loading
and a warm-up batch excluded), per-sentence cosine to the PyTorch labels, and how many cores other processes
kept busy while each variant ran (the machine may be shared; /proc/stat).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
TEACHER = "sentence-transformers/all-mpnet-base-v2"
WARMUP = 32

# name -> settings; "torch" is today's path (edgedistill.tasks.embedding.labelling.encode: sentence-transformers encode,
# batches sorted by character length).
VARIANTS: dict[str, dict] = {
    "torch (today), batch 64": {"backend": "torch", "batch_size": 64},
    "torch bf16 autocast, batch 64": {"backend": "torch", "batch_size": 64, "bf16": True},
    "onnx plain, batch 64, 2 threads": {"backend": "onnx", "graph": "model.onnx", "batch_size": 64, "threads": 2},
    "onnx fused (GELU, LayerNorm), batch 64, 2 threads": {"backend": "onnx", "graph": "model.fused.onnx",
                                                          "batch_size": 64, "threads": 2},
    "onnx fused + Attention, batch 64, 2 threads": {"backend": "onnx", "graph": "model.attention.onnx",
                                                    "batch_size": 64, "threads": 2},
    "onnx fused + Attention, batch 16, 2 threads": {"backend": "onnx", "graph": "model.attention.onnx",
                                                    "batch_size": 16, "threads": 2},
    "onnx fused + Attention, batch 16, 2 processes x 1 thread": {"backend": "onnx", "graph": "model.attention.onnx",
                                                                 "batch_size": 16, "threads": 1, "processes": 2},
    "onnx fused + Attention, batch 64, 2 processes x 1 thread": {"backend": "onnx", "graph": "model.attention.onnx",
                                                                 "batch_size": 64, "threads": 1, "processes": 2},
}


def _onnx_part(folder: str, graph: str, threads: int, batch_size: int, sentences: list[str], barrier, queue,
               rank: int) -> None:
    from edgedistill.tasks.embedding.onnx_teacher import OnnxTeacher

    teacher = OnnxTeacher(Path(folder), threads, graph)
    teacher.encode(sentences[:WARMUP], batch_size)
    barrier.wait()
    queue.put((rank, teacher.encode(sentences, batch_size)))


def worker(spec: dict, sentences: list[str], out: Path) -> None:
    """Label ``sentences`` with one variant; write the labels and the encode time (load and warm-up excluded)."""
    import torch

    from edgedistill.assets import resolve
    from edgedistill.profiling.bench import CpuWatch

    teacher = resolve(spec["teacher"])
    processes = spec.get("processes", 1)
    if spec["backend"] == "torch":
        from edgedistill.trust import load_sentence_transformer

        torch.set_num_threads(spec.get("threads") or os.cpu_count() or 1)
        # What edgedistill.tasks.embedding.labelling.encode does (no hidden states), with the model load kept out of the timing.
        model = load_sentence_transformer(teacher, "cpu")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(spec.get("bf16"))):
            model.encode(sentences[:WARMUP], batch_size=spec["batch_size"])
            watch = CpuWatch()
            t0 = time.perf_counter()
            emb = model.encode(sentences, batch_size=spec["batch_size"], convert_to_numpy=True,
                               normalize_embeddings=True).astype(np.float32)
            seconds = time.perf_counter() - t0
    elif processes == 1:
        from edgedistill.tasks.embedding.onnx_teacher import OnnxTeacher, onnx_teacher

        encoder = OnnxTeacher(onnx_teacher(teacher), spec["threads"], spec["graph"])
        encoder.encode(sentences[:WARMUP], spec["batch_size"])
        watch = CpuWatch()
        t0 = time.perf_counter()
        emb = encoder.encode(sentences, spec["batch_size"])
        seconds = time.perf_counter() - t0
    else:  # the same split as edgedistill.tasks.embedding.onnx_teacher.encode_onnx, timed from when every worker is warm
        from edgedistill.tasks.embedding.onnx_teacher import onnx_teacher

        folder = str(onnx_teacher(teacher))
        ctx = multiprocessing.get_context("spawn")
        barrier, queue = ctx.Barrier(processes + 1), ctx.Queue()
        procs = [ctx.Process(target=_onnx_part, args=(folder, spec["graph"], spec["threads"], spec["batch_size"],
                                                      sentences[r::processes], barrier, queue, r))
                 for r in range(processes)]
        for p in procs:
            p.start()
        barrier.wait()
        watch = CpuWatch()
        t0 = time.perf_counter()
        parts = dict(queue.get() for _ in procs)
        seconds = time.perf_counter() - t0
        for p in procs:
            p.join()
        emb = np.zeros((len(sentences), parts[0].shape[1]), np.float32)
        for r in range(processes):
            emb[r::processes] = parts[r]
    # Child processes' CPU time counts only once they are reaped, load and warm-up included: not comparable.
    load = watch.result() if processes == 1 else None
    np.save(out / "emb.npy", emb)
    (out / "result.json").write_text(json.dumps({"seconds": seconds, "load": load}))


def run_variant(name: str, spec: dict, sentence_file: Path, tmp: Path) -> tuple[float, dict | None, np.ndarray]:
    out = tmp / f"v{abs(hash(name))}"
    out.mkdir(exist_ok=True)
    job = {**spec, "sentences": str(sentence_file), "out": str(out)}
    subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], check=True)
    result = json.loads((out / "result.json").read_text())
    return result["seconds"], result["load"], np.load(out / "emb.npy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=1000, help="SNLI training sentences (as the default "
                        "recipe draws them, seed 0)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds; the order of variants alternates")
    parser.add_argument("--only", nargs="*", help="variant names (default: all)")
    parser.add_argument("--append", action="store_true", help="keep earlier runs in the results (newest first)")
    parser.add_argument("--teacher", default=TEACHER, help="catalog name or folder")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        sentences = Path(spec["sentences"]).read_text(encoding="utf-8").split("\n")
        worker(spec, sentences, Path(spec["out"]))
        return

    from edgedistill.assets import resolve
    from edgedistill.data import draw_training_sentences
    from edgedistill.profiling.bench import CpuWatch
    from edgedistill.tasks.embedding.onnx_teacher import onnx_teacher

    sentences = draw_training_sentences("snli-sentences", args.sentences, seed=0)
    t0 = time.perf_counter()
    folder = onnx_teacher(resolve(args.teacher))  # built once per teacher content (not timed below)
    build = json.loads((folder / "check.json").read_text())
    print(f"onnx teacher ready in {time.perf_counter() - t0:.1f} s: {folder}", flush=True)
    names = args.only or list(VARIANTS)
    seconds: dict[str, list[float]] = {n: [] for n in names}
    loads: dict[str, list[dict | None]] = {n: [] for n in names}
    labels: dict[str, np.ndarray] = {}
    overall = CpuWatch()
    with tempfile.TemporaryDirectory(prefix="edgedistill-labelling-") as tmp:
        sentence_file = Path(tmp) / "sentences.txt"
        sentence_file.write_text("\n".join(sentences), encoding="utf-8")
        for r in range(args.rounds):
            for name in (names if r % 2 == 0 else names[::-1]):
                s, load, emb = run_variant(name, {**VARIANTS[name], "teacher": args.teacher}, sentence_file,
                                           Path(tmp))
                seconds[name].append(s)
                loads[name].append(load)
                labels.setdefault(name, emb)
                print(f"round {r + 1}: {name}: {len(sentences) / s:.1f} sentences/s "
                      f"(others kept {load and load['other_cores']} cores busy)", flush=True)
    reference = labels.get(names[0])
    rows = []
    for name in names:
        cos = (labels[name] * reference).sum(axis=1)
        rate = len(sentences) / statistics.median(seconds[name])
        rows.append({"variant": name, **VARIANTS[name], "sentences_per_s": round(rate, 2),
                     "rounds_sentences_per_s": [round(len(sentences) / s, 2) for s in seconds[name]],
                     "min_cosine_to_torch": float(cos.min()), "mean_cosine_to_torch": float(cos.mean()),
                     "other_cores_busy": [x and x["other_cores"] for x in loads[name]]})
    base = rows[0]["sentences_per_s"]
    for row in rows:
        row["speedup"] = round(row["sentences_per_s"] / base, 2)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_padding()
    tokens = [len(e.ids) for e in tok.encode_batch(sentences)]
    record = {"args": shlex.join(sys.argv[1:]), "teacher": args.teacher, "sentences": len(sentences), "source": "snli-sentences (draw seed 0)", "rounds": args.rounds,
              "tokens_mean": round(float(np.mean(tokens)), 1), "tokens_max": int(max(tokens)),
              "cores": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
              "onnx_build": build, "others_cores_busy_overall": (overall.result() or {}).get("other_cores"),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    runs = [record]
    if args.append and (RESULTS / "labelling.json").is_file():
        previous = json.loads((RESULTS / "labelling.json").read_text())
        runs += previous.get("runs", [previous])
    (RESULTS / "labelling.json").write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    (RESULTS / "labelling.md").write_text("\n".join(markdown(r) for r in runs))
    print(markdown(record))


def markdown(record: dict) -> str:
    lines = [(f"### Teacher labelling, {record['sentences']} SNLI training sentences (mean {record['tokens_mean']} "
             f"tokens), {record['cores']} cores, {record['date']}"), "",
             (f"`flock /tmp/edgedistill-heavy.lock .venv/bin/python benchmarks/labelling.py {record.get('args', '')}`".replace(" `", "`")
              + " "
             f"({record['rounds']} rounds, alternating order; median; model load and warm-up excluded)"), "",
             ("| variant | sentences/s | speed-up | each round | min cosine to PyTorch | mean cosine | "
             "other processes' cores busy |"), "|---|---|---|---|---|---|---|"]
    for r in record["rows"]:
        lines.append(f"| {r['variant']} | {r['sentences_per_s']:.1f} | {r['speedup']:.2f}x | "
                     f"{', '.join(f'{x:.1f}' for x in r['rounds_sentences_per_s'])} | "
                     f"{r['min_cosine_to_torch']:.6f} | {r['mean_cosine_to_torch']:.7f} | "
                     f"{', '.join('n/a' if x is None else str(x) for x in r['other_cores_busy'])} |")
    b = record["onnx_build"]
    lines += ["", (f"The ONNX teacher is built once per teacher content ({b['build_s']} s; fusions "
              f"{b['fusions'] or 'none'}; min cosine to PyTorch at build {b['min_cosine']}). The machine may have "
              f"been shared: other processes kept {record['others_cores_busy_overall']} cores busy on average over "
              "the whole run (last column: per variant and round)."), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
