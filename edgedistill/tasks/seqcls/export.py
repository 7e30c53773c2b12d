"""Export a sequence classifier to one ONNX graph (input_ids, attention_mask[, token_type_ids] -> logits
[batch, num_labels], dynamic batch and sequence axes), gated numerically against PyTorch.

The manifest keeps the fields every bundle has (``inputs``: the graph's input names, tokenizer, padding,
max_seq_length; ``dimension`` = num_labels so the task-agnostic quantize and profile code can feed it) and adds
``task``, ``text_inputs`` ('text' or 'text_pair'), ``output`` ('logits', or 'probabilities' when the activation is
in the graph), ``activation`` ('softmax' | 'sigmoid' | 'none': what turns the output into scores) and ``labels``.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.errors import GateError, RecipeError
from edgedistill.manifest import write_manifest
from edgedistill.tasks.seqcls import ACTIVATIONS, TEXT, TEXT_PAIR, Texts
from edgedistill.tasks.seqcls.models import SequenceClassifier
from edgedistill.tasks.seqcls.runtime import OnnxSequenceClassifier, apply_activation

log = logging.getLogger(__name__)

INPUT_NAMES = ["input_ids", "attention_mask"]
TOKEN_TYPE_IDS = "token_type_ids"
LOGITS = "logits"
PROBABILITIES = "probabilities"
VALIDATION_BATCH_SIZES = (1, 7, 32)
FORMAT = "edgedistill-bundle/1"


def uses_token_type_ids(model: Any) -> bool:
    """BERT-family models read token types (pairs: segment A/B); MPNet and single-type models take none."""
    takes = TOKEN_TYPE_IDS in inspect.signature(model.forward).parameters
    return takes and int(getattr(model.config, "type_vocab_size", 0) or 0) > 1


def graph_inputs(model: Any) -> list[str]:
    return INPUT_NAMES + ([TOKEN_TYPE_IDS] if uses_token_type_ids(model) else [])


def build_graph_module(model: Any, activation_in_graph: str = "none") -> Any:
    """A plain module from token ids and mask (and token types) to logits, or probabilities when an activation
    is put into the graph."""
    import torch

    from edgedistill.tasks.embedding.export import additive_mask

    class LogitsGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
            extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            logits = self.model(input_ids=input_ids, attention_mask=additive_mask(attention_mask), **extra).logits
            if activation_in_graph == "softmax":
                return torch.softmax(logits, dim=-1)
            if activation_in_graph == "sigmoid":
                return torch.sigmoid(logits)
            return logits

    return LogitsGraph().eval()


def export_onnx(clf: SequenceClassifier, path: Path, opset: int = 18, exporter: str = "dynamo",
                activation_in_graph: str = "none") -> list[str]:
    """Write one ONNX file; returns its input names."""
    import torch

    model = clf.model
    names = graph_inputs(model)
    graph = build_graph_module(model, activation_in_graph)
    example = clf.tokenizer(["a short one", "a somewhat longer example sentence here"], padding=True,
                            return_tensors="pt", return_token_type_ids=True)
    args = tuple(example[n].to(clf.device) for n in names)
    output = PROBABILITIES if activation_in_graph != "none" else LOGITS
    if exporter == "dynamo":
        batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
        dims: dict[str, Any] = {"dynamic_shapes": tuple({0: batch, 1: seq} for _ in names)}
    else:
        dims = {"dynamic_axes": {n: {0: "batch", 1: "sequence"} for n in names} | {output: {0: "batch"}}}
    before = getattr(model.config, "_attn_implementation", None)
    was_training = model.training
    model.eval()
    try:
        model.set_attn_implementation("eager")  # MatMul/Softmax attention: what onnxruntime's fusions know
    except (AttributeError, ValueError):
        before = None
    try:
        with torch.no_grad():
            torch.onnx.export(graph, args, str(path), input_names=names, output_names=[output], opset_version=opset,
                              dynamo=exporter == "dynamo", external_data=False, **dims)
    finally:
        if before and before != "eager":
            model.set_attn_implementation(before)
        model.train(was_training)
    return names


def check_inputs(texts: Texts, n: int) -> list:
    """Real inputs of many lengths, plus a few long enough to be truncated."""
    items = sorted(list(texts)[:n], key=lambda t: len(t) if isinstance(t, str) else len(t[0]) + len(t[1]))
    tail = items[-4:]
    if not tail:
        raise RecipeError("export: no inputs to check the graph with (the evaluation set is empty)")
    if isinstance(tail[0], str):
        long = [" ".join(tail) * 6]
    else:
        long = [(" ".join(a for a, _ in tail) * 6, " ".join(b for _, b in tail) * 6)]
    return items + long


def validate(clf: SequenceClassifier, bundle: Path, texts: Texts, model_file: str = "model.onnx") -> dict[str, Any]:
    """Largest |onnx - torch| of the graph's output over the inputs at several batch sizes."""
    items = list(texts)
    onnx_model = OnnxSequenceClassifier(bundle, model_file=model_file)
    reference = apply_activation(clf.logits(items, batch_size=16), onnx_model.output_activation)
    diff = np.zeros(len(items))
    for batch_size in VALIDATION_BATCH_SIZES:
        got = onnx_model.raw_output(items, batch_size=batch_size)
        diff = np.maximum(diff, np.abs(got - reference).max(axis=1))
    got = onnx_model.raw_output(items)
    agree = float((got.argmax(1) == reference.argmax(1)).mean())
    cosine = (got * reference).sum(1) / np.maximum(np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1),
                                                   1e-12)
    lengths = [sum(e.attention_mask) for e in onnx_model.tokenizer.encode_batch(
        [x if isinstance(x, str) else tuple(x) for x in items])]
    # check_sentences / tokens / min_cosine: the names the export stage's report section reads
    return {"max_abs_diff": float(diff.max()), "check_inputs": len(items), "check_sentences": len(items),
            "batch_sizes": list(VALIDATION_BATCH_SIZES), "argmax_agreement": agree,
            "min_cosine": float(cosine.min()), "tokens_min": int(min(lengths)), "tokens_max": int(max(lengths))}


