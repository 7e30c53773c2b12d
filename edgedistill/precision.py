"""bf16 autocast where the hardware computes bf16 natively: CUDA GPUs, and CPUs with AVX512-BF16 or AMX (x86)
or the BF16 extension (Arm).

Measured on this project's 2-core AMD EPYC (Zen 4, AVX512-BF16): the mpnet teacher labels 2.2x faster under CPU
bf16 autocast than in fp32 (cosine to the fp32 labels >= 0.99995, benchmarks/labelling.py), and a training step of
an mpnet cross-encoder runs 1.9x faster. On a CPU without native bf16, autocast emulates it and is slower than fp32,
so it is used only where :func:`native_bf16` says so.

``EDGEDISTILL_CPU_BF16=0`` turns CPU bf16 off (the test suite does, so its results do not depend on the CPU it
runs on); ``=1`` forces it on.
"""

from __future__ import annotations

import functools
import os
from contextlib import AbstractContextManager, nullcontext
from typing import Any

CPU_BF16_ENV = "EDGEDISTILL_CPU_BF16"
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 (/proc/cpuinfo "flags"); Arm's is "bf16" in "Features"


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return frozenset(flags)


def cpu_native_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products natively (or ``EDGEDISTILL_CPU_BF16`` says otherwise)."""
    forced = os.environ.get(CPU_BF16_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    flags = _cpu_flags()
    return any(f in flags for f in CPU_BF16_FLAGS) or "bf16" in flags


def native_bf16(device: str) -> bool:
    """Whether bf16 autocast on ``device`` ('cpu', 'cuda', 'cuda:1') is faster than fp32 here."""
    if str(device).startswith("cuda"):
        import torch

        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return str(device) == "cpu" and cpu_native_bf16()


def autocast(device: str, enabled: bool = True) -> AbstractContextManager[Any]:
    """bf16 autocast on ``device`` when ``enabled`` and the hardware has native bf16; otherwise a no-op."""
    if not (enabled and native_bf16(device)):
        return nullcontext()
    import torch

    return torch.autocast(device_type="cuda" if str(device).startswith("cuda") else "cpu", dtype=torch.bfloat16)
