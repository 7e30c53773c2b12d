"""Profile: batch-1 latency percentiles, throughput, threads, cold start, memory and size of an ONNX bundle on
each target, with the teacher and the chain's earlier artifacts measured beside it on this machine.

The heavy lifting is in edgedistill.profiling: a self-contained bench bundle (written into this stage's folder,
``bench/``, so it can be copied to a device and run by hand) is run here and on SSH devices; PyTorch models
are measured by the same timing code in a worker process.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edgedistill.contract import StageContext, StageResult
from edgedistill.errors import EdgedistillError
from edgedistill.stages.configs import ProfileStage
from edgedistill.tasks import get_task

log = logging.getLogger(__name__)


def pick_sentences(task: Any, data: Any, n: int) -> list[str]:
    """The first ``n`` held-out inputs of the task's evaluation set (never trained on)."""
    pool = task.sample_texts(data)
    if not pool:
        raise EdgedistillError("profile: the evaluation set has no sentences to time; set evaluation.heldout "
                               "(e.g. snli-heldout) or evaluation.sts in the recipe")
    if len(pool) < n:
        log.warning("profile: only %d held-out sentences (asked for %d); timing those", len(pool), n)
    return pool[:n]


def host_facts() -> dict[str, Any]:
    """CPU model, architecture, ISA features, cores and library versions of this machine."""
    from edgedistill.profiling.bench import host_facts as facts

    return facts()


def run(cfg: ProfileStage, ctx: StageContext) -> StageResult:
    task = ctx.task or get_task()
    own = getattr(task, "profile", None)
    if own is not None:  # a task whose workload is not one text per call (rerankers: 1 query x N candidates)
        return own(cfg, ctx)
    from edgedistill.profiling.bench import headline
    from edgedistill.profiling.profiler import (
        ChainItem,
        bench_settings,
        is_sentence_transformer,
        profile,
        speedups,
        upstream_chain,
    )
    from edgedistill.profiling.torch_bench import is_seqcls

    sentences = pick_sentences(task, ctx.evaluator.data, cfg.sentences)
    settings = bench_settings(cfg)
    chain = upstream_chain(ctx.input.path, ctx.input.kind)
    item = chain[-1]
    compare: list[ChainItem] = []
    if "teacher" in cfg.compare:
        if is_sentence_transformer(ctx.teacher) or is_seqcls(ctx.teacher):
            compare.append(ChainItem("teacher", "teacher", "teacher", Path(ctx.teacher)))
        else:
            log.warning("profile: teacher %s is neither a sentence-transformers nor a sequence-classification "
                        "folder; not measured", ctx.teacher)
    for c in chain[:-1]:
        if (c.kind == "sentence-transformer" and "student" in cfg.compare) or (c.kind == "onnx" and "onnx" in cfg.compare):
            compare.append(c)
    run_dir = ctx.work_dir.parent
    measurements = profile(item, sentences, settings, cfg.targets, ctx.work_dir, compare,
                           run_dir=str(run_dir))
    first = next(m for m in measurements if m["profiled"])
    ratios = speedups(measurements, first["target"])
    metrics = {
        **{k: v for k, v in headline(first["result"]).items()},
        "target": first["target"],
        "speedup_vs_teacher": ratios.get(item.dir),
        "host": first["result"]["host"],
        "settings": settings,
        "sentences": first["result"]["sentences"],
        "bench_bundle": "bench",
        "measurements": measurements,
    }
    return StageResult(metrics=metrics, passthrough=True)


def _fmt(v: Any, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def report_section(metrics: dict[str, Any]) -> str | None:
    """Per-target detail: latency by thread count, throughput over batch sizes x sequence lengths, the bundle."""
    measurements = metrics.get("measurements")
    if not measurements:
        return None
    lines = []
    targets = list(dict.fromkeys(m["target"] for m in measurements))
    for target in targets:
        ms = [m for m in measurements if m["target"] == target]
        threads = list(dict.fromkeys(t for m in ms for t in m["result"]["threads"]))
        lines += [f"**{target}**: batch-1 p50 ms (p90) by intra-op threads", "",
                  "| model | " + " | ".join(f"{t} thread{'s' if t > 1 else ''}" for t in threads) + " |",
                  "|---|" + "---|" * len(threads)]
        for m in ms:
            lat = m["result"]["latency_ms"]
            cells = [f"{lat[str(t)]['p50']:.2f} ({lat[str(t)]['p90']:.2f})" if str(t) in lat else "–" for t in threads]
            lines.append(f"| {m['label']} | " + " | ".join(cells) + " |")
        grid_keys = list(dict.fromkeys((g["batch"], g["seq"]) for m in ms for g in m["result"]["throughput"]["grid"]))
        headline_threads = ms[0]["result"]["headline_threads"]
        lines += ["", (f"**{target}**: throughput, sequences/s at {headline_threads} thread(s) (each sequence "
                       "exactly that many tokens of real text)"), "",
                  "| batch x tokens | " + " | ".join(m["label"] for m in ms) + " |", "|---|" + "---|" * len(ms)]
        for batch, seq in grid_keys:
            cells = []
            for m in ms:
                cell = next((g for g in m["result"]["throughput"]["grid"] if (g["batch"], g["seq"]) == (batch, seq)),
                            None)
                cells.append(f"{cell['seq_per_s']:.1f}" if cell else "–")
            lines.append(f"| {batch} x {seq} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append(f"Bench bundle: `{metrics.get('bench_bundle', 'bench')}/` in this stage's folder (model, tokenizer, "
                 "sentences, settings, bench.py). Copy it to a device, run `python3 bench.py --label NAME "
                 "--out result.json` there, then `edgedistill report RUN_DIR --merge result.json`.")
    return "\n".join(lines)
