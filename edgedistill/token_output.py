"""A per-token output beside the sentence embedding, for clients that pool themselves.

transformers.js's ``pipeline('feature-extraction')`` (and sentence-transformers' ONNX backend) read a per-token
output (``last_hidden_state`` / ``token_embeddings``), mean-pool it with the attention mask and L2-normalise it
themselves. Our graphs end in the finished ``sentence_embedding``; this module adds ``token_embeddings``
[batch, sequence, dimension] to a mean-pooling graph so that pooling it that way gives the same vector:

- without a projection, it is the encoder's last hidden state (the tensor the graph's mean pooling reads);
- with an affine projection (a Dense layer with identity activation, e.g. Procrustes or ridge), it is that
  projection applied to every token: the mean of W h_i + b is W mean(h) + b. The projection's nodes are copied
  onto the per-token tensor (in an INT8 graph its quantized weights are reused; activation scales are then taken
  over the tokens, not the pooled vector, so the check below decides whether it is close enough).

CLS and max pooling, or a non-affine projection, cannot be expressed this way: no output is added. Every added
output is checked numerically before it ships (mean-pooled and normalised vs ``sentence_embedding``), and the
sentence embedding itself must not move.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

TOKEN_OUTPUT = "token_embeddings"
PASS_THROUGH = ("Cast", "Unsqueeze", "Reshape", "Identity", "Squeeze")
FP32_MAX_DIFF, INT8_MIN_COSINE = 1e-5, 0.9999


def _producers(graph) -> dict[str, Any]:
    return {o: n for n in graph.node for o in n.output}


def _from_mask(name: str, producers: dict[str, Any]) -> bool:
    """Whether a tensor is the attention mask, through casts and reshapes."""
    for _ in range(8):
        if name == "attention_mask":
            return True
        node = producers.get(name)
        if node is None or node.op_type not in PASS_THROUGH:
            return False
        name = node.input[0]
    return False


def find_mean_pooling(graph, output: str) -> tuple[str, str, str] | None:
    """(hidden, pooled, projected): the per-token tensor the mean pooling reads, the pooled tensor, and the tensor
    the final L2 normalisation divides (``pooled`` itself when there is no projection). None when the graph does
    not end in mean pooling -> [projection] -> x / norm(x)."""
    producers = _producers(graph)
    final = producers.get(output)
    if final is None or final.op_type != "Div":
        return None
    projected = final.input[0]
    for node in graph.node:  # Div(ReduceSum(Mul(hidden, mask)), count)
        if node.op_type != "Div":
            continue
        total = producers.get(node.input[0])
        if total is None or total.op_type != "ReduceSum":
            continue
        product = producers.get(total.input[0])
        if product is None or product.op_type != "Mul":
            continue
        a, b = product.input[:2]
        hidden = a if _from_mask(b, producers) else b if _from_mask(a, producers) else None
        if hidden is not None:
            return hidden, node.output[0], projected
    return None


def projection_nodes(graph, pooled: str, projected: str) -> list[Any] | None:
    """The nodes computing ``projected`` from ``pooled`` (and constants), in graph order; None when something
    else (another graph input, an intermediate tensor) enters."""
    producers = _producers(graph)
    constants = {i.name for i in graph.initializer}
    needed: dict[int, Any] = {}
    stack = [projected]
    while stack:
        name = stack.pop()
        if name == pooled or name in constants or not name:
            continue
        node = producers.get(name)
        if node is None:
            return None
        if id(node) in needed:
            continue
        needed[id(node)] = node
        if node.op_type == "Constant":
            continue
        stack.extend(node.input)
    if projected != pooled and not any(pooled in n.input for n in needed.values()):
        return None
    return [n for n in graph.node if id(n) in needed]


def add_token_output(path: Path, output: str = "sentence_embedding", projection_from: Path | None = None) -> bool:
    """Add ``token_embeddings`` to the graph at ``path`` in place; False (graph untouched) when its pooling or
    projection cannot be expressed per token. ``projection_from``: take the projection from that graph (the fp32
    one, for an INT8 graph whose quantized projection is not close enough per token) with its weights. Call
    ``check`` before shipping."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    graph = model.graph
    if any(o.name == TOKEN_OUTPUT for o in graph.output):
        return True
    found = find_mean_pooling(graph, output)
    if found is None:
        return False
    hidden, pooled, projected = found
    nodes = projection_nodes(graph, pooled, projected)
    renamed: dict[str, str] = {}
    if projection_from is not None:
        donor = onnx.load(str(projection_from)).graph
        found = find_mean_pooling(donor, output)
        if found is None:
            return False
        _, pooled, projected = found
        nodes = projection_nodes(donor, pooled, projected)
        used = {i for n in nodes or [] for i in n.input}
        for init in donor.initializer:
            if init.name in used:
                copy = onnx.TensorProto()
                copy.CopyFrom(init)
                renamed[init.name] = copy.name = f"{init.name}_per_token"
                graph.initializer.append(copy)
    if nodes is None:
        return False
    renamed[pooled] = hidden
    for node in nodes:
        if node.op_type == "Gemm":  # 2-D only: as MatMul (+ Add), which broadcast over the tokens
            copies = _gemm_as_matmul(node)
            if copies is None:
                return False
        else:
            copies = [onnx.NodeProto()]
            copies[0].CopyFrom(node)
        for copy in copies:
            copy.name = f"{copy.name}_per_token" if copy.name else ""
            for i, name in enumerate(copy.input):
                copy.input[i] = renamed.get(name, name)
            for i, name in enumerate(copy.output):
                renamed[name] = copy.output[i] = f"{name}_per_token"
            graph.node.append(copy)
    graph.node.append(helper.make_node("Identity", [renamed.get(projected, hidden)], [TOKEN_OUTPUT],
                                       name="token_embeddings_output"))
    graph.output.append(helper.make_tensor_value_info(TOKEN_OUTPUT, onnx.TensorProto.FLOAT,
                                                      ["batch", "sequence", "dimension"]))
    onnx.save(model, str(path))
    return True


