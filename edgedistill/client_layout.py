"""The deploy bundle's client-facing layout: the files other runtimes look for, written from our manifest.

manifest.json stays the source of truth; the files here restate it in the conventions of the clients an app
would use, so the bundle loads as shipped:

    onnx/model.onnx             fp32 graph            transformers.js dtype 'fp32', fastembed, onnxruntime(-web)
    onnx/model_quantized.onnx   INT8 graph            transformers.js dtype 'q8' / 'int8'
    config.json                 the encoder's transformers config (model_type picks the transformers.js class)
                                plus an ``edgedistill`` block saying what the graph outputs
    tokenizer.json              Hugging Face tokenizers format (unchanged)
    tokenizer_config.json       model_max_length = the bundle's max_seq_length (clients truncate with it)
    special_tokens_map.json     fastembed reads the special tokens from it

Two kinds of bundle (``write_client_layout(..., kind=...)``):

- ``feature-extraction`` (embeddings): both graphs end in the pooled, projected and L2-normalised
  ``sentence_embedding`` [batch, dimension]; a client reads that output as is. config.json carries an
  ``edgedistill`` block saying so.
- ``sequence-classification`` (classifiers, cross-encoder rerankers): the graphs map ``input_ids``,
  ``attention_mask`` [, ``token_type_ids``] to ``logits`` [batch, num_labels]; config.json is the encoder's config
  as ``<Family>ForSequenceClassification`` with ``num_labels``, ``id2label``/``label2id`` and ``problem_type``, so
  transformers.js's ``text-classification`` pipeline and ``AutoModelForSequenceClassification`` read it (softmax over
  labels, or a sigmoid for ``multi_label_classification`` and one-logit rerankers, as sentence-transformers'
  CrossEncoder scores). A task's export that puts ``labels`` (and optionally ``problem_type``) in its manifest gets
  this layout from the bundle writer; see docs/clients.md.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from edgedistill.manifest import read_manifest

log = logging.getLogger(__name__)

ONNX_DIR = "onnx"
FP32_FILE = f"{ONNX_DIR}/model.onnx"
INT8_FILE = f"{ONNX_DIR}/model_quantized.onnx"
CLIENT_FILES = ("config.json", "tokenizer_config.json", "special_tokens_map.json")
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
Kind = Literal["feature-extraction", "sequence-classification"]
KINDS = ("feature-extraction", "sequence-classification")
PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")
LOGITS = "logits"
# The task's activation on the logits (its manifest's ``activation``) as transformers' problem_type, which tells
# transformers.js's text-classification pipeline what to apply: softmax, sigmoid, or nothing.
ACTIVATION_PROBLEM = {"softmax": "single_label_classification", "sigmoid": "multi_label_classification",
                      "none": "regression"}


def model_files(sources: list[Path]) -> dict[str, Path]:
    """The graphs to ship, by precision: the last fp32 and the last INT8 ONNX artifact of a run's chain.

    ``sources`` are artifact folders holding manifest.json, oldest first; an artifact whose manifest records a
    quantization is INT8.
    """
    found: dict[str, Path] = {}
    plain: Path | None = None
    portable = False
    for folder in sources:
        manifest = read_manifest(folder)
        precision = "int8" if manifest.get("quantization") else "fp32"
        found[precision] = folder / manifest.get("model", "model.onnx")
        graph = manifest.get("graph", {})
        if precision == "fp32":
            plain = folder / graph["plain"] if graph.get("plain") else None
        portable = bool(graph.get("portable"))
    if portable and plain is not None and plain.is_file():  # a portable INT8 graph ships with a portable fp32 one
        found["fp32"] = plain
    return found


def _first_json(sources: list[Path], name: str) -> dict[str, Any] | None:
    for folder in reversed(sources):
        if (folder / name).is_file():
            return json.loads((folder / name).read_text())
    return None


def graph_contract(manifest: dict) -> dict[str, Any]:
    """What the graphs take and return, for config.json readers."""
    contract = {"inputs": list(manifest["inputs"]), "output": manifest["output"], "dimension": manifest["dimension"],
                "max_seq_length": manifest["max_seq_length"], "manifest": "manifest.json",
                "run_rows_separately": bool(manifest.get("batch_invariance", {}).get("run_rows_separately")),
                "token_embeddings": {p: bool(v.get("output")) for p, v in manifest.get("token_embeddings", {}).items()}}
    if "pooling" in manifest:  # embedding graphs; a sequence classifier's graph ends in logits (its task's fields)
        contract.update(pooling=f"{manifest['pooling']} (inside the graph)", normalized=bool(manifest["normalized"]))
    for key in ("task", "text_inputs", "activation", "labels"):
        if key in manifest:
            contract[key] = manifest[key]
    return contract


def write_layout(bundle: Path, manifest: dict, sources: list[Path], sentences: list[str] | None = None) -> dict[str, Any]:
    """Copy the graphs into ``bundle/onnx/`` and write the client files; returns the manifest's new fields.

    ``manifest`` is the final artifact's; its ``model`` becomes the final graph's path in the layout. A manifest
    with ``labels`` gets the sequence-classification layout (``problem_type`` from the manifest when it has one).
    With ``sentences``, an embedding graph that mean-pools also gets a ``token_embeddings`` output where pooling
    it reproduces the sentence embedding (checked on them; token_output.py), for clients that pool themselves.
    """
    graphs = model_files(sources)
    (bundle / ONNX_DIR).mkdir(exist_ok=True)
    models: dict[str, str] = {}
    for precision, target in (("fp32", FP32_FILE), ("int8", INT8_FILE)):
        if precision in graphs:
            shutil.copy2(graphs[precision], bundle / target)
            models[precision] = target
    final = "int8" if manifest.get("quantization") else "fp32"
    # A graph that ends in logits with named labels (a classifier's, a reranker's) is a sequence classifier for
    # the clients; one that ends in probabilities (activation inside) is not: their pipelines would apply the
    # activation again, so it keeps the generic config with the task's fields.
    labels = manifest.get("labels")
    classifier = labels is not None and manifest.get("output") == LOGITS
    if labels is None and sentences and manifest.get("pooling") == "mean":
        manifest = {**manifest, "token_embeddings": token_outputs(bundle, manifest, graphs, sentences)}
    fields = write_client_layout(
        bundle, manifest, kind="sequence-classification" if classifier else "feature-extraction",
        labels=labels, problem_type=manifest.get("problem_type") or ACTIVATION_PROBLEM.get(manifest.get("activation")),
        config=_first_json(sources, "config.json"), tokenizer_config=_first_json(sources, "tokenizer_config.json"))
    if "token_embeddings" in manifest:
        fields["token_embeddings"] = manifest["token_embeddings"]
    return {"model": models[final], "models": models, "precision": final, **fields}


def token_outputs(bundle: Path, manifest: dict, graphs: dict[str, Path], sentences: list[str]) -> dict[str, Any]:
    """Add ``token_embeddings`` to each shipped graph where it reproduces the sentence embedding; per precision,
    the check's figures or why not (the graph is then left as it was)."""
    from edgedistill import token_output

    feeds = token_output.feeds(bundle / manifest.get("tokenizer", "tokenizer.json"), manifest, sentences[:32])
    out: dict[str, Any] = {}
    for precision, target in (("fp32", FP32_FILE), ("int8", INT8_FILE)):
        if precision not in graphs:
            continue
        # An INT8 graph's quantized projection, applied per token, may miss the bar: then try the fp32 one.
        donors = [None] + ([graphs["fp32"]] if precision == "int8" and "fp32" in graphs else [])
        reasons = []
        for donor in donors:
            shutil.copy2(graphs[precision], bundle / target)
            if not token_output.add_token_output(bundle / target, manifest["output"], projection_from=donor):
                reasons.append("pooling or projection cannot be expressed per token")
                break
            try:
                check = token_output.check(graphs[precision], bundle / target, feeds, int8=precision == "int8",
                                           output=manifest["output"])
            except ValueError as err:
                reasons.append(str(err))
                continue
            out[precision] = {"output": token_output.TOKEN_OUTPUT, "pooling": "mean", "normalize": True,
                              "projection": "fp32 copy" if donor else "as in the graph", **check}
            break
        if precision not in out:
            shutil.copy2(graphs[precision], bundle / target)
            out[precision] = {"output": None, "why_not": "; ".join(reasons)}
            log.info("bundle: no %s output on the %s graph: %s", token_output.TOKEN_OUTPUT, precision, reasons[-1])
    return out


