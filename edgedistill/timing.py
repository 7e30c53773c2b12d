"""One way to time a model: batch-1 wall time per input, summarised as ``latency_ms_p50`` / ``latency_ms_p90``.

The evaluator, the export's fusion decision and the quantization search all report these names, so a number
means the same thing wherever it appears (the profile stage adds p99 and spread from fresh processes).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

P50, P90 = "latency_ms_p50", "latency_ms_p90"


def summarize_ms(times_ms: Sequence[float]) -> dict[str, float]:
    """p50 and p90 of wall times in ms; empty when nothing was timed."""
    if not len(times_ms):
        return {}
    return {P50: float(np.percentile(times_ms, 50)), P90: float(np.percentile(times_ms, 90))}


def time_ms(call: Callable[[Any], Any], item: Any) -> float:
    t0 = time.perf_counter()
    call(item)
    return (time.perf_counter() - t0) * 1000


def batch1_latency(call: Callable[[Any], Any], inputs: Sequence[Any], warmup: int = 5,
                   repeats: int = 1) -> dict[str, float]:
    """Call ``call(x)`` once per input (after ``warmup`` untimed calls), ``repeats`` passes; p50/p90 in ms."""
    for item in inputs[:warmup]:
        call(item)
    return summarize_ms([time_ms(call, item) for _ in range(repeats) for item in inputs])


def threads_label(n: int) -> str:
    """'all cores' for 0, else 'N thread(s)'."""
    return "all cores" if not n else f"{n} thread{'s' if n > 1 else ''}"
