"""Quantization settings and the target presets that choose them.

A preset is a named factory returning the candidate settings the search may try for one kind of CPU, best
first. The recipe can pin any field; the resolved settings of the chosen trial are saved beside the artifact.

Why these defaults (onnxruntime's CPU kernels; see also the benchmark in benchmarks/quantize.py):

- x86 without VNNI (``avx2``): U8S8 products are summed in 16 bits by VPMADDUBSW and can saturate, so
  weights use 7 bits (``reduce_range``). Static activations stay asymmetric uint8.
- x86 with VNNI (``avx512_vnni``): VPDPBUSD accumulates in 32 bits, full 8-bit weights.
- ARM64: full 8-bit weights; static activations asymmetric uint8 (U8S8, which onnxruntime's ARM64 kernels run
  with UDOT/SDOT). Symmetric int8 activations were tried first and dropped: on the default student they cost
  accuracy (mean cosine to fp32 0.989 vs 0.996, weight MatMuls only) and, with their coarser steps, their vectors
  moved between x86 and aarch64 by more than the 0.999 parity bar (min cosine 0.9935 vs 0.9994;
  benchmarks/results/arm_static.md, docs/clients.md).
- ``portable``: dynamic quantization (no calibration, no per-tensor activation ranges to go stale) with
  7-bit per-channel weights, correct on every CPU onnxruntime runs on.

S8S8 activations on x86 go through a slow path (default student, static: 8.1 vs 0.95 ms per sentence for U8S8 in a quick check),
so no preset uses them (pin ``activation_type: int8`` to get them). Every preset quantizes weight
MatMuls only (attention-score MatMuls, LayerNorm and GELU stay fp32), including the Q/K/V weights inside a
fused Attention node (dynamic mode: onnxruntime's QAttention), and stores the word-embedding table in INT8,
one scale per row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Method = Literal["dynamic", "static"]
Calibration = Literal["minmax", "entropy", "percentile"]
Embedding = Literal["fp32", "int8"]
IntType = Literal["uint8", "int8"]
Target = Literal["portable", "arm64", "avx2", "avx512_vnni"]


class QuantSettings(BaseModel):
    """One fully resolved quantization configuration (what a trial runs and what is saved)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Method = "dynamic"
    op_types: tuple[str, ...] = ("MatMul", "Attention")
    activation_type: IntType = "uint8"
    weight_type: IntType = "int8"
    per_channel: bool = True
    reduce_range: bool = False
    activation_symmetric: bool = False
    calibration: Calibration | None = Field(default=None, description="Static only: how activation ranges are set.")
    percentile: float = Field(default=99.999, gt=90, le=100)
    calibration_sentences: int = Field(default=200, gt=0)
    embedding: Embedding = "int8"

    def label(self) -> str:
        """Short human-readable name, e.g. 'static minmax U8S8 per-channel 7-bit emb-int8'."""
        parts = [self.method]
        if self.method == "static":
            parts.append(self.calibration or "minmax")
        act = ("S8" if self.activation_type == "int8" else "U8") if self.method == "static" else "U8"
        parts.append(act + ("S8" if self.weight_type == "int8" else "U8"))
        parts.append("per-channel" if self.per_channel else "per-tensor")
        if self.reduce_range:
            parts.append("7-bit")
        parts.append(f"emb-{self.embedding}")
        return " ".join(parts)


def portable() -> list[QuantSettings]:
    """Any CPU: dynamic U8S8, 7-bit per-channel weights (safe without VNNI)."""
    return [QuantSettings(method="dynamic", per_channel=True, reduce_range=True)]


def avx2() -> list[QuantSettings]:
    """x86-64 with AVX2, no VNNI: 7-bit weights against 16-bit saturation; dynamic first, static as an option."""
    return [
        QuantSettings(method="dynamic", per_channel=True, reduce_range=True),
        QuantSettings(method="static", calibration="percentile", per_channel=True, reduce_range=True),
    ]


def avx512_vnni() -> list[QuantSettings]:
    """x86-64 with AVX512-VNNI (or AVX-VNNI): full 8-bit weights, no saturation."""
    return [
        QuantSettings(method="dynamic", per_channel=True, reduce_range=False),
        QuantSettings(method="static", calibration="percentile", per_channel=True, reduce_range=False),
    ]


def arm64() -> list[QuantSettings]:
    """ARM64 (NEON dot product): full 8-bit weights; static with asymmetric uint8 activations (cross-CPU parity)."""
    return [
        QuantSettings(method="dynamic", per_channel=True, reduce_range=False),
        QuantSettings(method="static", calibration="percentile", per_channel=True, reduce_range=False),
    ]


# Targets whose runtimes may lack onnxruntime's contrib ops (reduced-operator mobile builds): the quantize stage
# starts from the plain graph (ai.onnx ops only) and dynamic quantization emits MatMulInteger, not QAttention.
PORTABLE_GRAPH_TARGETS = frozenset({"arm64"})

PRESETS: dict[str, Callable[[], list[QuantSettings]]] = {
    "portable": portable,
    "arm64": arm64,
    "avx2": avx2,
    "avx512_vnni": avx512_vnni,
}


def resolve(target: str, method: str = "auto", overrides: dict | None = None) -> list[QuantSettings]:
    """The preset's candidates, filtered to ``method`` (unless 'auto') and with ``overrides`` (fields the
    recipe pins, None values ignored) applied to each. A pinned method missing from the preset is added."""
    candidates = PRESETS[target]()
    if method != "auto":
        kept = [c for c in candidates if c.method == method]
        if not kept:
            base = candidates[0].model_dump()
            base.update(method=method, calibration="minmax" if method == "static" else None)
            kept = [QuantSettings(**base)]
        candidates = kept
    changes = {k: v for k, v in (overrides or {}).items() if v is not None}
    out: list[QuantSettings] = []
    for c in candidates:
        data = {**c.model_dump(), **changes}
        if data["method"] == "static" and data["calibration"] is None:
            data["calibration"] = "minmax"
        if data["method"] == "dynamic":
            data.update(calibration=None, activation_type="uint8", activation_symmetric=False)
        settings = QuantSettings(**data)
        if settings not in out:
            out.append(settings)
    return out
