"""Why the arm64 preset's static INT8 drifted between x86 and aarch64, and what the static QDQ fix changed.

    python benchmarks/arm_static.py runs/mpnet-to-tiny/01-export-*/artifact [--cpu neoverse-n1]

Quantizes the export's plain graph (standard ONNX ops, as the arm64 preset does) several ways, embeds the same
sentences (scripts/arm_parity.py's 16 and 48 SNLI training sentences, one per call) on this x86 host and on
aarch64 onnxruntime under qemu-user (scripts/arm_parity.py), and writes benchmarks/results/arm_static.{json,md}:
each variant's cosine to the fp32 graph, x86 vs aarch64, and x86 with onnxruntime's graph optimisations on vs off
(a second fp32 arithmetic path on the same CPU). Variants:

- ``static S8 symmetric, every MatMul (before)``: the arm64 preset's static candidate as it was, quantized the way
  onnxruntime's QDQ quantizer did (it ignores MatMulConstBOnly): attention-score MatMuls, the softmax output and
  every MatMul output quantized too;
- ``static S8 symmetric, weight MatMuls``: the same settings after the quantizer fix (edgedistill.quant.ort);
- ``static U8 asymmetric, weight MatMuls (now)``: the arm64 preset's static candidate now;
- ``... FFN-down of layer 0 in fp32``: the node the accuracy search keeps first here;
- ``dynamic``: the arm64 preset's first candidate (full 8-bit per-channel weights).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
STATIC_S8 = {"method": "static", "calibration": "percentile", "activation_type": "int8", "activation_symmetric": True,
             "per_channel": True}  # the arm64 preset's static candidate before
STATIC_U8 = {"method": "static", "calibration": "percentile", "per_channel": True}  # and now


def _arm_parity():
    spec = importlib.util.spec_from_file_location("arm_parity", ROOT / "scripts" / "arm_parity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def variant(export: Path, out: Path, settings: dict, exclude: list[str], calibration: list[str],
            every_matmul: bool) -> Path:
    """A mini bundle: model.onnx (INT8), fp32.onnx, tokenizer, manifest naming both."""
    from edgedistill.manifest import read_manifest, write_manifest
    from edgedistill.quant import ort as quant_ort
    from edgedistill.quant.calibration import FeedsReader, feeds
    from edgedistill.quant.graph import quantizable_nodes
    from edgedistill.quant.presets import QuantSettings

    out.mkdir(parents=True)
    for f in export.iterdir():
        if f.suffix != ".onnx" and f.name != "manifest.json":
            shutil.copy2(f, out / f.name)
    quant_ort.prepare(export / "model.plain.onnx", out / "fp32.onnx")
    s = QuantSettings(**settings)
    table = quantizable_nodes(out / "fp32.onnx")[0].name
    reader = FeedsReader(feeds(export, calibration)) if s.method == "static" else None
    if every_matmul:  # the quantizer as it was: no nodes_to_quantize, MatMul outputs quantized
        with quant_ort.quiet():
            _static_every_matmul(out / "fp32.onnx", out / "model.onnx", s, reader)
            quant_ort.quantize_embedding(out / "model.onnx", table)
    else:
        quant_ort.quantize_file(out / "fp32.onnx", out / "model.onnx", s, exclude, embedding_node=table,
                                calibration=reader)
    manifest = read_manifest(export)
    manifest.update(model="model.onnx", models={"fp32": "fp32.onnx", "int8": "model.onnx"},
                    quantization={"method": s.method, "label": s.label(), "fp32_nodes": exclude})
    manifest.pop("sha256", None)
    write_manifest(out, manifest)
    return out


def _static_every_matmul(source: Path, target: Path, s, reader) -> None:
    from onnxruntime.quantization import QuantFormat, quantize_static

    from edgedistill.quant.ort import _calibrate_method, _qtype

    quantize_static(str(source), str(target), calibration_data_reader=reader, quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["MatMul"], per_channel=s.per_channel, reduce_range=s.reduce_range,
                    activation_type=_qtype(s.activation_type), weight_type=_qtype(s.weight_type),
                    calibrate_method=_calibrate_method(s.calibration),
                    extra_options={"MatMulConstBOnly": True, "ActivationSymmetric": s.activation_symmetric,
                                   "WeightSymmetric": True, "CalibPercentile": s.percentile, "CalibStridedMinMax": 1})


def unoptimised_agreement(bundle: Path, sentences: list[str]) -> float:
    """Min cosine between the INT8 graph with onnxruntime's optimisations on and off on this CPU."""
    import onnxruntime as ort

    from edgedistill.runtime import OnnxEncoder

    encoder = OnnxEncoder(bundle, precision="int8")
    on = encoder.encode(sentences, batch_size=1)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    encoder.session = ort.InferenceSession(str(encoder.model_path), options, providers=["CPUExecutionProvider"])
    off = encoder.encode(sentences, batch_size=1)
    return float((on * off).sum(axis=1).min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", type=Path, help="an export stage's artifact folder (with model.plain.onnx)")
    parser.add_argument("--cpu", default="neoverse-n1")
    args = parser.parse_args()
    from edgedistill.quant.calibration import split_sentences
    from edgedistill.quant.graph import ffn_down_projections, quantizable_nodes

    parity = _arm_parity()
    calibration, proxy = split_sentences("snli-sentences", 200, 256, 0)  # the quantize stage's defaults
    sentences = parity.SENTENCES + proxy[:48]
    first_down = ffn_down_projections(quantizable_nodes(args.export / "model.plain.onnx"))[0].name
    variants = [("static S8 symmetric, every MatMul (before)", STATIC_S8, [], True),
                ("static S8 symmetric, weight MatMuls", STATIC_S8, [], False),
                ("static S8 symmetric, weight MatMuls, FFN-down of layer 0 in fp32", STATIC_S8, [first_down], False),
                ("static U8 asymmetric, weight MatMuls (now)", STATIC_U8, [], False),
                ("static U8 asymmetric, weight MatMuls, FFN-down of layer 0 in fp32", STATIC_U8, [first_down], False),
                ("dynamic", {"method": "dynamic", "per_channel": True}, [], False)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, settings, exclude, every) in enumerate(variants):
            bundle = variant(args.export, Path(tmp) / str(i), settings, exclude, calibration, every)
            result = parity.parity(bundle, "int8", sentences, cpus=(args.cpu,))
            arm = result["arm"][0]
            rows.append({"variant": name, "fp32_nodes": exclude, "x86_min_cosine_to_fp32": result["x86_min_cosine_to_fp32"],
                         "x86_vs_arm_min_cosine": arm["min_cosine"], "x86_vs_arm_mean_cosine": arm["mean_cosine"],
                         "arm_min_cosine_to_fp32": arm["min_cosine_to_fp32"], "worst_sentence": arm["worst_sentence"],
                         "x86_optimised_vs_not_min_cosine": unoptimised_agreement(bundle, sentences),
                         "arm": {k: arm[k] for k in ("cpu", "onnxruntime", "machine")},
                         "x86_onnxruntime": result["x86_onnxruntime"]})
            print(json.dumps(rows[-1]), flush=True)
    out = {"export": str(args.export), "sentences": len(sentences), "variants": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "arm_static.json").write_text(json.dumps(out, indent=1) + "\n")
    lines = ["# arm64 preset, static vs dynamic INT8: x86 vs aarch64 (qemu)", "",
             f"Export: `{args.export}`; {len(sentences)} sentences, one per call; aarch64 onnxruntime "
             f"{rows[0]['arm']['onnxruntime']} under qemu -cpu {args.cpu}, x86 onnxruntime {rows[0]['x86_onnxruntime']}.", "",
             "| variant | x86 INT8 vs fp32 (min cos) | aarch64 INT8 vs fp32 | x86 vs aarch64 (min / mean cos) | "
             "x86 optimised vs not |", "|---|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['x86_min_cosine_to_fp32']:.5f} | {r['arm_min_cosine_to_fp32']:.5f} | "
              f"{r['x86_vs_arm_min_cosine']:.5f} / {r['x86_vs_arm_mean_cosine']:.6f} | "
              f"{r['x86_optimised_vs_not_min_cosine']:.5f} |" for r in rows]
    (RESULTS / "arm_static.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
