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

Both graphs end in the pooled, projected and L2-normalised ``sentence_embedding`` [batch, dimension]: a client
must read that output as is (no pooling, no normalisation of its own). A client that pools per-token outputs
itself (transformers.js ``pipeline('feature-extraction')``) cannot use this graph; see docs/clients.md.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from edgedistill.manifest import read_manifest

log = logging.getLogger(__name__)

ONNX_DIR = "onnx"
FP32_FILE = f"{ONNX_DIR}/model.onnx"
INT8_FILE = f"{ONNX_DIR}/model_quantized.onnx"
CLIENT_FILES = ("config.json", "tokenizer_config.json", "special_tokens_map.json")
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


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
                "run_rows_separately": bool(manifest.get("batch_invariance", {}).get("run_rows_separately"))}
    if "pooling" in manifest:  # embedding graphs; a sequence classifier's graph ends in logits (its task's fields)
        contract.update(pooling=f"{manifest['pooling']} (inside the graph)", normalized=bool(manifest["normalized"]))
    for key in ("task", "text_inputs", "activation", "labels"):
        if key in manifest:
            contract[key] = manifest[key]
    return contract


def write_layout(bundle: Path, manifest: dict, sources: list[Path]) -> dict[str, Any]:
    """Copy the graphs into ``bundle/onnx/`` and write the client files; returns the manifest's new fields.

    ``manifest`` is the final artifact's; its ``model`` becomes the final graph's path in the layout.
    """
    graphs = model_files(sources)
    (bundle / ONNX_DIR).mkdir(exist_ok=True)
    models: dict[str, str] = {}
    for precision, target in (("fp32", FP32_FILE), ("int8", INT8_FILE)):
        if precision in graphs:
            shutil.copy2(graphs[precision], bundle / target)
            models[precision] = target
    final = "int8" if manifest.get("quantization") else "fp32"
    contract = graph_contract(manifest)

    config = _first_json(sources, "config.json") or {"model_type": manifest["family"]}
    config.pop("_name_or_path", None)
    config["edgedistill"] = contract
    tokenizer_config = _first_json(sources, "tokenizer_config.json") or {}
    # Clients truncate with model_max_length: it must be the length the graph was checked at, not the
    # encoder's position-table size.
    tokenizer_config["model_max_length"] = int(manifest["max_seq_length"])
    tokenizer_config.setdefault("pad_token", manifest["pad_token"])
    for key in ("auto_map", "is_local", "local_files_only"):  # loader state, not tokenizer settings
        tokenizer_config.pop(key, None)
    special = {k: tokenizer_config[k] for k in SPECIAL_TOKENS if isinstance(tokenizer_config.get(k), str)}
    for name, data in zip(CLIENT_FILES, (config, tokenizer_config, special), strict=True):
        (bundle / name).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return {"model": models[final], "models": models, "precision": final,
            "clients": {"layout": "onnx/ + config.json + tokenizer files (transformers.js, fastembed)",
                        "output": contract["output"], "pooling": "none: read the output as is",
                        "normalize": "none needed: already L2-normalised" if manifest.get("normalized") else "none"}}
