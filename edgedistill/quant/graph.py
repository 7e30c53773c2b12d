"""Which nodes of an ONNX graph can be quantized, and where each sits in the model (layer, role).

The dynamo exporter records each node's module path (``pkg.torch.onnx.name_scopes``); when it is absent
(torchscript export) the layer and role are recovered from the order of the weight MatMuls instead.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

WEIGHT_OPS = ("MatMul", "Gemm", "Attention")
_LAYER = re.compile(r"(?:layer|layers|h|block|blocks)\.(\d+)\.")


@dataclass(frozen=True)
class QuantNode:
    """A node whose weight could be stored in INT8."""

    name: str
    op_type: str
    weight: str
    shape: tuple[int, ...]
    scope: str  # module path, e.g. transformer.encoder.layer.2.output.dense
    layer: int | None  # transformer layer index, None outside the encoder layers
    role: str  # e.g. attention.self.query, intermediate.dense, output.dense (FFN down), projection, embedding

    @property
    def group(self) -> str:
        """A readable label: 'layer 2 output.dense'."""
        return f"layer {self.layer} {self.role}" if self.layer is not None else self.role



def _scope(node) -> str | None:
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return None
            # The last entry is the op itself (linear_3); the one before is the module.
            return scopes[-2] if len(scopes) >= 2 else None
    return None


def _const_inputs(model) -> dict[str, tuple[int, ...]]:
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    # A weight may reach a MatMul through a Transpose of an initializer (torchscript exports).
    for node in model.graph.node:
        if node.op_type == "Transpose" and node.input[0] in shapes:
            shapes[node.output[0]] = tuple(reversed(shapes[node.input[0]]))
    return shapes


def quantizable_nodes(model_path: Path, op_types: list[str] | tuple[str, ...] = ("MatMul",),
                      embeddings: bool = True) -> list[QuantNode]:
    """Weight MatMul/Gemm nodes (activation x activation MatMuls are skipped) and, with ``embeddings``,
    the word-embedding Gather (the largest Gather table), in graph order."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    consts = _const_inputs(model)
    found: list[tuple] = []
    for node in model.graph.node:
        # Gemm is rewritten as MatMul before quantization (ort.prepare); count it as a MatMul here.
        wanted = node.op_type in op_types or (node.op_type == "Gemm" and "MatMul" in op_types)
        if wanted and node.op_type in WEIGHT_OPS:
            weight = next((i for i in node.input[1:2] if i in consts), None)
            if weight is not None and len(consts[weight]) == 2:
                found.append((node, weight, consts[weight]))
    nodes = _label(found)
    if embeddings:
        table = word_embedding_gather(model)
        if table is not None:
            node, weight = table
            nodes.insert(0, QuantNode(node.name, node.op_type, weight, consts[weight], _scope(node) or weight, None,
                                      "embedding"))
    return nodes


def word_embedding_gather(model) -> tuple[object, str] | None:
    """The node reading the word-embedding table: a Gather on a 2-D initializer indexed by ``input_ids``
    (through Casts/Reshapes), or in a fused graph the EmbedLayerNormalization (table = its third input).
    Without an ``input_ids`` path, the Gather on the largest table. None when there is neither."""
    inits = {i.name: tuple(i.dims) for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}

    def from_ids(name: str) -> bool:
        for _ in range(8):
            if name == "input_ids":
                return True
            node = producers.get(name)
            if node is None or node.op_type not in ("Cast", "Reshape", "Unsqueeze", "Squeeze", "Identity"):
                return False
            name = node.input[0]
        return False

    best = None
    for node in model.graph.node:
        if node.op_type == "Gather":
            table, ids = node.input[0], node.input[1]
        elif node.op_type == "EmbedLayerNormalization" and len(node.input) > 2:
            table, ids = node.input[2], node.input[0]
        else:
            continue
        if table in inits and len(inits[table]) == 2:
            rank = (from_ids(ids), inits[table][0] * inits[table][1])
            if best is None or rank > best[2]:
                best = (node, table, rank)
    return (best[0], best[1]) if best else None


def _label(found: list[tuple]) -> list[QuantNode]:
    """Layer and role of each weight node: from the module path when the exporter recorded it, else from
    the order of the BERT pattern (fused graphs lose the path on the nodes a fusion created)."""
    out = []
    for node, by_order in zip((f[0] for f in found), _label_by_order(found), strict=True):
        scope = _scope(node)
        m = _LAYER.search(scope + ".") if scope else None
        if scope and m:
            out.append(QuantNode(by_order.name, by_order.op_type, by_order.weight, by_order.shape, scope,
                                 int(m.group(1)), scope[m.end():] or by_order.role))
        elif scope:
            role = "projection" if by_order.role == "projection" else scope
            out.append(QuantNode(by_order.name, by_order.op_type, by_order.weight, by_order.shape, scope, None, role))
        else:
            out.append(by_order)
    return out


def _label_by_order(found: list[tuple]) -> list[QuantNode]:
    """Layers recovered from the BERT pattern, in graph order: q, k, v ([h, h]; or one packed [h, 3h]
    Attention), attention out ([h, h]), FFN up ([h, 4h]) and FFN down ([4h, h]). Weights after the last FFN
    down are the projection."""
    out = []
    layer, square = 0, 0
    square_roles = ["attention.q", "attention.k", "attention.v", "attention.out"]
    last_down = max((i for i, (_, _, s) in enumerate(found) if s[0] == 4 * s[1]), default=-1)
    for i, (node, weight, shape) in enumerate(found):
        if i > last_down:
            out.append(QuantNode(node.name, node.op_type, weight, shape, weight, None, "projection"))
            continue
        if shape[0] == 4 * shape[1]:
            role = "ffn.down"
        elif shape[1] == 4 * shape[0]:
            role = "ffn.up"
        elif shape[1] == 3 * shape[0]:
            role, square = "attention.qkv", 3
        else:
            role = square_roles[square] if square < len(square_roles) else "attention"
            square += 1
        out.append(QuantNode(node.name, node.op_type, weight, shape, weight, layer, role))
        if role == "ffn.down":
            layer, square = layer + 1, 0
    return out


def ffn_down_projections(nodes: list[QuantNode]) -> list[QuantNode]:
    """MatMuls mapping the wide feed-forward layer back down ([4h, h]): the usual INT8 trouble-makers,
    because their inputs (after GELU) carry large outliers."""
    return [n for n in nodes if len(n.shape) == 2 and n.shape[0] == 4 * n.shape[1]]
