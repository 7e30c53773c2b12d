#!/usr/bin/env python3
"""edgedistill bench: profile an ONNX embedding bundle on this machine and write one JSON file.

Self-contained on purpose: it is copied to devices (phones, boards, other servers) inside a bench bundle and
needs only python3 (3.8+), onnxruntime, numpy and tokenizers. It must never import edgedistill, torch or
anything else. The local profile runs this same file, so a device's numbers come from the same code.

Run by hand inside an unpacked bench bundle:

    pip install onnxruntime numpy tokenizers
    python3 bench.py --label my-device --out result.json

then merge the result into the run on your machine: ``edgedistill report runs/<name> --merge result.json``.

What it measures (settings.json; defaults below):
- batch-1 latency, text in -> embedding out (tokenisation included), over real sentences of varied length,
  at each thread count; up to ``repeats`` rounds over all sentences, each round in a fresh process after
  ``warmup`` calls (so per-process effects such as CPU placement are sampled, not frozen in); percentiles
  pooled over all rounds, the spread of the per-round medians reported;
- throughput over batch sizes x sequence lengths (texts truncated to exactly that many tokens), and on
  the real sentences at ``batch_size`` (sorted by length, as an app would batch them);
- cold start (session creation to first embedding) and peak resident memory, in those same fresh processes
  (forked before any model is loaded), so the memory is the model's own on top of the runtime;
- file sizes and the model's sha256 (so a merged result can be matched to its artifact), and host facts.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import logging
import os
import platform
import sys
import time

FORMAT = "edgedistill-bench"
VERSION = 1
EXIT_MISSING_DEPENDENCY = 3

DEFAULT_SETTINGS = {
    "warmup": 20,  # batch-1 calls before timing, per thread count
    "repeats": 5,  # rounds over all sentences (at most), each in a fresh process
    "min_repeats": 2,  # rounds at least, even past max_seconds
    "max_seconds": 30.0,  # stop adding rounds after this long
    "threads": [1, 0],  # intra-op thread counts; 0 = all usable cores; the first is the headline
    "batch_size": 32,  # real-sentence throughput batch size
    "batch_sizes": [1, 8, 32],
    "seq_lengths": [16, 64, 128],
    "cell_repeats": 5,  # timed calls per throughput cell (at most), after one warm-up call
    "cell_seconds": 3.0,  # stop a throughput cell after this long (at least one timed call)
}

# ISA features that decide which int8/fp kernels a runtime can use.
X86_FEATURES = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
ARM_FEATURES = ("asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2", "sme", "fphp")
BUSY_CORES = 0.25  # a timed round during which other processes used more cores than this is run again
INT8_DOT = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
MAC_FEATURES = {"hw.optional.arm.FEAT_DotProd": "asimddp", "hw.optional.arm.FEAT_I8MM": "i8mm",
                "hw.optional.arm.FEAT_BF16": "bf16", "hw.optional.AdvSIMD": "asimd"}

log = logging.getLogger("edgedistill.bench")


# -- host facts -----------------------------------------------------------------------------------------
def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _sysctl(name: str) -> str:
    import subprocess

    try:
        return subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5,
                              check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


# A few common ARM cores (CPU implementer 0x41 = Arm), since ARM /proc/cpuinfo rarely names the CPU.
ARM_PARTS = {"0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
             "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
             "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd40": "Neoverse-V1", "0xd41": "Cortex-A78",
             "0xd44": "Cortex-X1", "0xd46": "Cortex-A510", "0xd47": "Cortex-A710", "0xd48": "Cortex-X2",
             "0xd49": "Neoverse-N2", "0xd4f": "Neoverse-V2", "0xd80": "Cortex-A520", "0xd81": "Cortex-A720"}


def _cpuinfo() -> tuple:
    """CPU model name, feature flags and board name from /proc (Linux, x86 and ARM)."""
    fields, flags, parts = {}, set(), []
    for line in _read("/proc/cpuinfo").splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key in ("flags", "features") and not flags:
            flags = set(value.split())
        elif key == "cpu part" and value not in parts:
            parts.append(value)
        elif key and value and key not in fields:
            fields[key] = value
    model = fields.get("model name") or fields.get("cpu model") or fields.get("hardware") or ""
    if not model and fields.get("cpu implementer") == "0x41" and parts:
        model = "Arm " + " + ".join(ARM_PARTS.get(p, p) for p in parts)
    if not model and fields.get("model", "").strip() and not fields["model"].isdigit():
        model = fields["model"]
    board = _read("/proc/device-tree/model").strip("\x00\n ")
    return model, flags, board


def host_facts() -> dict:
    """CPU model, architecture, ISA features, cores, memory, OS and library versions of this machine."""
    machine = platform.machine()
    model, flags, board = _cpuinfo()
    if sys.platform == "darwin":
        model = model or _sysctl("machdep.cpu.brand_string")
        flags |= {name for key, name in MAC_FEATURES.items() if _sysctl(key) == "1"}
        flags |= {f.lower().replace(".", "_") for f in _sysctl("machdep.cpu.features").split()}
        flags |= {f.lower().replace(".", "_") for f in _sysctl("machdep.cpu.leaf7_features").split()}
    known = X86_FEATURES + ARM_FEATURES
    isa = [f for f in known if f in flags]
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    mem_kb = next((int(line.split()[1]) for line in _read("/proc/meminfo").splitlines()
                   if line.startswith("MemTotal:")), 0)
    facts = {
        "hostname": platform.node(),
        "cpu": model or platform.processor() or "unknown",
        "machine": machine,
        "board": board or None,
        "isa": isa,
        "int8_dot_product": any(f in flags for f in INT8_DOT),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gb": round(mem_kb / 1e6, 1) if mem_kb else None,
        "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").strip() or None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    for name in ("onnxruntime", "numpy", "tokenizers"):
        try:
            facts[name] = __import__(name).__version__
        except ImportError:
            facts[name] = None
    return facts


# -- statistics -------------------------------------------------------------------------------------------
def summarise(times_s: list, round_medians_s: list | None = None) -> dict:
    """Percentiles (ms) of pooled timings, and the spread of per-round medians."""
    import numpy as np

    ms = np.asarray(times_s, dtype=np.float64) * 1000
    out = {
        "n": int(ms.size),
        "p50": float(np.percentile(ms, 50)),
        "p90": float(np.percentile(ms, 90)),
        "p99": float(np.percentile(ms, 99)),
        "mean": float(ms.mean()),
        "min": float(ms.min()),
        "max": float(ms.max()),
        "iqr": float(np.percentile(ms, 75) - np.percentile(ms, 25)),
    }
    if round_medians_s:
        rounds = np.asarray(round_medians_s, dtype=np.float64) * 1000
        out["round_p50"] = [round(float(r), 4) for r in rounds]
        out["spread_pct"] = float(100 * (rounds.max() - rounds.min()) / np.median(rounds)) if rounds.size > 1 else 0.0
    return out


def timed_calls(fn, repeats: int, budget_s: float) -> list:
    """One warm-up call, then up to ``repeats`` timed calls (at least one) within ``budget_s``."""
    fn()
    times, start = [], time.perf_counter()
    while len(times) < max(1, repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s:
            break
    return times


def fixed_length_texts(sentences: list, count: int, words: int) -> list:
    """``count`` texts of real sentences joined until each has at least ``words`` words.

    Every word is at least one token, so truncating these to ``words`` tokens gives exactly that length,
    whatever the tokenizer.
    """
    texts, i = [], 0
    for _ in range(count):
        parts, n = [], 0
        while n < words:
            s = sentences[i % len(sentences)]
            parts.append(s)
            n += len(s.split())
            i += 1
        texts.append(" ".join(parts))
    return texts


def throughput(engine, sentences: list, settings: dict) -> dict:
    """Sequences/s over batch sizes x sequence lengths, and sentences/s on the real sentences."""
    grid = []
    max_len = engine.max_seq_length
    for seq in sorted({min(int(s), max_len) for s in settings["seq_lengths"]}):
        for batch in settings["batch_sizes"]:
            texts = fixed_length_texts(sentences, int(batch), seq)
            times = timed_calls(lambda texts=texts, seq=seq: engine.encode(texts, batch_size=len(texts), max_length=seq),
                                settings["cell_repeats"], settings["cell_seconds"])
            stats = summarise(times)
            grid.append({"batch": int(batch), "seq": seq, "ms_p50": stats["p50"], "calls": stats["n"],
                         "seq_per_s": 1000 * batch / stats["p50"], "tokens_per_s": 1000 * batch * seq / stats["p50"]})
    batch = int(settings["batch_size"])
    times = timed_calls(lambda: engine.encode(sentences, batch_size=batch), settings["cell_repeats"],
                        settings["cell_seconds"])
    stats = summarise(times)
    real = {"batch": batch, "sentences": len(sentences), "ms_p50": stats["p50"], "calls": stats["n"],
            "sentences_per_s": 1000 * len(sentences) / stats["p50"]}
    return {"grid": grid, "real": real}


# -- memory and cold start, in a forked child -----------------------------------------------------------
def _status_mb(field: str) -> float | None:
    for line in _read("/proc/self/status").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux >= 4.0); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_mb() -> float:
    """Current resident set size in MB (peak where the current value is not available)."""
    current = _status_mb("VmRSS")
    return current if current is not None else peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB."""
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    import resource

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / (1024 * 1024) if sys.platform == "darwin" else maxrss / 1024


