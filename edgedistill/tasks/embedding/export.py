"""Export: the whole sentence-transformers pipeline as one ONNX graph, gated by a numerical check.

Then, optionally, onnxruntime's transformer fusions (kept only when they measurably cut batch-1 latency
and pass the same gate) and a tokenizer-in-graph variant (checked against the two-file path).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgedistill.contract import StageContext, StageResult
from edgedistill.errors import GateError, RecipeError
from edgedistill.manifest import write_manifest
from edgedistill.stages.configs import ExportStage
from edgedistill.timing import threads_label

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

OUTPUT_NAME = "sentence_embedding"
INPUT_NAMES = ["input_ids", "attention_mask"]
TOKEN_TYPE_IDS = "token_type_ids"
POOLING_MODES = ("mean", "cls", "max")
VALIDATION_BATCH_SIZES = (1, 7, 32)
LENGTH_BUCKETS = ((1, 16), (17, 64), (65, 10**9))  # tokens, including special tokens
OPTIMIZED_FILE = "model.optimized.onnx"
PLAIN_FILE = "model.plain.onnx"  # kept when the fused graph replaces model.onnx (edgedistill.portable)


def pooling_mode(model: SentenceTransformer) -> str:
    """The pooling a sentence-transformers model is configured with (mean, cls or max)."""
    from sentence_transformers.sentence_transformer.modules import Pooling

    pooling = next((m for m in model if isinstance(m, Pooling)), None)
    if pooling is None:
        raise RecipeError("export: the model has no Pooling module; only sentence-transformers pipelines "
                          "(Transformer, Pooling, ...) can be exported")
    mode = pooling.get_config_dict().get("pooling_mode")
    if mode not in POOLING_MODES:
        raise RecipeError(f"export: pooling mode {mode!r} is not supported; use one of {POOLING_MODES}")
    return str(mode)


def uses_token_type_ids(model: SentenceTransformer) -> bool:
    """Whether the transformer reads token_type_ids: it takes them and has more than one type embedding
    (BERT-family, type_vocab_size 2). MPNet and models with a single type take none."""
    auto = model[0].auto_model
    takes = TOKEN_TYPE_IDS in inspect.signature(auto.forward).parameters
    return takes and int(getattr(auto.config, "type_vocab_size", 0) or 0) > 1


def graph_inputs(model: SentenceTransformer) -> list[str]:
    """The ONNX graph's input names, in order."""
    return INPUT_NAMES + ([TOKEN_TYPE_IDS] if uses_token_type_ids(model) else [])


def additive_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """The [batch, 1, seq, seq] additive attention mask, built the way transformers 4 did.

    transformers 5 accepts a prepared 4D mask as is. Its own mask builder exports to index arithmetic
    (Range/GreaterOrEqual/And) that onnxruntime's attention fusion does not recognise; this form
    (Expand -> Sub -> Cast -> Where) is a pattern the fusion knows.
    """
    import torch

    batch, seq = attention_mask.shape
    inverted = 1.0 - attention_mask[:, None, None, :].expand(batch, 1, seq, seq).to(torch.float32)
    return inverted.masked_fill(inverted.to(torch.bool), torch.finfo(torch.float32).min)


def build_graph_module(model: SentenceTransformer) -> torch.nn.Module:
    """A plain module from token ids and mask (and token types) to the normalised sentence embedding."""
    import torch
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

    mode = pooling_mode(model)
    modules = list(model)
    after_pooling = modules[next(i for i, m in enumerate(modules) if isinstance(m, Pooling)) + 1:]
    after_pooling = [m for m in after_pooling if not isinstance(m, Normalize)]

    class SentenceEmbedder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = modules[0].auto_model
            self.post = torch.nn.ModuleList(after_pooling)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
            extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            hidden = self.transformer(input_ids=input_ids, attention_mask=additive_mask(attention_mask),
                                      **extra).last_hidden_state
            # Broadcast multiply, not expand: expand breaks onnxruntime's shape inference.
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            if mode == "mean":
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            elif mode == "cls":
                pooled = hidden[:, 0]
            else:
                pooled = (hidden * mask + (mask - 1.0) * 1e9).max(dim=1).values
            features = {"sentence_embedding": pooled}
            for module in self.post:
                features = module(features)
            out = features["sentence_embedding"]
            # = F.normalize, written without its Expand, which onnxruntime's symbolic shape inference (needed
            # by the fusions) cannot follow.
            return out / torch.sqrt((out * out).sum(dim=1, keepdim=True)).clamp(min=1e-12)

    return SentenceEmbedder().eval()


