"""Profile: batch-1 latency over real sentences, batched throughput and size of an ONNX bundle."""

from __future__ import annotations

import logging
import os
import platform
import time

import numpy as np

from edgedistill.recipe import ProfileStage
from edgedistill.runner import StageContext, StageResult, artifact_size_mb

log = logging.getLogger(__name__)


def host_facts() -> dict[str, object]:
    import onnxruntime

    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "machine": platform.machine(), "cores": os.cpu_count(),
            "onnxruntime": onnxruntime.__version__, "python": platform.python_version()}


def run(cfg: ProfileStage, ctx: StageContext) -> StageResult:
    from edgedistill.runtime import OnnxEncoder

    data = ctx.evaluator.data
    pool = data.heldout or data.latency_sentences
    sentences = [pool[i % len(pool)] for i in range(cfg.sentences)]
    t0 = time.perf_counter()
    encoder = OnnxEncoder(ctx.input.path, threads=cfg.threads)
    encoder.encode(sentences[:1], batch_size=1)
    cold_start_ms = (time.perf_counter() - t0) * 1000

    for s in sentences[: cfg.warmup]:
        encoder.encode([s], batch_size=1)
    times = []
    for s in sentences:
        t = time.perf_counter()
        encoder.encode([s], batch_size=1)
        times.append((time.perf_counter() - t) * 1000)
    t = time.perf_counter()
    encoder.encode(sentences, batch_size=cfg.batch_size)
    throughput = len(sentences) / (time.perf_counter() - t)

    metrics = {
        "latency_ms_p50": float(np.percentile(times, 50)),
        "latency_ms_p90": float(np.percentile(times, 90)),
        "latency_ms_p99": float(np.percentile(times, 99)),
        "throughput_per_s": float(throughput),
        "throughput_batch_size": cfg.batch_size,
        "cold_start_ms": cold_start_ms,
        "size_mb": artifact_size_mb(ctx.input.path),
        "threads": cfg.threads or os.cpu_count(),
        "host": host_facts(),
    }
    log.info("profile: p50 %.2f ms, p90 %.2f ms, %.0f sentences/s at batch %d, %.1f MB",
             metrics["latency_ms_p50"], metrics["latency_ms_p90"], throughput, cfg.batch_size, metrics["size_mb"])
    return StageResult(metrics=metrics, passthrough=True)