def write_client_layout(bundle_dir: Path, manifest: dict, *, kind: Kind = "feature-extraction",
                        labels: Sequence[str] | None = None, problem_type: str | None = None,
                        config: dict | None = None, tokenizer_config: dict | None = None) -> dict[str, Any]:
    """Write config.json, tokenizer_config.json and special_tokens_map.json into ``bundle_dir`` for the graphs
    under ``bundle_dir/onnx/`` (model.onnx, model_quantized.onnx; the caller puts them there, with tokenizer.json).

    ``manifest`` needs ``inputs``, ``output``, ``max_seq_length`` and ``pad_token`` (plus ``dimension``,
    ``pooling`` and ``normalized`` for feature extraction). ``config`` is the encoder's transformers config
    (default: ``bundle_dir/config.json``, else ``{"model_type": manifest["family"]}``); ``tokenizer_config`` the
    tokenizer's (default: ``bundle_dir/tokenizer_config.json``). For ``kind="sequence-classification"``,
    ``labels`` names the logits in order (one label: a reranker's relevance score) and ``problem_type`` is one
    of PROBLEM_TYPES (default: ``single_label_classification`` for several labels, softmax;
    ``multi_label_classification`` for one, a sigmoid like CrossEncoder's). Returns the manifest's ``clients``
    field. Raises ValueError naming the field when the input does not fit the kind.
    """
    bundle_dir = Path(bundle_dir)
    if kind not in KINDS:
        raise ValueError(f"write_client_layout: kind is {kind!r}; expected one of {KINDS}")
    if config is None:
        config = _read_json(bundle_dir / "config.json") or {"model_type": manifest["family"]}
    if tokenizer_config is None:
        tokenizer_config = _read_json(bundle_dir / "tokenizer_config.json") or {}
    config = dict(config)
    config.pop("_name_or_path", None)
    if kind == "feature-extraction":
        contract = graph_contract(manifest)
        config["edgedistill"] = contract
        clients = {"kind": kind, "layout": "onnx/ + config.json + tokenizer files (transformers.js, fastembed)",
                   "output": contract["output"], "pooling": "none: read the output as is",
                   "normalize": "none needed: already L2-normalised" if manifest.get("normalized") else "none"}
    else:
        config.update(classification_config(config, manifest, labels, problem_type))
        clients = {"kind": kind, "layout": "onnx/ + config.json + tokenizer files (transformers.js text-classification)",
                   "output": LOGITS, "labels": list(config["id2label"].values()), "problem_type": config["problem_type"],
                   "score": "sigmoid(logits)" if config["problem_type"] == "multi_label_classification"
                   else "softmax(logits)" if config["problem_type"] == "single_label_classification" else "logits"}
    tokenizer_config = dict(tokenizer_config)
    # Clients truncate with model_max_length: it must be the length the graph was checked at, not the
    # encoder's position-table size.
    tokenizer_config["model_max_length"] = int(manifest["max_seq_length"])
    tokenizer_config.setdefault("pad_token", manifest["pad_token"])
    for key in ("auto_map", "is_local", "local_files_only"):  # loader state, not tokenizer settings
        tokenizer_config.pop(key, None)
    special = {k: tokenizer_config[k] for k in SPECIAL_TOKENS if isinstance(tokenizer_config.get(k), str)}
    for name, data in zip(CLIENT_FILES, (config, tokenizer_config, special), strict=True):
        (bundle_dir / name).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return {"clients": clients}


