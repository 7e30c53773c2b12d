"""Quantize: the fastest INT8 configuration for the target CPU whose quality stays within the recipe's budget.

The search itself lives in edgedistill.quant.search (onnxruntime) and edgedistill.quant.inc (Intel Neural
Compressor); this module wires it to the run: data, evaluator, budget, gate, artifact and report.
"""

from __future__ import annotations

import logging
import os
import shutil
from functools import partial
from pathlib import Path
from typing import Any

from edgedistill.contract import ONNX, StageContext, StageResult
from edgedistill.errors import GateError
from edgedistill.integrity import write_json_atomic
from edgedistill.stages.configs import QuantizeStage
from edgedistill.tasks import get_task

log = logging.getLogger(__name__)

CONFIG_FILE = "quantization_config.json"
INVARIANCE_SENTENCES = 128  # alone vs in batches of 64 (edgedistill.quant.invariance)


def candidate_settings(cfg: QuantizeStage) -> list:
    """The target preset's candidates with the recipe's pinned fields applied."""
    from edgedistill.quant.presets import resolve

    overrides = {"calibration": cfg.calibration, "per_channel": cfg.per_channel, "reduce_range": cfg.reduce_range,
                 "activation_type": cfg.activation_type, "weight_type": cfg.weight_type, "embedding": cfg.embedding,
                 "calibration_sentences": cfg.calibration_sentences, "op_types": tuple(cfg.op_types)}
    return resolve(cfg.target, cfg.method, overrides)


