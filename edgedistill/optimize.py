"""Graph transformations of an exported model: transformer fusions and the tokenizer inside the graph.

Only onnx/onnxruntime (and onnxruntime-extensions for the tokenizer) are used here: no torch.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.errors import RecipeError
from edgedistill.timing import summarize_ms

log = logging.getLogger(__name__)

TEXT_INPUT = "text"
IN_GRAPH_MODEL = "model_with_tokenizer.onnx"
EXTENSIONS_HINT = "install the optional extra: pip install -e '.[extensions]' (onnxruntime-extensions)"


# -- transformer fusions ---------------------------------------------------------------------------
def fuse_transformer(source: Path, target: Path, num_heads: int, hidden_size: int) -> dict[str, int]:
    """onnxruntime's transformer optimiser (attention, layer-norm, GELU and embedding fusions).

    ``opt_level=0`` applies only the Python fusions, so the saved graph holds standard ONNX plus
    onnxruntime contrib ops (com.microsoft), not hardware-specific layouts baked in by a session.
    Returns the count of each fused operator.
    """
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    graph = onnx.load(str(source))
    split_unsqueezes(graph)
    # "bert" is the optimiser's encoder-only family; MPNet's relative position bias simply leaves its
    # attention unfused (the latency check then decides whether the rest pays).
    optimized = optimize_model(graph, model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
                               opt_level=0, use_gpu=False)
    model = optimized.model
    try:
        # Record every tensor's type and shape: the quantizer cannot type the outputs of contrib ops
        # (Attention, SkipLayerNormalization, ...) by itself and refuses an unannotated fused graph.
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        model = SymbolicShapeInference.infer_shapes(model, auto_merge=True, guess_output_rank=False)
    except Exception as e:  # noqa: BLE001 - the fused graph still runs; only quantization would suffer
        log.warning("symbolic shape inference of the fused graph failed (%s); INT8 quantization of it may fail", e)
    domains = {n.domain for n in model.graph.node} - {"", "ai.onnx"} - {o.domain for o in model.opset_import}
    model.opset_import.extend(onnx.helper.make_opsetid(d, 1) for d in sorted(domains))
    onnx.save(model, str(target))
    return {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}


def split_unsqueezes(model: Any) -> int:
    """Rewrite each Unsqueeze over several axes as a chain of single-axis Unsqueezes, in place.

    The dynamo exporter merges the attention mask's two Unsqueezes into one; onnxruntime's attention
    fusion only recognises the two-step form, so without this dynamo graphs keep unfused attention.
    Returns how many nodes were split.
    """
    from onnx import helper, numpy_helper

    g = model.graph
    constants = {t.name: t for t in g.initializer}
    constants |= {n.output[0]: n.attribute[0].t for n in g.node if n.op_type == "Constant" and n.attribute}
    nodes, split = [], 0
    for node in g.node:
        axes = None
        if node.op_type == "Unsqueeze" and len(node.input) > 1 and node.input[1] in constants:
            axes = [int(a) for a in numpy_helper.to_array(constants[node.input[1]]).ravel()]
        if not axes or len(axes) < 2 or min(axes) < 0:
            nodes.append(node)
            continue
        current = node.input[0]
        for k, axis in enumerate(sorted(axes)):
            axis_name = f"{node.name or node.output[0]}_axis{k}"
            g.initializer.append(numpy_helper.from_array(np.array([axis], dtype=np.int64), axis_name))
            out = node.output[0] if k == len(axes) - 1 else f"{node.output[0]}_step{k}"
            nodes.append(helper.make_node("Unsqueeze", [current, axis_name], [out], name=f"{node.name}_step{k}"))
            current = out
        split += 1
    del g.node[:]
    g.node.extend(nodes)
    return split


def interleaved_latency(encoders: dict[str, Any], sentences: list[str], rounds: int,
                        warmup: int = 5) -> dict[str, dict[str, Any]]:
    """Batch-1 text-in, embedding-out latency of several encoders, measured side by side.

    Each round times every sentence once per encoder, alternating which encoder goes first, so drift in
    the machine's speed hits all of them alike. Returns p50/p90 over all timings and each round's median.
    """
    names = list(encoders)
    for name in names:
        for s in sentences[:warmup]:
            encoders[name].encode([s], batch_size=1)
    times: dict[str, list[float]] = {n: [] for n in names}
    per_round: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        round_times: dict[str, list[float]] = {n: [] for n in names}
        for s in sentences:
            for name in order:
                t0 = time.perf_counter()
                encoders[name].encode([s], batch_size=1)
                round_times[name].append((time.perf_counter() - t0) * 1000)
        for name in names:
            times[name] += round_times[name]
            per_round[name].append(float(np.median(round_times[name])))
    return {n: {**summarize_ms(times[n]),
                "round_p50_ms": [round(x, 4) for x in per_round[n]],
                "timings": len(times[n])} for n in names}


def speedup_decision(plain: dict[str, Any], optimized: dict[str, Any], min_speedup: float) -> dict[str, Any]:
    """Keep the optimised graph only if it is at least ``min_speedup`` times faster at the median and
    faster in a majority of rounds (so one noisy round cannot decide)."""
    speedup = plain["latency_ms_p50"] / optimized["latency_ms_p50"]
    wins = sum(o < p for p, o in zip(plain["round_p50_ms"], optimized["round_p50_ms"], strict=True))
    rounds = len(plain["round_p50_ms"])
    helps = speedup >= min_speedup and wins > rounds / 2
    return {"speedup": round(speedup, 4), "rounds_won": wins, "rounds": rounds, "helps": helps}


# -- tokenizer inside the graph -----------------------------------------------------------------------
def extensions_library() -> str:
    """Path of onnxruntime-extensions' custom-op library, or a clear error naming the extra to install."""
    try:
        from onnxruntime_extensions import get_library_path
    except ImportError:
        raise RecipeError(f"tokenizer_in_graph needs onnxruntime-extensions; {EXTENSIONS_HINT}") from None
    return get_library_path()