def classification_config(config: dict, manifest: dict, labels: Sequence[str] | None,
                          problem_type: str | None) -> dict[str, Any]:
    """The config.json fields of a sequence-classification bundle (transformers and transformers.js names)."""
    if not labels or not all(isinstance(label, str) and label for label in labels):
        raise ValueError(f"write_client_layout: labels is {labels!r}; a sequence-classification bundle needs the "
                         "names of its logits in order, e.g. labels=['negative', 'positive'] (one name for a reranker)")
    if len(set(labels)) != len(labels):
        raise ValueError(f"write_client_layout: labels {list(labels)} repeat a name; give each logit its own")
    if manifest.get("output") != LOGITS:
        raise ValueError(f"write_client_layout: the manifest's output is {manifest.get('output')!r}; a "
                         f"sequence-classification graph must output {LOGITS!r} [batch, num_labels] (rename the "
                         "graph output at export)")
    problem_type = problem_type or ("single_label_classification" if len(labels) > 1 else "multi_label_classification")
    if problem_type not in PROBLEM_TYPES:
        raise ValueError(f"write_client_layout: problem_type is {problem_type!r}; expected one of {PROBLEM_TYPES}")
    return {"architectures": [sequence_classification_architecture(config)], "num_labels": len(labels),
            "id2label": {str(i): label for i, label in enumerate(labels)},
            "label2id": {label: i for i, label in enumerate(labels)}, "problem_type": problem_type,
            "edgedistill": {"inputs": list(manifest["inputs"]), "output": LOGITS, "labels": list(labels),
                            "max_seq_length": manifest["max_seq_length"], "manifest": "manifest.json",
                            **{k: manifest[k] for k in ("task", "text_inputs", "activation") if k in manifest}}}


def sequence_classification_architecture(config: dict) -> str:
    """``BertModel`` -> ``BertForSequenceClassification``; an architecture already of that kind is kept."""
    for name in config.get("architectures") or []:
        if name.endswith("ForSequenceClassification"):
            return name
    for name in config.get("architectures") or []:
        for suffix in ("Model", "ForMaskedLM", "ForPreTraining"):
            if name.endswith(suffix):
                return name[: -len(suffix)] + "ForSequenceClassification"
    model_type = str(config.get("model_type", "bert"))
    return "".join(part.capitalize() for part in model_type.replace("_", "-").split("-")) + "ForSequenceClassification"


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None