def in_child(fn, timeout_s: float = 600.0) -> dict:
    """Run ``fn()`` (returning a JSON-able dict) in a forked child; a fresh interpreter where fork is missing."""
    if not hasattr(os, "fork"):
        return {"error": "no fork() on this platform: cold start and memory not measured"}
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        try:
            payload = json.dumps(fn())
        except BaseException as e:  # noqa: BLE001 - report it; nothing may escape a forked child
            payload = json.dumps({"error": f"{type(e).__name__}: {e}"})
        data = payload.encode()
        while data:
            data = data[os.write(write_fd, data):]
        os._exit(0)
    os.close(write_fd)
    chunks, deadline = [], time.monotonic() + timeout_s
    import select

    while True:
        ready, _, _ = select.select([read_fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            os.close(read_fd)
            return {"error": f"child timed out after {timeout_s:.0f}s"}
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_fd)
    os.waitpid(pid, 0)
    raw = b"".join(chunks)
    return json.loads(raw) if raw else {"error": "child exited without a result"}


class CpuWatch:
    """CPU time that other processes used (and a hypervisor stole) while we measured, from /proc/stat: a busy
    machine is the commonest reason two profiles disagree, so every result says how busy it was."""

    def __init__(self) -> None:
        self.start = self._snapshot()

    @staticmethod
    def _snapshot() -> dict | None:
        lines = _read("/proc/stat").splitlines()
        if not lines or not lines[0].startswith("cpu "):
            return None
        ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        user, nice, system, _idle, _iowait, irq, softirq, steal = ([int(x) for x in lines[0].split()[1:9]] + [0] * 8)[:8]
        t = os.times()
        return {"busy": (user + nice + system + irq + softirq) / ticks, "steal": steal / ticks,
                "own": t.user + t.system + t.children_user + t.children_system, "wall": time.monotonic()}

    def result(self) -> dict | None:
        """Average cores kept busy by others, and stolen, since this watch started."""
        end = self._snapshot()
        if self.start is None or end is None:
            return None
        wall = max(end["wall"] - self.start["wall"], 1e-9)
        others = (end["busy"] - self.start["busy"]) - (end["own"] - self.start["own"])
        return {"other_cores": round(max(0.0, others / wall), 3),
                "steal_cores": round((end["steal"] - self.start["steal"]) / wall, 3), "seconds": round(wall, 2)}


def timed_round(engine, sentences: list, warmup: int) -> list:
    """``warmup`` untimed batch-1 calls, then one timed call per sentence (seconds); GC paused while timing."""
    for i in range(warmup):
        engine.encode([sentences[i % len(sentences)]], batch_size=1)
    gc.collect()
    gc_enabled = gc.isenabled()
    gc.disable()
    try:
        times = []
        for s in sentences:
            t0 = time.perf_counter()
            engine.encode([s], batch_size=1)
            times.append(time.perf_counter() - t0)
    finally:
        if gc_enabled:
            gc.enable()
    return times


def round_probe(make_engine, sentences: list, threads: list, warmup: int, big_texts: list | None = None,
                big_len: int = 0) -> dict:
    """One fresh process: cold start (session creation -> first embedding), peak memory at batch 1 (and at the
    largest batch when ``big_texts`` is given), then one timed batch-1 round over all sentences per thread count."""
    reset_peak_rss()
    base = rss_mb()
    t0 = time.perf_counter()
    engine = make_engine(threads[0])
    engine.encode([sentences[0]], batch_size=1)
    cold_ms = (time.perf_counter() - t0) * 1000
    peak1 = peak_rss_mb()
    out = {"cold_start_ms": cold_ms, "baseline_rss_mb": base, "peak_rss_batch1_mb": peak1,
           "model_rss_batch1_mb": peak1 - base, "pid": os.getpid()}
    if big_texts:
        engine.encode(big_texts, batch_size=len(big_texts), max_length=big_len)
        peak = peak_rss_mb()
        out.update(peak_rss_mb=peak, model_rss_mb=peak - base, largest_batch=[len(big_texts), big_len])
    rounds, watch = {}, CpuWatch()
    for i, t in enumerate(threads):
        if i:
            engine = None
            gc.collect()
            engine = make_engine(t)
        rounds[str(t)] = timed_round(engine, sentences, warmup)
    out["rounds"] = rounds
    out["other_cores"] = (watch.result() or {}).get("other_cores")
    return out


def _disturbed(probe: dict) -> bool:
    return (probe.get("other_cores") or 0.0) > BUSY_CORES


def process_rounds(make_engine, sentences: list, settings: dict) -> dict:
    """Batch-1 latency, cold start and memory from rounds in fresh processes (forked before this process loads
    any model), so a per-process offset (CPU placement, memory layout) is sampled ``repeats`` times instead of
    once. Rounds stop after ``max_seconds`` once ``min_repeats`` are done. A round during which other processes
    kept more than BUSY_CORES cores busy is run again (at most ``repeats`` extra rounds) and left out of the
    latency when enough undisturbed rounds exist; the result says how many were left out."""
    import numpy as np

    settings = {**DEFAULT_SETTINGS, **settings}
    threads = resolve_threads(settings["threads"])
    max_len = make_engine.max_seq_length
    big_batch = max(int(b) for b in list(settings["batch_sizes"]) + [settings["batch_size"]])
    big_len = min(max(int(s) for s in settings["seq_lengths"]), max_len)
    big_texts = fixed_length_texts(sentences, big_batch, big_len)
    warmup = int(settings["warmup"])
    watch = CpuWatch()
    probes, start = [], time.perf_counter()
    repeats, min_repeats = max(1, int(settings["repeats"])), int(settings["min_repeats"])
    if hasattr(os, "fork"):
        for i in range(2 * repeats):
            probes.append(in_child(lambda big=(i == 0): round_probe(make_engine, sentences, threads, warmup,
                                                                      big_texts if big else None, big_len)))
            if "error" in probes[-1]:
                raise RuntimeError(f"batch-1 round in a child process failed: {probes[-1]['error']}")
            if sum(not _disturbed(p) for p in probes) >= repeats:
                break
            if len(probes) >= min_repeats and time.perf_counter() - start > float(settings["max_seconds"]):
                break
    else:  # no fork (e.g. Windows): rounds in this process; no cold start or memory
        return {"latency_ms": {str(t): summarise(timed_round(make_engine(t), sentences, warmup)) for t in threads},
                "cold": {"error": "no fork() on this platform: cold start and memory not measured"},
                "threads": threads}
    used = [p for p in probes if not _disturbed(p)]
    if len(used) < min(min_repeats, len(probes)):
        used = probes  # the machine stayed busy: keep every round (the report flags it)
    latency = {}
    for t in threads:
        per_round = [p["rounds"][str(t)] for p in used]
        latency[str(t)] = summarise([x for r in per_round for x in r], [float(np.median(r)) for r in per_round])
        latency[str(t)]["processes"] = len(per_round)
    cold = {k: float(np.median([p[k] for p in probes])) for k in
            ("cold_start_ms", "baseline_rss_mb", "peak_rss_batch1_mb", "model_rss_batch1_mb")}
    cold.update({k: probes[0][k] for k in ("peak_rss_mb", "model_rss_mb", "largest_batch") if k in probes[0]})
    cold["cold_start_runs_ms"] = [round(p["cold_start_ms"], 2) for p in probes]
    cold["threads"] = threads[0]
    contention = watch.result() or {}
    others = [p["other_cores"] for p in used if p.get("other_cores") is not None]
    contention.update(rounds=len(probes), rounds_used=len(used),
                      round_other_cores=[p.get("other_cores") for p in probes],
                      used_other_cores=round(float(np.mean(others)), 3) if others else None)
    return {"latency_ms": latency, "cold": cold, "threads": threads, "pids": [p["pid"] for p in probes],
            "seconds": time.perf_counter() - start, "contention": contention}


# -- the ONNX engine (what an app runs) -----------------------------------------------------------------
class OnnxEngine:
    """A bundle (manifest.json, model, tokenizer.json) run with onnxruntime on the CPU.

    Mirrors edgedistill.runtime.OnnxEncoder (a test checks they agree); duplicated so this file stands alone.
    """

    runtime = "onnxruntime"

    def __init__(self, model_dir: str, threads: int = 0) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        manifest = json.loads(_read(os.path.join(model_dir, "manifest.json")) or "{}")
        if not manifest:
            raise SystemExit(f"{model_dir}: no manifest.json; point --model at an exported edgedistill bundle")
        self.manifest = manifest
        self.max_seq_length = int(manifest["max_seq_length"])
        self.input_names = list(manifest["inputs"])
        self.tokenizer = Tokenizer.from_file(os.path.join(model_dir, manifest.get("tokenizer", "tokenizer.json")))
        self.tokenizer.enable_padding(pad_id=int(manifest["pad_token_id"]), pad_token=manifest["pad_token"])
        self._truncate(self.max_seq_length)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(os.path.join(model_dir, manifest.get("model", "model.onnx")),
                                            sess_options=options, providers=["CPUExecutionProvider"])

    def _truncate(self, length: int) -> None:
        self._length = length
        self.tokenizer.enable_truncation(max_length=length)

    def _run(self, texts: list):
        import numpy as np

        encodings = self.tokenizer.encode_batch(texts)
        feeds = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                 "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64)}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.array([e.type_ids for e in encodings], dtype=np.int64)
        return self.session.run(None, feeds)[0]

    def encode(self, texts: list, batch_size: int = 32, max_length: int | None = None):
        """Normalised embeddings; batches sorted by length, returned in the caller's order."""
        import numpy as np

        length = min(max_length or self.max_seq_length, self.max_seq_length)
        if length != self._length:
            self._truncate(length)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = None
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            emb = self._run([texts[i] for i in idx])
            if out is None:
                out = np.zeros((len(texts), emb.shape[1]), dtype=np.float32)
            out[idx] = emb
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def model_files(model_dir: str, manifest: dict) -> dict:
    """Sizes (MB) of the model file with its external data, of the whole folder, and the model's sha256."""
    model = os.path.join(model_dir, manifest.get("model", "model.onnx"))
    stem = os.path.splitext(os.path.basename(model))[0]
    names = sorted(os.listdir(model_dir))
    weights = [n for n in names if n == os.path.basename(model)
               or (n.startswith(stem) and n.endswith((".data", ".onnx_data", ".onnx.data")))]

    def size(name: str) -> int:
        return os.path.getsize(os.path.join(model_dir, name))

    digest = hashlib.sha256()
    with open(model, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"file": os.path.basename(model), "sha256": digest.hexdigest(),
            "size_mb": round(sum(size(n) for n in weights) / 1e6, 3),
            "bundle_mb": round(sum(size(n) for n in names if os.path.isfile(os.path.join(model_dir, n))) / 1e6, 3),
            "quantized": bool(manifest.get("quantization"))}


def resolve_threads(threads: list) -> list:
    """Thread counts with 0 replaced by the usable core count, de-duplicated in order."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    out = []
    for t in threads:
        t = cores if int(t) == 0 else int(t)
        if t not in out:
            out.append(t)
    return out


def measure(make_engine, sentences: list, settings: dict, rounds: dict | None = None) -> dict:
    """Every measurement of one model: batch-1 rounds, cold start and memory in fresh processes (unless
    ``rounds`` already holds them), then throughput in this process."""
    settings = {**DEFAULT_SETTINGS, **settings}
    if rounds is None:
        rounds = process_rounds(make_engine, sentences, settings)
    threads = rounds["threads"]
    tput = throughput(make_engine(threads[0]), sentences, settings)
    lengths = sorted(len(s.split()) for s in sentences)
    return {
        "threads": threads,
        "headline_threads": threads[0],
        "latency_ms": rounds["latency_ms"],
        "throughput": tput,
        "cold": rounds["cold"],
        "contention": rounds.get("contention"),
        "sentences": {"count": len(sentences), "words_min": lengths[0], "words_p50": lengths[len(lengths) // 2],
                      "words_max": lengths[-1]},
        "settings": settings,
    }


def headline(result: dict) -> dict:
    """The few numbers a report table shows, from a full result."""
    lat = result["latency_ms"][str(result["headline_threads"])]
    cold = result.get("cold", {})
    return {"latency_ms_p50": lat["p50"], "latency_ms_p90": lat["p90"], "latency_ms_p99": lat["p99"],
            "spread_pct": lat.get("spread_pct"), "threads": result["headline_threads"],
            "throughput_per_s": result["throughput"]["real"]["sentences_per_s"],
            "throughput_batch_size": result["throughput"]["real"]["batch"],
            "cold_start_ms": cold.get("cold_start_ms"), "peak_rss_mb": cold.get("peak_rss_mb"),
            "model_rss_mb": cold.get("model_rss_mb"), "model_rss_batch1_mb": cold.get("model_rss_batch1_mb"),
            "other_cores": (result.get("contention") or {}).get("used_other_cores"),
            "rounds_used": (result.get("contention") or {}).get("rounds_used"),
            "rounds": (result.get("contention") or {}).get("rounds"),
            "size_mb": result.get("model", {}).get("size_mb")}


class _OnnxFactory:
    """Builds OnnxEngine(model_dir, threads); carries the model's max sequence length."""

    def __init__(self, model_dir: str) -> None:
        self.model_dir = model_dir
        manifest = json.loads(_read(os.path.join(model_dir, "manifest.json")) or "{}")
        if not manifest:
            raise SystemExit(f"{model_dir}: no manifest.json; point --model at an exported edgedistill bundle")
        self.manifest = manifest
        self.max_seq_length = int(manifest["max_seq_length"])

    def __call__(self, threads: int) -> OnnxEngine:
        return OnnxEngine(self.model_dir, threads)


def run(model_dir: str, sentences: list, settings: dict, label: str | None = None) -> dict:
    """Profile one ONNX bundle; returns the result document."""
    started = time.time()
    facts = host_facts()
    factory = _OnnxFactory(model_dir)
    t0 = time.perf_counter()
    result = measure(factory, sentences, settings)
    return {"format": FORMAT, "version": VERSION, "label": label or facts["hostname"], "runtime": "onnxruntime",
            "runtime_version": facts["onnxruntime"], "model": model_files(model_dir, factory.manifest),
            "host": facts, **result, "started_unix": round(started, 1), "wall_s": round(time.perf_counter() - t0, 2)}


def _check_dependencies() -> None:
    missing = []
    for name in ("numpy", "onnxruntime", "tokenizers"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        sys.stderr.write(f"bench.py: {platform.node()} ({sys.executable}) lacks {', '.join(missing)}; "
                         f"install with: {sys.executable} -m pip install onnxruntime numpy tokenizers\n")
        sys.exit(EXIT_MISSING_DEPENDENCY)


def main(argv: list | None = None) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description="Profile an edgedistill ONNX bundle on this machine.")
    parser.add_argument("--model", default=os.path.join(here, "model"), help="bundle folder (manifest.json, model, tokenizer)")
    parser.add_argument("--sentences", default=os.path.join(here, "sentences.json"), help="JSON list of sentences")
    parser.add_argument("--settings", default=os.path.join(here, "settings.json"), help="JSON settings (optional)")
    parser.add_argument("--label", default=None, help="name of this device in the report (default: hostname)")
    parser.add_argument("--out", default="result.json", help="where the JSON result goes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="bench: %(message)s", stream=sys.stderr)
    _check_dependencies()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sentences = json.loads(_read(args.sentences) or "null")
    if not sentences or not isinstance(sentences, list):
        sys.stderr.write(f"bench.py: {args.sentences}: expected a JSON list of sentences\n")
        return 2
    settings = json.loads(_read(args.settings) or "{}")
    unknown = sorted(set(settings) - set(DEFAULT_SETTINGS))
    if unknown:
        sys.stderr.write(f"bench.py: {args.settings}: unknown settings {unknown}; allowed: {sorted(DEFAULT_SETTINGS)}\n")
        return 2
    log.info("profiling %s on %s (%d sentences)", args.model, platform.node(), len(sentences))
    result = run(args.model, sentences, settings, args.label)
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, args.out)
    h = headline(result)
    log.info("batch-1 p50 %.2f ms (p90 %.2f, spread %.1f%%), %.0f sentences/s at batch %d -> %s",
             h["latency_ms_p50"], h["latency_ms_p90"], h["spread_pct"] or 0, h["throughput_per_s"],
             h["throughput_batch_size"], args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