@contextlib.contextmanager
def eager_attention(model: SentenceTransformer) -> Iterator[None]:
    """Trace the textbook attention (MatMul, Softmax, MatMul), which the fusions recognise; restore after."""
    auto = model[0].auto_model
    before = getattr(auto.config, "_attn_implementation", None)
    try:
        auto.set_attn_implementation("eager")
    except (AttributeError, ValueError):  # a model without switchable attention: trace what it has
        before = None
    try:
        yield
    finally:
        if before and before != "eager":
            auto.set_attn_implementation(before)


def export_onnx(model: SentenceTransformer, path: Path, opset: int, exporter: str) -> list[str]:
    """Write one ONNX file with dynamic batch and sequence axes; returns its input names."""
    import torch

    names = graph_inputs(model)
    graph = build_graph_module(model)
    example = model[0].tokenizer(["a short one", "a somewhat longer example sentence here"], padding=True,
                                 return_tensors="pt", return_token_type_ids=True)
    args = tuple(example[n] for n in names)
    if exporter == "dynamo":
        batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
        dims: dict[str, Any] = {"dynamic_shapes": tuple({0: batch, 1: seq} for _ in names)}
    else:
        axes = {n: {0: "batch", 1: "sequence"} for n in names} | {OUTPUT_NAME: {0: "batch"}}
        dims = {"dynamic_axes": axes}
    with torch.no_grad(), eager_attention(model):
        torch.onnx.export(graph, args, str(path), input_names=names, output_names=[OUTPUT_NAME],
                          opset_version=opset, dynamo=exporter == "dynamo", external_data=False, **dims)
    return names


