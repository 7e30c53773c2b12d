"""Export: the whole sentence-transformers pipeline as one ONNX graph, gated by a numerical check."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgedistill.errors import GateError, RecipeError
from edgedistill.recipe import ExportStage
from edgedistill.runner import StageContext, StageResult

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

OUTPUT_NAME = "sentence_embedding"
INPUT_NAMES = ["input_ids", "attention_mask"]
POOLING_MODES = ("mean", "cls", "max")


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


def build_graph_module(model: SentenceTransformer) -> torch.nn.Module:
    """A plain module from token ids and mask to the normalised sentence embedding."""
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

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
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
            return torch.nn.functional.normalize(features["sentence_embedding"], p=2.0, dim=1)

    return SentenceEmbedder().eval()


def export_onnx(model: SentenceTransformer, path: Path, opset: int, exporter: str) -> None:
    """Write one ONNX file with dynamic batch and sequence axes."""
    import torch

    graph = build_graph_module(model)
    example = model[0].tokenizer(["a short one", "a somewhat longer example sentence here"], padding=True,
                                 return_tensors="pt")
    args = (example["input_ids"], example["attention_mask"])
    if exporter == "dynamo":
        batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
        dims: dict[str, Any] = {"dynamic_shapes": {n: {0: batch, 1: seq} for n in INPUT_NAMES}}
    else:
        axes = {n: {0: "batch", 1: "sequence"} for n in INPUT_NAMES} | {OUTPUT_NAME: {0: "batch"}}
        dims = {"dynamic_axes": axes}
    with torch.no_grad():
        torch.onnx.export(graph, args, str(path), input_names=INPUT_NAMES, output_names=[OUTPUT_NAME],
                          opset_version=opset, dynamo=exporter == "dynamo", external_data=False, **dims)


def check_sentences(sentences: list[str], n: int, max_seq_length: int) -> list[str]:
    """Real sentences of many lengths, including some long enough to hit truncation."""
    chosen = sorted(sentences[:n], key=len)
    long_ones = [" ".join(chosen[-8:][i:] + chosen[:i]) * 4 for i in range(4)]
    return chosen + long_ones


def validate(model: SentenceTransformer, bundle: Path, sentences: list[str]) -> dict[str, float]:
    """Compare the ONNX bundle with PyTorch over several batch sizes."""
    from edgedistill.runtime import OnnxEncoder

    encoder = OnnxEncoder(bundle)
    reference = model.encode(sentences, batch_size=16, convert_to_numpy=True, normalize_embeddings=True)
    worst_diff, worst_cos = 0.0, 1.0
    for batch_size in (1, 7, 32):
        got = encoder.encode(sentences, batch_size=batch_size)
        worst_diff = max(worst_diff, float(np.abs(got - reference).max()))
        worst_cos = min(worst_cos, float((got * reference).sum(axis=1).min()))
    return {"max_abs_diff": worst_diff, "min_cosine": worst_cos, "check_sentences": len(sentences)}


def write_manifest(model: SentenceTransformer, bundle: Path, opset: int, exporter: str) -> dict:
    tokenizer = model[0].tokenizer
    manifest = {
        "format": "edgedistill-bundle/1",
        "model": "model.onnx",
        "tokenizer": "tokenizer.json",
        "inputs": INPUT_NAMES,
        "output": OUTPUT_NAME,
        "dimension": int(model.get_embedding_dimension()),
        "pooling": pooling_mode(model),
        "normalized": True,
        "max_seq_length": int(model.max_seq_length),
        "pad_token": tokenizer.pad_token,
        "pad_token_id": int(tokenizer.pad_token_id),
        "opset": opset,
        "exporter": exporter,
    }
    update_manifest_hashes(bundle, manifest)
    return manifest


def update_manifest_hashes(bundle: Path, manifest: dict) -> None:
    """Record the sha256 of every shipped file and write manifest.json."""
    manifest["sha256"] = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(bundle.iterdir()) if p.is_file() and p.name != "manifest.json"
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def run(cfg: ExportStage, ctx: StageContext) -> StageResult:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(ctx.input.path), device="cpu")
    bundle = ctx.artifact_dir
    bundle.mkdir(parents=True)
    export_onnx(model, bundle / "model.onnx", cfg.opset, cfg.exporter)
    model[0].tokenizer.save_pretrained(str(bundle))
    for extra in ("vocab.txt", "special_tokens_map.json", "chat_template.jinja"):
        (bundle / extra).unlink(missing_ok=True)
    write_manifest(model, bundle, cfg.opset, cfg.exporter)

    sentences = check_sentences(ctx.evaluator.data.heldout or ctx.evaluator.data.latency_sentences,
                                cfg.check_sentences, model.max_seq_length)
    check = validate(model, bundle, sentences)
    log.info("export check: max |onnx - torch| %.2e, min cosine %.6f over %d sentences x 3 batch sizes",
             check["max_abs_diff"], check["min_cosine"], check["check_sentences"])
    if check["max_abs_diff"] > cfg.max_abs_diff or check["min_cosine"] < cfg.min_cosine:
        raise GateError(
            f"export validation failed: max abs diff {check['max_abs_diff']:.3e} (allowed {cfg.max_abs_diff:g}), "
            f"min cosine {check['min_cosine']:.6f} (required {cfg.min_cosine:g}). The ONNX graph does not "
            "reproduce PyTorch; try exporter: torchscript or another opset, or loosen the thresholds."
        )
    return StageResult(metrics={"validation": check, "opset": cfg.opset, "exporter": cfg.exporter})
