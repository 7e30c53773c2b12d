"""INT8 word-embedding table: one scale per row (per token), gathered next to the row.

onnxruntime quantizes a Gather table per tensor only (one scale for all 30k rows), which wastes most of the
8 bits on the few rows with outliers; and QDQ on the table dequantizes the whole table on every call. So this
rewrite is ours: ``Gather(int8 table) -> Cast -> Mul(Gather(row scales))``, which reads only the rows a
sentence uses and costs a few microseconds.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def quantize_rows(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row INT8: returns (int8 table, float32 scales of shape [rows, 1])."""
    table = np.asarray(table, dtype=np.float32)
    scale = np.abs(table).max(axis=1, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(table / scale), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


def quantize_embedding_gather(model, node_name: str) -> bool:
    """Rewrite the Gather ``node_name`` (in place) to read an INT8 per-row table. Returns False (and leaves the
    model alone) when the table is shared with another node or is not a float initializer."""
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    node = next((n for n in graph.node if n.name == node_name and n.op_type == "Gather"), None)
    if node is None:
        return False
    table_name = node.input[0]
    init = next((i for i in graph.initializer if i.name == table_name), None)
    users = [n for n in graph.node for i in n.input if i == table_name]
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    if init is None or init.data_type != onnx.TensorProto.FLOAT or len(users) != 1 or axis != 0:
        log.warning("embedding %s: not quantized (shared, non-float or axis != 0)", node_name)
        return False
    q, scale = quantize_rows(numpy_helper.to_array(init))
    q_name, s_name = f"{table_name}_int8", f"{table_name}_row_scale"
    graph.initializer.remove(init)
    graph.initializer.extend([numpy_helper.from_array(q, q_name), numpy_helper.from_array(scale, s_name)])
    out, ids = node.output[0], node.input[1]
    new = [
        helper.make_node("Gather", [q_name, ids], [f"{out}_int8"], name=f"{node_name}_int8", axis=0),
        helper.make_node("Gather", [s_name, ids], [f"{out}_scale"], name=f"{node_name}_scale", axis=0),
        helper.make_node("Cast", [f"{out}_int8"], [f"{out}_float"], name=f"{node_name}_cast",
                         to=onnx.TensorProto.FLOAT),
        helper.make_node("Mul", [f"{out}_float", f"{out}_scale"], [out], name=f"{node_name}_dequant"),
    ]
    index = list(graph.node).index(node)
    graph.node.remove(node)
    for offset, n in enumerate(new):
        graph.node.insert(index + offset, n)
    return True
