"""A graph without onnxruntime contrib ops for mobile targets (reduced-operator builds may lack fused Attention,
SkipLayerNormalization, BiasGelu, ...), chosen by the quantize target preset (presets.PORTABLE_GRAPH_TARGETS).

The export stage keeps its plain graph beside the fused one (model.plain.onnx); for such a target the quantize
stage quantizes the plain graph instead, and the manifest records ``graph.portable``.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from edgedistill.errors import RecipeError

log = logging.getLogger(__name__)

STANDARD_DOMAINS = ("", "ai.onnx")


def op_domains(model_path: Path) -> dict[str, list[str]]:
    """The op types of a graph by domain ('' is the default ai.onnx domain)."""
    import onnx

    out: dict[str, set[str]] = {}
    for node in onnx.load(str(model_path), load_external_data=False).graph.node:
        out.setdefault(node.domain, set()).add(node.op_type)
    return {d: sorted(ops) for d, ops in sorted(out.items())}


def contrib_ops(model_path: Path) -> list[str]:
    """Ops outside the standard ONNX domain, as 'domain:Op'."""
    return [f"{d}:{op}" for d, ops in op_domains(model_path).items() if d not in STANDARD_DOMAINS for op in ops]


def portable_source(source: Path, work: Path, target: str) -> Path:
    """The quantize stage's input for a portable target: ``source`` itself when its graph has no contrib ops, else
    a copy with the export's plain graph as model.onnx. Raises when the plain graph is not there."""
    from edgedistill.manifest import read_manifest, write_manifest

    manifest = read_manifest(source)
    model = source / manifest.get("model", "model.onnx")
    if not contrib_ops(model):
        return source
    plain = manifest.get("graph", {}).get("plain")
    if not plain or not (source / plain).is_file():
        raise RecipeError(f"quantize: target {target} needs a graph without onnxruntime contrib ops, but the input "
                          f"{model} is fused and has no plain graph beside it; set optimize: never in the export "
                          "stage (or rerun it to keep the plain graph)")
    out = work / "portable-source"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for f in source.iterdir():
        if f.is_file() and f.suffix != ".onnx" and f.name != "manifest.json":
            shutil.copy2(f, out / f.name)
    shutil.copy2(source / plain, out / "model.onnx")
    manifest["model"] = "model.onnx"
    manifest["graph"] = {"optimized": False, "fusions": {}, "portable": True,
                         "needs": "any ONNX runtime (ai.onnx ops only)", "from": plain}
    write_manifest(out, manifest)
    log.info("quantize: target %s: quantizing the plain graph (no contrib ops) instead of the fused one", target)
    return out


def record(bundle: Path, target: str, required: bool) -> dict:
    """Record in the bundle's manifest whether its graph uses only standard ONNX ops; raise when a portable
    target's graph does not."""
    from edgedistill.errors import GateError
    from edgedistill.manifest import read_manifest, write_manifest

    manifest = read_manifest(bundle)
    found = contrib_ops(bundle / manifest.get("model", "model.onnx"))
    if required and found:
        raise GateError(f"quantize: target {target} needs standard ONNX ops only, but the INT8 graph uses {found}")
    graph = manifest.setdefault("graph", {})
    if graph.get("plain") and not (bundle / graph["plain"]).is_file():  # the export's, not shipped with INT8
        graph.pop("plain")
    graph.update(portable=not found, contrib_ops=found,
                 needs="any ONNX runtime (ai.onnx ops only)" if not found else "onnxruntime (com.microsoft contrib ops)")
    write_manifest(bundle, manifest)
    return {"portable": not found, "contrib_ops": found, "required_by_target": required}