def gate(check: dict[str, Any], max_abs_diff: float, what: str = "graph") -> None:
    """Stop, with the numbers, when the graph does not reproduce PyTorch."""
    log.info("export check (%s): max |onnx - torch| %.2e over %d inputs x batch sizes %s", what,
             check["max_abs_diff"], check["check_inputs"], check["batch_sizes"])
    if not check["max_abs_diff"] <= max_abs_diff:
        raise GateError(f"export validation failed ({what}): max abs diff {check['max_abs_diff']:.3e} (allowed "
                        f"{max_abs_diff:g}). The ONNX graph does not reproduce PyTorch; try the other exporter or "
                        "another opset, or loosen max_abs_diff.")


def build_manifest(clf: SequenceClassifier, bundle: Path, *, task: str, text_inputs: str, activation: str,
                   inputs: list[str], output: str = LOGITS, opset: int = 18, exporter: str = "dynamo",
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write manifest.json (with every file's sha256) for a sequence-classification bundle."""
    if activation not in ACTIVATIONS:
        raise RecipeError(f"activation: {activation!r}; expected one of {', '.join(ACTIVATIONS)}")
    if text_inputs not in (TEXT, TEXT_PAIR):
        raise RecipeError(f"text_inputs: {text_inputs!r}; expected '{TEXT}' or '{TEXT_PAIR}'")
    tokenizer = clf.tokenizer
    manifest = {
        "format": FORMAT, "task": task, "model": "model.onnx", "tokenizer": "tokenizer.json",
        "inputs": inputs, "text_inputs": text_inputs, "output": output, "outputs": [output],
        "activation": activation, "labels": clf.labels, "num_labels": clf.num_labels,
        "dimension": clf.num_labels, "normalized": False, "pooling": "classification head",
        "max_seq_length": clf.max_seq_length, "pad_token": tokenizer.pad_token,
        "pad_token_id": int(tokenizer.pad_token_id), "family": str(clf.model.config.model_type),
        "opset": opset, "exporter": exporter, **(extra or {}),
    }
    write_manifest(bundle, manifest)
    return manifest


def graph_opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return int(next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")))


def export_bundle(clf: SequenceClassifier, bundle: Path, check: Texts, *, task: str, activation: str,
                  probabilities: bool = False, opset: int = 18, exporter: str = "dynamo", max_abs_diff: float = 1e-4,
                  check_count: int = 64, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """model.onnx + tokenizer.json + manifest.json in ``bundle``, checked against PyTorch on ``check``.
    ``probabilities`` puts the activation into the graph (the output is then scores, not logits); the check runs
    on the first ``check_count`` inputs plus a few truncated ones."""
    bundle = Path(bundle)
    bundle.mkdir(parents=True, exist_ok=True)
    items = check_inputs(check, check_count)
    text_inputs = TEXT_PAIR if items and not isinstance(items[0], str) else TEXT
    in_graph = activation if probabilities else "none"
    if probabilities and activation == "none":
        raise RecipeError("export.probabilities: the task's activation is 'none' (raw scores); nothing to put in "
                          "the graph. Set probabilities: false.")
    inputs = export_onnx(clf, bundle / "model.onnx", opset, exporter, in_graph)
    clf.tokenizer.backend_tokenizer.save(str(bundle / "tokenizer.json"))
    manifest_extra = {"output_activation": in_graph, **(extra or {})}
    build_manifest(clf, bundle, task=task, text_inputs=text_inputs, activation=activation, inputs=inputs,
                   output=PROBABILITIES if probabilities else LOGITS, opset=graph_opset(bundle / "model.onnx"),
                   exporter=exporter, extra=manifest_extra)
    result = validate(clf, bundle, items)
    gate(result, max_abs_diff)
    return {"opset": graph_opset(bundle / "model.onnx"), "exporter": exporter, "inputs": inputs,
            "text_inputs": text_inputs, "output": PROBABILITIES if probabilities else LOGITS, "validation": result}