def wordpiece_settings(tokenizer_json: dict, max_length: int) -> dict[str, Any]:
    """Attributes of onnxruntime-extensions' BertTokenizer op that reproduce a tokenizer.json.

    The op implements BERT-style WordPiece (BasicTokenizer + WordPiece + [CLS] x [SEP]); anything else
    (BPE, Unigram, unusual normalisers) cannot be reproduced exactly, so it is refused with a reason.
    """
    model = tokenizer_json.get("model") or {}
    normalizer = tokenizer_json.get("normalizer") or {}
    pre = tokenizer_json.get("pre_tokenizer") or {}
    post = tokenizer_json.get("post_processor") or {}
    problems = []
    if model.get("type") != "WordPiece":
        problems.append(f"model is {model.get('type')!r}, not WordPiece")
    if normalizer.get("type") != "BertNormalizer":
        problems.append(f"normalizer is {normalizer.get('type')!r}, not BertNormalizer")
    if pre.get("type") != "BertPreTokenizer":
        problems.append(f"pre-tokenizer is {pre.get('type')!r}, not BertPreTokenizer")
    cls_sep = _special_tokens(post)
    if cls_sep is None:
        problems.append(f"post-processor {post.get('type')!r} is not '<cls> text <sep>'")
    if problems:
        raise RecipeError("stages.export.tokenizer_in_graph: onnxruntime-extensions' tokenizer op only "
                          "reproduces BERT-style WordPiece tokenizers; here " + "; ".join(problems) +
                          ". Set tokenizer_in_graph: false and ship tokenizer.json instead.")
    lowercase = bool(normalizer.get("lowercase", True))
    strip = normalizer.get("strip_accents")
    # The op numbers tokens by line; ids no token uses (a vocab.txt with duplicate lines) get a
    # placeholder that never matches text.
    by_id = {i: token for token, i in model["vocab"].items()}
    lines = [by_id.get(i, f"[edgedistill-unused-{i}]") for i in range(max(by_id) + 1)]
    return {
        "vocab_file": "\n".join(lines),
        "do_lower_case": int(lowercase),
        # tokenizers strips accents when lowercasing unless told otherwise (strip_accents: null).
        "strip_accents": int(lowercase if strip is None else bool(strip)),
        "tokenize_chinese_chars": int(bool(normalizer.get("handle_chinese_chars", True))),
        "unk_token": model.get("unk_token", "[UNK]"),
        "suffix_indicator": model.get("continuing_subword_prefix", "##"),
        "cls_token": cls_sep[0],
        "sep_token": cls_sep[1],
        "max_length": int(max_length),
    }