def search_sentences(cfg: QuantizeStage, ctx: StageContext) -> tuple[list[str], list[str]]:
    """Calibration and proxy sentences: disjoint samples of the recipe's training data (in-domain). Without
    training data (unit tests) the evaluator's held-out sentences stand in."""
    from edgedistill.quant.calibration import split_sentences

    own = getattr(ctx.task, "calibration_inputs", None)  # a task whose data section is not a sentence pool (pairs)
    if own is not None and ctx.inputs.data is not None:
        return own(ctx.inputs.data, cfg.calibration_sentences, cfg.search.proxy_sentences, ctx.inputs.seed)
    if ctx.inputs.train is not None:
        return split_sentences(ctx.inputs.train, cfg.calibration_sentences, cfg.search.proxy_sentences,
                               ctx.inputs.seed)
    task = ctx.task or get_task()
    pool = list(task.sample_texts(ctx.evaluator.data))
    return pool[: max(1, len(pool) // 2)], pool[len(pool) // 2:] or pool


def run(cfg: QuantizeStage, ctx: StageContext) -> StageResult:
    from edgedistill import portable
    from edgedistill.quant import calibration, invariance, measure
    from edgedistill.quant.presets import PORTABLE_GRAPH_TARGETS
    from edgedistill.quant.search import Budget, Search, SearchConfig, cleanup
    needs_portable = cfg.target in PORTABLE_GRAPH_TARGETS
    source = portable.portable_source(ctx.input.path, ctx.work_dir, cfg.target) if needs_portable else ctx.input.path
    candidates = candidate_settings(cfg)
    calib, proxy_sentences = search_sentences(cfg, ctx)
    budget = Budget(dict(ctx.input_evaluation), list(cfg.budget_metrics), cfg.max_drop, cfg.max_size_mb)
    measured = [m for m in cfg.budget_metrics if ctx.input_evaluation.get(m)]
    if not measured:
        log.warning("quantize: none of the budget metrics %s was measured on the fp32 input; the search keeps "
                    "the fastest trial without a quality check", cfg.budget_metrics)
    task = ctx.task or get_task()
    threads = ctx.inputs.threads
    proxy = task.quality_proxy(source, proxy_sentences, threads=threads)
    timing = proxy_sentences[: cfg.search.latency_sentences]
    latency_fn = partial(measure.latency, sentences=timing, repeats=cfg.search.latency_repeats, threads=threads)
    final_timing = partial(measure.interleaved_latency, sentences=timing, rounds=cfg.search.latency_repeats,
                           threads=threads)

    def evaluate(bundle: Path) -> dict[str, float]:
        return ctx.evaluator.quality(task.load(ONNX, bundle))

    work = ctx.work_dir / "search"
    search_cfg = SearchConfig(granularity=cfg.search.sensitivity, max_evaluations=cfg.search.max_evaluations)
    if cfg.backend == "inc":
        from edgedistill.quant.inc import IncSearch

        search: Any = IncSearch(source, work, candidates, budget=budget, evaluate=evaluate, proxy=proxy,
                                calibration_sentences=calib, latency_fn=latency_fn, exclude=cfg.exclude_nodes,
                                config=search_cfg, final_timing=final_timing)
    else:
        needs_calibration = any(c.method == "static" for c in candidates)
        feeds = calibration.feeds(source, calib) if needs_calibration else None
        search = Search(source, work, candidates, budget=budget, evaluate=evaluate, proxy=proxy,
                        calibration_feeds=feeds, latency_fn=latency_fn, exclude=cfg.exclude_nodes, config=search_cfg,
                        final_timing=final_timing)
    result = search.run()
    trials = [t.record() for t in result.trials]
    metrics: dict[str, Any] = {
        "backend": cfg.backend, "target": cfg.target, "trials": trials, "within_budget": result.within_budget,
        "chosen_trial": result.chosen.id if result.chosen else None, "fp32_latency": result.fp32_latency,
        "sensitivity": result.sensitivity, "evaluations": result.evaluations,
        "budget": {"max_drop": cfg.max_drop, "metrics": measured, "max_size_mb": cfg.max_size_mb,
                   "reference": {m: ctx.input_evaluation[m] for m in measured}},
    }
    if cfg.backend == "inc":  # how INC's autotune ended: returned, exhausted, exit (nothing met its goal)
        metrics["inc_status"] = {k: v for k, v in search.inc_status.items() if k in ("status", "message")}
    if result.chosen is None:
        write_json_atomic(ctx.work_dir / "trials.json", trials)
        raise GateError("quantize: no trial could be evaluated; see trials.json in the stage's temporary folder")
    chosen = result.chosen
    if not result.within_budget:
        message = (f"quantize: no configuration stayed within max_drop {100 * cfg.max_drop:.2f}% of the fp32 "
                   f"{', '.join(measured)}" + (f" and under {cfg.max_size_mb:g} MB" if cfg.max_size_mb else "")
                   + f"; the best was trial {chosen.id} ({chosen.label}) with a worst drop of "
                   f"{100 * (chosen.drop or 0):.2f}%. Raise max_drop, try another target or method "
                   "(e.g. method: dynamic), raise search.max_evaluations, or set on_fail: warn to keep the best.")
        if cfg.on_fail == "error":
            write_json_atomic(ctx.work_dir / "trials.json", trials)
            raise GateError(message)
        log.warning(message)
    log.info("quantize: chose trial %d (%s): batch-1 %.3f ms vs fp32 %.3f ms, %.1f MB", chosen.id, chosen.label,
             chosen.latency.get("latency_ms_p50", float("nan")),
             result.fp32_latency.get("latency_ms_p50", float("nan")), chosen.size_mb)
    os.replace(chosen.bundle, ctx.artifact_dir)
    cleanup(result, keep=None)
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(ctx.work_dir / "portable-source", ignore_errors=True)
    write_config(ctx.artifact_dir, cfg, chosen, measured)
    metrics["graph"] = portable.record(ctx.artifact_dir, cfg.target, needs_portable)
    metrics["batch_invariance"] = invariance.record(ctx.artifact_dir, proxy_sentences[:INVARIANCE_SENTENCES], threads)
    return StageResult(metrics=metrics)


def write_config(bundle: Path, cfg: QuantizeStage, chosen, measured: list[str]) -> dict[str, Any]:
    """Save the resolved configuration beside the model and record it in the manifest."""
    from edgedistill.manifest import read_manifest, write_manifest

    config = {
        "backend": chosen.backend, "target": cfg.target, **chosen.settings.model_dump(mode="json"),
        "excluded_groups": chosen.excluded_groups, "excluded_nodes": chosen.excluded,
        "budget": {"max_drop": cfg.max_drop, "metrics": measured, "max_size_mb": cfg.max_size_mb},
        "measured": {"relative_drop": chosen.drop, "drops": chosen.drops, "proxy_cosine": chosen.proxy_cosine,
                     **chosen.latency, "size_mb": chosen.size_mb},
    }
    write_json_atomic(bundle / CONFIG_FILE, config)
    manifest = read_manifest(bundle)
    manifest["quantization"] = {k: config[k] for k in ("backend", "target", "method", "activation_type",
                                                         "weight_type", "per_channel", "reduce_range", "embedding")}
    manifest["quantization"]["config"] = CONFIG_FILE
    write_manifest(bundle, manifest)
    return config


def _f(value: Any, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) else "–"


def report_section(metrics: dict) -> str:
    """Every quantization trial as a Markdown table, the chosen one marked, then the most sensitive groups."""
    trials = metrics.get("trials", [])
    b = next((k for t in trials for k in t if k.startswith("latency_ms_per_sentence_b")), "latency_ms_per_sentence_b32")
    fp32 = metrics.get("fp32_latency", {})
    budget = metrics.get("budget", {})
    cap = f", at most {budget['max_size_mb']:g} MB" if budget.get("max_size_mb") else ""
    intro = (f"Backend {metrics.get('backend', 'onnxruntime')}, target {metrics.get('target', 'portable')}; budget: "
             f"at most {100 * budget.get('max_drop', 0):.1f}% relative drop of "
             f"{', '.join(budget.get('metrics', [])) or 'nothing measured'} vs fp32{cap}. fp32 input: batch-1 "
             f"{_f(fp32.get('latency_ms_p50'), '.3f')} ms, {_f(fp32.get(b), '.3f')} ms/sentence batched.")
    inc = metrics.get("inc_status")
    if inc:
        intro += (f" INC's autotune ended: {inc.get('status', 'no report')}"
                  + (f" ({inc['message']})" if inc.get("message") else "")
                  + "; the trial kept is chosen here from every trial INC proposed, not INC's last.")
    quality = list(budget.get("metrics") or [])  # the task's metrics held to the budget
    header = (f"| trial | setting | fp32 groups | proxy | {' | '.join(quality)}{' | ' if quality else ''}worst drop % "
              f"| batch-1 ms | {b.rsplit('_', 1)[-1]} ms/sent | size MB | |")
    lines = [intro, "", header, "|" + "---|" * (9 + len(quality))]
    for t in trials:
        mark = "**chosen**" if t["trial"] == metrics.get("chosen_trial") else t.get("note", "")
        drop = 100 * t["relative_drop"] if t.get("relative_drop") is not None else None
        lines.append(
            f"| {t['trial']} | {t['setting']} | {len(t.get('excluded_groups', []))} | {_f(t.get('proxy_cosine'), '.4f')} "
            + "".join(f"| {_f(t.get(m), '.2f')} " for m in quality) + f"| {_f(drop, '.2f')} "
            f"| {_f(t.get('latency_ms_p50'), '.3f')} | {_f(t.get(b), '.3f')} | {_f(t.get('size_mb'), '.1f')} | {mark} |")
    if metrics.get("batch_invariance"):
        from edgedistill.quant.invariance import report_line

        lines += ["", report_line(metrics["batch_invariance"])]
    for label, groups in (metrics.get("sensitivity") or {}).items():
        top = ", ".join(f"{g['group']} ({g['proxy_error']:.1e})" for g in groups[:5])
        lines += ["", f"Most sensitive ({label}; 1 - proxy agreement with fp32 when quantized alone): {top}."]
    return "\n".join(lines)
