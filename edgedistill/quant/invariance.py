"""Batch invariance of a quantized graph: is a sentence's embedding the same alone and among others?

Dynamic quantization (DynamicQuantizeLinear, QAttention, ...) computes each activation's scale over the whole
input tensor, padding included, so a sentence's INT8 embedding depends on its batch mates. Static (calibrated)
QDQ graphs use fixed scales and are invariant by construction. For a dynamic graph the manifest records
``run_rows_separately``: our runtime (and the browser demo) then run one sentence per call, which makes the
result invariant at the cost of batching throughput; other clients must do the same (see docs/clients.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

THRESHOLD = 0.9999  # min cosine alone vs batched that counts as invariant
DYNAMIC_OPS = {"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "QAttention", "MatMulIntegerToFloat",
               "DynamicQuantizeLSTM"}


def dynamic_ops(model_path: Path) -> list[str]:
    """The op types in the graph whose activation scales depend on the whole input tensor."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return sorted({n.op_type for n in graph.node} & DYNAMIC_OPS)


def agreement(alone: np.ndarray, batched: np.ndarray) -> dict[str, float]:
    """Cosines between outputs computed alone and in batches: per row for vectors (embeddings, class logits),
    over the whole column for one score per item (a reranker's logit, where a row's cosine is only its sign)."""
    from edgedistill.runtime import normalise

    alone, batched = alone.reshape(len(alone), -1), batched.reshape(len(batched), -1)
    if alone.shape[1] == 1:
        a, b = alone[:, 0], batched[:, 0]
        cos = np.array([a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12)])
    else:
        cos = (normalise(alone) * normalise(batched)).sum(axis=1)
    return {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
            "max_abs_diff": float(np.abs(alone - batched).max())}


def compare_alone_batched(model: Any, sentences: list[Any], batch_size: int) -> dict[str, float]:
    """Each item's output alone and inside consecutive batches (in the caller's order, as an app would batch
    them; padded to each batch's longest item)."""
    alone = np.concatenate([model.session.run(None, model._feeds([s]))[0] for s in sentences])
    batched = np.concatenate([
        model.session.run(None, model._feeds(sentences[i : i + batch_size]))[0]
        for i in range(0, len(sentences), batch_size)])
    return agreement(alone, batched)


def measure(bundle: Path, sentences: list[str], threads: int = 0, batch_size: int = 64) -> dict[str, Any]:
    """Batch invariance of the bundle's graph as it is, and as our runtime serves it."""
    from edgedistill.runtime import OnnxModel

    model = OnnxModel(bundle, threads=threads)  # any task's bundle: texts or (text, text) pairs
    dynamic = dynamic_ops(model.model_path)
    graph = compare_alone_batched(model, sentences, batch_size)
    rows = bool(dynamic)
    served = graph
    if rows:  # one item per run: identical by construction, measured anyway
        model.rows_separately = True
        served = agreement(model.outputs(sentences, batch_size=1), model.outputs(sentences, batch_size=batch_size))
    return {"sentences": len(sentences), "batch_size": batch_size, "threshold": THRESHOLD,
            "dynamic_ops": dynamic, "graph": graph, "graph_invariant": graph["min_cosine"] >= THRESHOLD and not rows,
            "run_rows_separately": rows, "served": served}


def record(bundle: Path, sentences: list[str], threads: int = 0) -> dict[str, Any]:
    """Measure, then record the result (and whether to run rows separately) in the bundle's manifest."""
    from edgedistill.manifest import read_manifest, write_manifest

    result = measure(bundle, sentences, threads)
    manifest = read_manifest(bundle)
    manifest["batch_invariance"] = {k: result[k] for k in ("run_rows_separately", "graph_invariant", "dynamic_ops")}
    manifest["batch_invariance"]["graph_min_cosine"] = result["graph"]["min_cosine"]
    write_manifest(bundle, manifest)
    return result


def report_line(result: dict[str, Any]) -> str:
    """One Markdown paragraph for the quantize section of the report."""
    g, s = result["graph"], result["served"]
    head = (f"Batch invariance ({result['sentences']} sentences alone vs in batches of {result['batch_size']}): "
            f"the graph as is gives min cosine {g['min_cosine']:.6f} (mean {g['mean_cosine']:.6f}, max abs diff "
            f"{g['max_abs_diff']:.1e}).")
    if result["run_rows_separately"]:
        return (head + f" It quantizes activations dynamically ({', '.join(result['dynamic_ops'])}), so a vector "
                f"depends on its batch mates: the manifest sets run_rows_separately and the runtime runs one sentence "
                f"per call (min cosine {s['min_cosine']:.6f}); batched throughput is given up for it.")
    return head + " Static activation scales: invariant by construction."