def _special_tokens(post: dict) -> tuple[str, str] | None:
    kind = post.get("type")
    if kind in ("BertProcessing", "RobertaProcessing"):
        return post["cls"][0], post["sep"][0]
    if kind == "TemplateProcessing":
        single = post.get("single", [])
        pieces = [p.get("SpecialToken", {}).get("id") if "SpecialToken" in p else "$" for p in single]
        if len(pieces) == 3 and pieces[1] == "$" and None not in pieces:
            return pieces[0], pieces[2]
    return None


def build_tokenizer_in_graph(model_path: Path, tokenizer_path: Path, manifest: dict, target: Path) -> None:
    """One ONNX model from a 1-D string tensor of texts to their embeddings [N, dimension].

    A Loop tokenises each text with onnxruntime-extensions' BertTokenizer op (it takes one text at a time:
    two strings would be read as a sentence pair) and runs the encoder on it at batch size 1, so no
    padding is involved and the result equals the two-file path up to float rounding.
    """
    import onnx
    from onnx import TensorProto, helper

    settings = wordpiece_settings(json.loads(Path(tokenizer_path).read_text()), manifest["max_seq_length"])
    encoder = onnx.load(str(model_path))
    g = encoder.graph
    out_name = manifest.get("output", "sentence_embedding")
    inner_out = "tig_embedding"
    for node in g.node:
        node.output[:] = [inner_out if o == out_name else o for o in node.output]
        node.input[:] = [inner_out if i == out_name else i for i in node.input]
    wanted = {i.name for i in g.input}
    tokens = ["tig_ids", "tig_type_ids", "tig_mask", "tig_offsets"]
    body_nodes = [
        helper.make_node("Unsqueeze", ["tig_i", "tig_axis0"], ["tig_index"]),
        helper.make_node("Gather", [TEXT_INPUT, "tig_index"], ["tig_text"], axis=0),
        helper.make_node("BertTokenizer", ["tig_text"], tokens, domain="ai.onnx.contrib", **settings),
    ]
    for name, source in (("input_ids", "tig_ids"), ("attention_mask", "tig_mask"),
                         ("token_type_ids", "tig_type_ids")):
        if name in wanted:
            body_nodes.append(helper.make_node("Unsqueeze", [source, "tig_axis0"], [name]))
    body_nodes += list(g.node)
    body_nodes += [helper.make_node("Squeeze", [inner_out, "tig_axis0"], ["tig_row"]),
                   helper.make_node("Identity", ["tig_cond_in"], ["tig_cond_out"])]
    axis0 = helper.make_tensor("tig_axis0", TensorProto.INT64, [1], [0])
    body = helper.make_graph(
        body_nodes, "tokenize_and_embed",
        [helper.make_tensor_value_info("tig_i", TensorProto.INT64, []),
         helper.make_tensor_value_info("tig_cond_in", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("tig_cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("tig_row", TensorProto.FLOAT, [manifest["dimension"]])],
        initializer=[axis0, *g.initializer],
        value_info=list(g.value_info),
    )
    outer = helper.make_graph(
        [helper.make_node("Shape", [TEXT_INPUT], ["tig_n1"]),
         helper.make_node("Squeeze", ["tig_n1"], ["tig_n"]),
         helper.make_node("Loop", ["tig_n", ""], [out_name], body=body)],
        "sentence_embedder_with_tokenizer",
        [helper.make_tensor_value_info(TEXT_INPUT, TensorProto.STRING, ["batch"])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["batch", manifest["dimension"]])],
    )
    opsets = {o.domain: o.version for o in encoder.opset_import} | {"ai.onnx.contrib": 1}
    model = helper.make_model(outer, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                              producer_name="edgedistill", ir_version=encoder.ir_version)
    model.functions.extend(encoder.functions)
    onnx.save(model, str(target))


def compare(encode_a: Callable[[list[str]], np.ndarray], encode_b: Callable[[list[str]], np.ndarray],
            sentences: list[str]) -> dict[str, float]:
    """Max abs difference and min cosine between two encoders' normalised embeddings."""
    a, b = encode_a(sentences), encode_b(sentences)
    return {"max_abs_diff": float(np.abs(a - b).max()), "min_cosine": float((a * b).sum(axis=1).min()),
            "sentences": len(sentences)}
