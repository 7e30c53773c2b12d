"""token_embeddings for clients that pool themselves: added where mean pooling of it gives the sentence embedding
(an affine projection is applied per token), refused or caught where it cannot (CLS pooling, a Tanh projection)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgedistill.token_output import TOKEN_OUTPUT, add_token_output, check


def graph(path: Path, pooling: str = "mean", activation: str | None = None) -> Path:
    """hidden [b, s, 4] and attention_mask [b, s] -> pooled -> Dense(4 -> 3)[+activation] -> x / |x|."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.normal(size=3).astype(np.float32), "b"),
             numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
             numpy_helper.from_array(np.array([-1], dtype=np.int64), "axis_last"),
             numpy_helper.from_array(np.array([0], dtype=np.int64), "zero")]
    nodes = [helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["mask_f", "axis_last"], ["mask3"])]
    if pooling == "mean":
        nodes += [helper.make_node("Mul", ["hidden", "mask3"], ["masked"]),
                  helper.make_node("ReduceSum", ["masked", "axis1"], ["total"], keepdims=0),
                  helper.make_node("ReduceSum", ["mask3", "axis1"], ["count"], keepdims=0),
                  helper.make_node("Div", ["total", "count"], ["pooled"])]
    else:  # CLS: the first token
        nodes += [helper.make_node("Gather", ["hidden", "zero"], ["first"], axis=1),
                  helper.make_node("Squeeze", ["first", "axis1"], ["pooled"])]
    nodes += [helper.make_node("MatMul", ["pooled", "W"], ["projected"]),
              helper.make_node("Add", ["projected", "b"], ["dense" if activation else "x"])]
    if activation:
        nodes.append(helper.make_node(activation, ["dense"], ["x"]))
    nodes += [helper.make_node("Mul", ["x", "x"], ["squares"]),
              helper.make_node("ReduceSum", ["squares", "axis_last"], ["norm2"], keepdims=1),
              helper.make_node("Sqrt", ["norm2"], ["norm"]),
              helper.make_node("Div", ["x", "norm"], ["sentence_embedding"])]
    inputs = [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["b", "s", 4]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "s"])]
    outputs = [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["b", 3])]
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


FEEDS = [{"hidden": np.random.default_rng(1).normal(size=(3, 5, 4)).astype(np.float32),
          "attention_mask": np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=np.int64)}]


def test_mean_pooling_with_an_affine_projection(tmp_path: Path) -> None:
    original = graph(tmp_path / "a.onnx")
    changed = tmp_path / "b.onnx"
    changed.write_bytes(original.read_bytes())
    assert add_token_output(changed)
    result = check(original, changed, FEEDS, int8=False)
    assert result["sentence_embedding_moved"] == 0.0 and result["max_abs_diff"] <= 1e-6


def test_cls_pooling_gets_no_output(tmp_path: Path) -> None:
    path = graph(tmp_path / "cls.onnx", pooling="cls")
    before = path.read_bytes()
    assert not add_token_output(path) and path.read_bytes() == before


def test_a_non_affine_projection_is_caught(tmp_path: Path) -> None:
    original = graph(tmp_path / "a.onnx", activation="Tanh")
    changed = tmp_path / "b.onnx"
    changed.write_bytes(original.read_bytes())
    assert add_token_output(changed)  # structurally possible, numerically wrong: the check refuses it
    with pytest.raises(ValueError, match=TOKEN_OUTPUT):
        check(original, changed, FEEDS, int8=False)
