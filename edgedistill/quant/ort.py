"""onnxruntime quantization of one model file: dynamic INT8 or static QDQ, plus the INT8 embedding table."""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

from edgedistill.quant.calibration import FeedsReader
from edgedistill.quant.presets import QuantSettings

log = logging.getLogger(__name__)


def gemm_to_matmul(model) -> int:
    """Rewrite plain Gemm nodes (alpha = beta = 1, no transA, constant B) as MatMul + Add, in place.

    onnxruntime's dynamic quantizer has no Gemm support, and the sentence-embedding projection after pooling
    is exported as a Gemm. The MatMul keeps the Gemm's name, so node exclusions still apply. Returns how many
    nodes were rewritten.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    users: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            users[i] = users.get(i, 0) + 1
    done = 0
    for node in list(graph.node):
        if node.op_type != "Gemm" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA", 0):
            continue
        weight = node.input[1]
        if attrs.get("transB", 0):
            array = numpy_helper.to_array(inits[weight]).T.copy()
            new_name = f"{weight}_t"
            graph.initializer.append(numpy_helper.from_array(array, new_name))
            if users.get(weight, 0) == 1:
                graph.initializer.remove(inits[weight])
            weight = new_name
        out = node.output[0]
        has_bias = len(node.input) > 2 and node.input[2]
        mm_out = f"{out}_matmul" if has_bias else out
        new = [helper.make_node("MatMul", [node.input[0], weight], [mm_out], name=node.name)]
        if has_bias:
            new.append(helper.make_node("Add", [mm_out, node.input[2]], [out], name=f"{node.name}_bias"))
        index = list(graph.node).index(node)
        graph.node.remove(node)
        for offset, n in enumerate(new):
            graph.node.insert(index + offset, n)
        done += 1
    return done


def prepare(source: Path, target: Path) -> None:
    """An fp32 copy of the model ready for quantization (Gemm rewritten as MatMul)."""
    import onnx

    model = onnx.load(str(source))
    if gemm_to_matmul(model):
        log.info("quantize: rewrote Gemm as MatMul + Add so it can be quantized")
    onnx.save(model, str(target))


def _qtype(name: str):
    from onnxruntime.quantization import QuantType

    return QuantType.QInt8 if name == "int8" else QuantType.QUInt8


def _calibrate_method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[name]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence onnxruntime's quantizer: it prints per calibration batch and warns through the root logger
    ("consider pre-processing") on every call."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def quantize_file(source: Path, target: Path, settings: QuantSettings, exclude: list[str], *,
                  embedding_node: str | None = None, calibration: FeedsReader | None = None,
                  calibration_cache: Path | None = None) -> None:
    """Quantize ``source`` (a prepared fp32 model) into ``target`` with ``settings``, keeping the nodes in
    ``exclude`` in fp32. ``embedding_node`` is the word-embedding Gather, stored per-row INT8 when the
    settings ask for it and it is not excluded. Static calibration ranges are cached in ``calibration_cache``
    so trials that differ only in excluded nodes calibrate once."""
    matmul_exclude = [n for n in exclude if n != embedding_node]
    with quiet():
        _quantize(source, target, settings, matmul_exclude, calibration, calibration_cache)
    if settings.embedding == "int8" and embedding_node and embedding_node not in exclude:
        with quiet():
            quantize_embedding(target, embedding_node)


def _quantize(source: Path, target: Path, settings: QuantSettings, matmul_exclude: list[str],
              calibration: FeedsReader | None, calibration_cache: Path | None) -> None:
    from onnxruntime.quantization import QuantFormat, quantize_dynamic, quantize_static

    if settings.method == "dynamic":
        quantize_dynamic(
            str(source), str(target), op_types_to_quantize=list(settings.op_types),
            per_channel=settings.per_channel, reduce_range=settings.reduce_range,
            weight_type=_qtype(settings.weight_type), nodes_to_exclude=matmul_exclude,
            extra_options={"MatMulConstBOnly": True},
        )
    else:
        if calibration is None and not (calibration_cache and calibration_cache.is_file()):
            raise ValueError("static quantization needs calibration data")
        nodes = weight_matmuls(source, settings, matmul_exclude)
        if not nodes:  # all kept in fp32 (onnxruntime would read an empty list as "quantize every MatMul")
            shutil.copy2(source, target)
            return
        if calibration is not None:
            calibration.rewind()
        extra = {"MatMulConstBOnly": True, "ActivationSymmetric": settings.activation_symmetric,
                 "WeightSymmetric": True, "CalibPercentile": settings.percentile,
                 # One calibration batch per collect call: the histogram collectors (entropy, percentile)
                 # cannot stack batches of different sequence lengths, and memory stays flat.
                 "CalibStridedMinMax": 1,
                 # A weight MatMul's output goes on in fp32 (bias, residual): re-quantizing it only adds a
                 # rounding step (onnxruntime then runs DQ -> MatMul as MatMulIntegerToFloat).
                 "OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"]}
        quantize_static(
            str(source), str(target), calibration_data_reader=calibration, quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(settings.op_types), per_channel=settings.per_channel,
            reduce_range=settings.reduce_range, activation_type=_qtype(settings.activation_type),
            weight_type=_qtype(settings.weight_type), nodes_to_exclude=matmul_exclude,
            nodes_to_quantize=nodes,
            calibrate_method=_calibrate_method(settings.calibration or "minmax"), extra_options=extra,
            calibration_cache_path=str(calibration_cache) if calibration_cache else None,
        )


def weight_matmuls(source: Path, settings: QuantSettings, exclude: list[str]) -> list[str]:
    """The weight MatMuls static QDQ may quantize, by name. onnxruntime's QDQ quantizer ignores
    ``MatMulConstBOnly`` (only its dynamic mode reads it), so without this list it would also quantize the
    attention-score MatMuls (Q.K^T and probabilities.V, softmax output included) to 8 bits: on the default
    student that took the static graph from 0.99 to 0.91 mean cosine to fp32 and made its vectors flip with
    1e-7 differences between CPUs (docs/clients.md, ARM parity)."""
    from edgedistill.quant.graph import quantizable_nodes

    return [n.name for n in quantizable_nodes(source, settings.op_types, embeddings=False) if n.name not in exclude]


def quantize_embedding(path: Path, node_name: str) -> None:
    """Store the word-embedding table of ``path`` in INT8, in place: per row for a Gather (ours), per tensor
    through onnxruntime for a fused EmbedLayerNormalization (its only quantized form)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edgedistill.quant.embedding import quantize_embedding_gather

    model = onnx.load(str(path))
    op_type = next((n.op_type for n in model.graph.node if n.name == node_name), None)
    if op_type == "Gather":
        if quantize_embedding_gather(model, node_name):
            onnx.save(model, str(path))
    elif op_type == "EmbedLayerNormalization":
        quantize_dynamic(str(path), str(path), op_types_to_quantize=["EmbedLayerNormalization"],
                         nodes_to_quantize=[node_name], weight_type=QuantType.QUInt8)