def graph_opset(path: Path) -> int:
    """The default-domain opset the saved graph declares (the exporter may raise the requested one)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return int(next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")))


def check_sentences(sentences: list[str], n: int, max_seq_length: int) -> list[str]:
    """Real sentences of many lengths, including some long enough to hit truncation."""
    chosen = sorted(sentences[:n], key=len)
    long_ones = [" ".join(chosen[-8:][i:] + chosen[:i]) * 4 for i in range(4)]
    return chosen + long_ones


def validate(model: SentenceTransformer, bundle: Path, sentences: list[str],
             model_file: str = "model.onnx") -> dict[str, Any]:
    """Compare an ONNX graph of the bundle with PyTorch at several batch sizes and token lengths."""
    from edgedistill.runtime import OnnxEncoder

    encoder = OnnxEncoder(bundle, model_file=model_file)
    reference = model.encode(sentences, batch_size=16, convert_to_numpy=True, normalize_embeddings=True)
    lengths = np.array([sum(e.attention_mask) for e in encoder.tokenizer.encode_batch(sentences)])
    diff = np.zeros(len(sentences))
    cosine = np.ones(len(sentences))
    for batch_size in VALIDATION_BATCH_SIZES:
        got = encoder.encode(sentences, batch_size=batch_size)
        diff = np.maximum(diff, np.abs(got - reference).max(axis=1))
        cosine = np.minimum(cosine, (got * reference).sum(axis=1))
    by_length = {}
    for low, high in LENGTH_BUCKETS:
        inside = (lengths >= low) & (lengths <= high)
        if inside.any():
            label = f"{low}-{high}" if high < 10**9 else f"{low}+"
            by_length[label] = {"sentences": int(inside.sum()), "max_abs_diff": float(diff[inside].max()),
                                "min_cosine": float(cosine[inside].min())}
    return {"max_abs_diff": float(diff.max()), "min_cosine": float(cosine.min()), "check_sentences": len(sentences),
            "batch_sizes": list(VALIDATION_BATCH_SIZES), "tokens_min": int(lengths.min()),
            "tokens_max": int(lengths.max()), "by_length": by_length}


def gate(check: dict[str, Any], cfg: ExportStage, what: str) -> None:
    """Stop the run, with the numbers, when a graph does not reproduce PyTorch."""
    log.info("export check (%s): max |onnx - torch| %.2e, min cosine %.6f over %d sentences (%d-%d tokens) "
             "x batch sizes %s", what, check["max_abs_diff"], check["min_cosine"], check["check_sentences"],
             check["tokens_min"], check["tokens_max"], check["batch_sizes"])
    if check["max_abs_diff"] > cfg.max_abs_diff or check["min_cosine"] < cfg.min_cosine:
        raise GateError(
            f"export validation failed ({what}): max abs diff {check['max_abs_diff']:.3e} (allowed "
            f"{cfg.max_abs_diff:g}), min cosine {check['min_cosine']:.6f} (required {cfg.min_cosine:g}); by length: "
            + ", ".join(f"{k} tokens {v['max_abs_diff']:.2e}" for k, v in check["by_length"].items())
            + ". The ONNX graph does not reproduce PyTorch; try the other exporter or another opset, set "
            "optimize: never if only the optimised graph fails, or loosen the thresholds."
        )


def build_manifest(model: SentenceTransformer, bundle: Path, opset: int, exporter: str,
                   inputs: list[str] | None = None, extra: dict[str, Any] | None = None) -> dict:
    tokenizer = model[0].tokenizer
    manifest = {
        "format": "edgedistill-bundle/1",
        "task": "embedding",
        "model": "model.onnx",
        "tokenizer": "tokenizer.json",
        "inputs": inputs or graph_inputs(model),
        "output": OUTPUT_NAME,
        "outputs": [OUTPUT_NAME],
        "dimension": int(model.get_embedding_dimension()),
        "pooling": pooling_mode(model),
        "normalized": True,
        "normalization": "l2",
        "max_seq_length": int(model.max_seq_length),
        "pad_token": tokenizer.pad_token,
        "pad_token_id": int(tokenizer.pad_token_id),
        "family": str(model[0].auto_model.config.model_type),
        "opset": opset,
        "exporter": exporter,
        **(extra or {}),
    }
    write_manifest(bundle, manifest)
    return manifest


def timing_sentences(ctx: StageContext, n: int) -> list[str]:
    data = ctx.evaluator.data
    pool = data.latency_sentences or data.heldout
    return [pool[i % len(pool)] for i in range(n)] if pool else ["A man is playing a guitar."] * n


def optimize_graph(model: SentenceTransformer, cfg: ExportStage, bundle: Path, sentences: list[str],
                   timing: list[str]) -> dict[str, Any]:
    """Fuse the graph, gate it like the plain one and keep it only when it pays (optimize: auto)."""
    from edgedistill.optimize import fuse_transformer, interleaved_latency, speedup_decision
    from edgedistill.runtime import OnnxEncoder

    config = model[0].auto_model.config
    fusions = fuse_transformer(bundle / "model.onnx", bundle / OPTIMIZED_FILE, int(config.num_attention_heads),
                               int(config.hidden_size))
    result: dict[str, Any] = {"mode": cfg.optimize, "fusions": fusions, "min_speedup": cfg.min_speedup,
                              "timing_threads": cfg.timing_threads}
    check = validate(model, bundle, sentences, model_file=OPTIMIZED_FILE)
    result["validation"] = check
    try:
        gate(check, cfg, "optimised graph")
        passed = True
    except GateError:
        if cfg.optimize == "always":
            raise
        passed = False
        log.warning("export: the optimised graph fails the numerical gate; keeping the plain graph")
    # Two sessions timed in turns: without spin-waiting, neither steals the cores while the other runs.
    threads = cfg.timing_threads
    latency = interleaved_latency({"plain": OnnxEncoder(bundle, threads, spin=False),
                                   "optimized": OnnxEncoder(bundle, threads, OPTIMIZED_FILE, spin=False)},
                                  timing, cfg.timing_rounds)
    result.update(latency=latency, **speedup_decision(latency["plain"], latency["optimized"], cfg.min_speedup))
    result["passed_gate"] = passed
    result["applied"] = passed and (cfg.optimize == "always" or result["helps"])
    log.info("export: optimised graph (%s) batch-1 p50 %.3f ms vs plain %.3f ms (x%.3f, won %d/%d rounds at %s) -> %s",
             ", ".join(f"{k} {v}" for k, v in fusions.items()) or "no fusions",
             latency["optimized"]["latency_ms_p50"], latency["plain"]["latency_ms_p50"], result["speedup"],
             result["rounds_won"], result["rounds"], threads_label(threads), "applied" if result["applied"] else "not applied")
    if result["applied"]:
        # The plain graph (ai.onnx ops only) stays beside it for targets without onnxruntime's contrib ops.
        os.replace(bundle / "model.onnx", bundle / PLAIN_FILE)
        os.replace(bundle / OPTIMIZED_FILE, bundle / "model.onnx")
    else:
        (bundle / OPTIMIZED_FILE).unlink()
    return result


def tokenizer_in_graph(cfg: ExportStage, bundle: Path, manifest: dict, sentences: list[str], timing: list[str],
                       keep_dir: Path) -> dict[str, Any]:
    """Build the strings-in variant, check it against the two-file path and time both.

    The variant is kept beside the artifact (``keep_dir``), not in it: later stages (quantize) change
    model.onnx, and the deploy bundle rebuilds the variant from the final graph.
    """
    from edgedistill.optimize import (
        IN_GRAPH_MODEL,
        build_tokenizer_in_graph,
        compare,
        extensions_library,
        interleaved_latency,
    )
    from edgedistill.runtime import InGraphEncoder, OnnxEncoder

    extensions_library()
    build_tokenizer_in_graph(bundle / "model.onnx", bundle / "tokenizer.json", manifest, bundle / IN_GRAPH_MODEL)
    two_file = OnnxEncoder(bundle, cfg.timing_threads, spin=False)
    in_graph = InGraphEncoder(bundle, cfg.timing_threads, spin=False)
    check = compare(lambda s: two_file.encode(s, batch_size=1), in_graph.encode, sentences)
    check["tolerance"] = cfg.tokenizer_in_graph_tolerance
    latency = interleaved_latency({"two_file": two_file, "in_graph": in_graph}, timing, cfg.timing_rounds)
    keep_dir.mkdir(parents=True, exist_ok=True)
    os.replace(bundle / IN_GRAPH_MODEL, keep_dir / IN_GRAPH_MODEL)
    shutil.copy2(bundle / "manifest.json", keep_dir / "manifest.json")
    log.info("export: tokenizer-in-graph max |diff| vs two-file %.2e (tolerance %g); batch-1 p50 %.3f ms vs %.3f ms",
             check["max_abs_diff"], cfg.tokenizer_in_graph_tolerance, latency["in_graph"]["latency_ms_p50"],
             latency["two_file"]["latency_ms_p50"])
    if check["max_abs_diff"] > cfg.tokenizer_in_graph_tolerance:
        raise GateError(f"export: the tokenizer-in-graph model differs from the two-file path by "
                        f"{check['max_abs_diff']:.3e} (tolerance {cfg.tokenizer_in_graph_tolerance:g}); its tokenizer "
                        "op does not reproduce tokenizer.json here. Set tokenizer_in_graph: false.")
    return {"validation": check, "latency": latency, "file": IN_GRAPH_MODEL}


def run(cfg: ExportStage, ctx: StageContext) -> StageResult:
    from edgedistill.trust import load_sentence_transformer

    model = load_sentence_transformer(ctx.input.path, "cpu")
    bundle = ctx.artifact_dir
    bundle.mkdir(parents=True)
    inputs = export_onnx(model, bundle / "model.onnx", cfg.opset, cfg.exporter)
    model[0].tokenizer.save_pretrained(str(bundle))
    model[0].auto_model.config.to_json_file(str(bundle / "config.json"))  # for the deploy bundle's clients
    for extra in ("vocab.txt", "special_tokens_map.json", "chat_template.jinja"):
        (bundle / extra).unlink(missing_ok=True)
    opset = graph_opset(bundle / "model.onnx")
    manifest = build_manifest(model, bundle, opset, cfg.exporter, inputs)

    pool = ctx.evaluator.data.heldout or ctx.evaluator.data.latency_sentences
    sentences = check_sentences(pool, cfg.check_sentences, model.max_seq_length)
    check = validate(model, bundle, sentences)
    gate(check, cfg, "plain graph")
    metrics: dict[str, Any] = {"validation": check, "opset": opset, "requested_opset": cfg.opset,
                               "exporter": cfg.exporter, "inputs": inputs}

    timing = timing_sentences(ctx, cfg.timing_sentences)
    if cfg.optimize != "never":
        metrics["optimization"] = optimize_graph(model, cfg, bundle, sentences, timing)
    applied = bool(metrics.get("optimization", {}).get("applied"))
    manifest["graph"] = {"optimized": applied,
                         "fusions": metrics["optimization"]["fusions"] if applied else {},
                         "needs": "onnxruntime (com.microsoft contrib ops)" if applied else "any ONNX runtime"}
    if applied:
        manifest["graph"]["plain"] = PLAIN_FILE
    manifest["tokenizer_in_graph"] = cfg.tokenizer_in_graph
    if cfg.tokenizer_in_graph:
        manifest["tokenizer_in_graph_tolerance"] = cfg.tokenizer_in_graph_tolerance
    write_manifest(bundle, manifest)
    if cfg.tokenizer_in_graph:
        metrics["tokenizer_in_graph"] = tokenizer_in_graph(cfg, bundle, manifest, sentences, timing,
                                                           ctx.work_dir / "tokenizer-in-graph")
    return StageResult(metrics=metrics)
