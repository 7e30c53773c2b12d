"""Export: the torch student to one ONNX graph (plus tokenizer and manifest), checked numerically against PyTorch.

The graph (inputs, outputs, pooling) and its check are the task's: see ``Task.export`` (the embedding task's is
``tasks/embedding/export.py``). This module runs it and formats the report section.
"""

from __future__ import annotations

from typing import Any

from edgedistill.contract import StageContext, StageResult
from edgedistill.stages.configs import ExportStage
from edgedistill.tasks import get_task
from edgedistill.timing import threads_label


def run(cfg: ExportStage, ctx: StageContext) -> StageResult:
    return (ctx.task or get_task()).export(cfg, ctx)


def report_section(metrics: dict[str, Any]) -> str:
    """Validation by length, the optimisation decision and the tokenizer-in-graph check as Markdown."""
    v = metrics.get("validation", {})
    lines = [(f"Opset {metrics.get('opset')} ({metrics.get('exporter')}), inputs {', '.join(metrics.get('inputs', []))}. "
             f"Checked against PyTorch on {v.get('check_sentences')} sentences ({v.get('tokens_min')}-"
             f"{v.get('tokens_max')} tokens) at batch sizes {v.get('batch_sizes')}: max abs diff "
             f"{v.get('max_abs_diff', float('nan')):.2e}, min cosine {v.get('min_cosine', float('nan')):.6f}."), ""]
    opt = metrics.get("optimization")
    if opt:
        lat = opt["latency"]
        fusions = ", ".join(f"{k} x{n}" for k, n in opt["fusions"].items()) or "none"
        lines += ["| graph | batch-1 p50 ms | p90 ms | max abs diff vs torch |", "|---|---|---|---|",
                  (f"| plain | {lat['plain']['latency_ms_p50']:.3f} | {lat['plain']['latency_ms_p90']:.3f} "
                  f"| {v.get('max_abs_diff', float('nan')):.2e} |"),
                  (f"| optimised | {lat['optimized']['latency_ms_p50']:.3f} | {lat['optimized']['latency_ms_p90']:.3f} "
                  f"| {opt['validation']['max_abs_diff']:.2e} |"), "",
                  (f"Fusions: {fusions}. Speed-up x{opt['speedup']:.3f} (won {opt['rounds_won']}/{opt['rounds']} rounds at "
                  f"{threads_label(opt.get('timing_threads', 0))}; "
                  f"needs x{opt['min_speedup']:g} and a majority): optimised graph "
                  f"{'applied' if opt['applied'] else 'not applied'} (mode {opt['mode']})."), ""]
    tig = metrics.get("tokenizer_in_graph")
    if tig:
        lat = tig["latency"]
        lines.append(f"Tokenizer in graph: max abs diff {tig['validation']['max_abs_diff']:.2e} vs the two-file path "
                     f"(tolerance {tig['validation']['tolerance']:g}); batch-1 p50 "
                     f"{lat['in_graph']['latency_ms_p50']:.3f} ms vs {lat['two_file']['latency_ms_p50']:.3f} ms.")
    return "\n".join(lines)