def _gemm_as_matmul(node) -> list[Any] | None:
    """Gemm(A, B[, C]) with alpha = beta = 1 and no transA as [Transpose(B)] -> MatMul [-> Add C]."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA", 0):
        return None
    out, weight = node.output[0], node.input[1]
    nodes = []
    if attrs.get("transB", 0):
        nodes.append(helper.make_node("Transpose", [weight], [f"{weight}_t"], name=f"{node.name}_transpose"))
        weight = f"{weight}_t"
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    nodes.append(helper.make_node("MatMul", [node.input[0], weight], [f"{out}_matmul" if bias else out],
                                  name=node.name))
    if bias:
        nodes.append(helper.make_node("Add", [f"{out}_matmul", bias], [out], name=f"{node.name}_bias"))
    return nodes


def feeds(tokenizer_file: Path, manifest: dict, sentences: list[str]) -> list[dict[str, np.ndarray]]:
    """Inputs for the check: each sentence alone, then batches of 8 (padding included)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.enable_truncation(max_length=int(manifest["max_seq_length"]))
    tokenizer.enable_padding(pad_id=int(manifest["pad_token_id"]), pad_token=manifest["pad_token"])
    columns = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
    chunks = [[s] for s in sentences] + [sentences[i:i + 8] for i in range(0, len(sentences), 8)]
    return [{n: np.array([getattr(e, columns[n]) for e in tokenizer.encode_batch(chunk)], dtype=np.int64)
             for n in manifest["inputs"]} for chunk in chunks]


def mean_pool(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """What transformers.js's pipeline does with pooling 'mean', normalize true."""
    m = mask[..., None].astype(np.float32)
    pooled = (tokens * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def check(original: Path, changed: Path, feeds: list[dict[str, np.ndarray]], int8: bool,
          output: str = "sentence_embedding") -> dict[str, float]:
    """Compare the changed graph with the original on ``feeds`` (batches): the sentence embedding must be
    identical, and the mean-pooled, normalised ``token_embeddings`` must match it (fp32: max abs diff 1e-5; INT8:
    cosine 0.9999, the projection's activation scales being taken over tokens). Raises ValueError when not."""
    import onnxruntime as ort

    before = ort.InferenceSession(str(original), providers=["CPUExecutionProvider"])
    after = ort.InferenceSession(str(changed), providers=["CPUExecutionProvider"])
    moved, diff, cosine = 0.0, 0.0, 1.0
    for batch in feeds:
        reference = before.run([output], batch)[0]
        embedding, tokens = after.run([output, TOKEN_OUTPUT], batch)
        pooled = mean_pool(tokens, batch["attention_mask"])
        moved = max(moved, float(np.abs(embedding - reference).max()))
        diff = max(diff, float(np.abs(pooled - reference).max()))
        cosine = min(cosine, float(((pooled * reference).sum(axis=1) / np.linalg.norm(reference, axis=1)).min()))
    result = {"sentence_embedding_moved": moved, "max_abs_diff": diff, "min_cosine": cosine}
    if moved > 1e-6 or (diff > FP32_MAX_DIFF if not int8 else cosine < INT8_MIN_COSINE):
        raise ValueError(f"{changed.name}: {TOKEN_OUTPUT} mean-pooled does not reproduce {output}: {result}")
    return result
