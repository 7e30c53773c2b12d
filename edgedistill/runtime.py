"""Torch-free runtime: embed texts with an exported bundle using only onnxruntime, tokenizers and numpy.

This module must never import torch or transformers: it is what an app or device runs.

    from edgedistill.runtime import load
    model = load("runs/mpnet-to-tiny/bundle")
    vectors = model.encode(["A man is playing a guitar.", "Someone plays music."])   # (2, dim), L2-normalised
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.manifest import MANIFEST, BundleError, read_manifest, verify  # noqa: F401  (the runtime API)

IN_GRAPH_MODEL = "model_with_tokenizer.onnx"
KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def normalise(x: np.ndarray) -> np.ndarray:
    """L2-normalise rows as float32."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _session(model_path: Path, threads: int, custom_ops: str | None = None, spin: bool = True):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if not spin:  # idle pool threads would otherwise spin-wait and slow another session timed alongside
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if custom_ops:
        options.register_custom_ops_library(custom_ops)
    return ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])


def model_for(manifest: dict, precision: str | None, path: Path) -> str:
    """The graph file for ``precision`` ('fp32', 'int8'; None: the bundle's final model, manifest["model"])."""
    if precision is None:
        return str(manifest.get("model", "model.onnx"))
    models = manifest.get("models") or {manifest.get("precision", "int8" if manifest.get("quantization") else "fp32"):
                                        manifest.get("model", "model.onnx")}
    if precision not in models:
        raise BundleError(f"{path}: no {precision} graph in this bundle (it has {', '.join(sorted(models))})")
    return str(models[precision])


Item = str | tuple[str, str]  # one text, or a (text, text) pair (query/passage, premise/hypothesis)


def item_length(item: Item) -> int:
    """Characters of a text or of both texts of a pair (to sort by length before batching)."""
    return len(item) if isinstance(item, str) else sum(len(part) for part in item)


class OnnxModel:
    """A bundle's graph and tokenizer (model.onnx + tokenizer.json + manifest.json) run with onnxruntime: texts
    or (text, text) pairs in, the graph's first output out, one row per item in the caller's order.

    Uses only onnxruntime, tokenizers and numpy, the same code path an app would take. Every task's predictor
    builds on it (``OnnxEncoder`` here; e.g. a reranker's ``rank`` or a classifier's ``predict``).
    """

    def __init__(self, path: Path, threads: int = 0, model_file: str | None = None, spin: bool = True,
                 precision: str | None = None) -> None:
        from tokenizers import Tokenizer

        path = Path(path)
        manifest = read_manifest(path)
        self.path = path
        self.manifest = manifest
        self.max_seq_length = int(manifest["max_seq_length"])
        self.input_names = list(manifest["inputs"])
        unknown = [n for n in self.input_names if n not in KNOWN_INPUTS]
        if unknown:
            raise BundleError(f"{path}: {MANIFEST} names inputs {unknown}; this runtime feeds {list(KNOWN_INPUTS)}")
        self.tokenizer = Tokenizer.from_file(str(path / manifest.get("tokenizer", "tokenizer.json")))
        self.tokenizer.enable_truncation(max_length=self.max_seq_length)
        self.tokenizer.enable_padding(pad_id=int(manifest["pad_token_id"]), pad_token=manifest["pad_token"])
        chosen = model_file or model_for(manifest, precision, path)
        self.model_path = path / chosen
        # A dynamically quantized graph takes its activation scales from the whole input tensor, so an item's
        # output would depend on its batch mates (and their padding): the quantize stage then records
        # run_rows_separately and such a graph is run one row at a time (attribute settable, e.g. to measure).
        self.rows_separately = bool(manifest.get("batch_invariance", {}).get("run_rows_separately")) and (
            chosen == manifest.get("model", "model.onnx"))
        self.session = _session(self.model_path, threads, spin=spin)

    def _feeds(self, items: list[Item]) -> dict[str, np.ndarray]:
        encodings = self.tokenizer.encode_batch(items)  # a tuple is encoded as a pair ([CLS] a [SEP] b [SEP])
        columns = {
            "input_ids": lambda e: e.ids,
            "attention_mask": lambda e: e.attention_mask,
            "token_type_ids": lambda e: e.type_ids,
        }
        return {name: np.array([columns[name](e) for e in encodings], dtype=np.int64) for name in self.input_names}

    def outputs(self, items: list[Item], batch_size: int = 64) -> np.ndarray:
        """The graph's first output for every item, float32, rows in the caller's order."""
        items = [item if isinstance(item, str) else tuple(item) for item in items]
        # Sort by length so each batch pads little, then restore the caller's order.
        order = np.argsort([-item_length(item) for item in items], kind="stable")
        if self.rows_separately:
            batch_size = 1
        out: np.ndarray | None = None
        for start in range(0, len(items), batch_size):
            idx = order[start : start + batch_size]
            result = self.session.run(None, self._feeds([items[i] for i in idx]))[0]
            if out is None:
                out = np.zeros((len(items), *result.shape[1:]), dtype=np.float32)
            out[idx] = result
        return out if out is not None else np.zeros((0,), dtype=np.float32)


class OnnxEncoder(OnnxModel):
    """An embedding bundle: texts in, L2-normalised vectors out."""

    def __init__(self, path: Path, threads: int = 0, model_file: str | None = None, spin: bool = True,
                 precision: str | None = None) -> None:
        super().__init__(path, threads, model_file, spin, precision)
        self.dimension = int(self.manifest["dimension"])

    def encode(self, sentences: list[str], batch_size: int = 64) -> np.ndarray:
        sentences = list(sentences)
        if not sentences:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return normalise(self.outputs(sentences, batch_size))


class InGraphEncoder:
    """The tokenizer-in-graph variant (model_with_tokenizer.onnx): strings in, embeddings out.

    Needs onnxruntime-extensions for the tokenizer op; no tokenizers library is involved.
    """

    def __init__(self, path: Path, threads: int = 0, model_file: str = IN_GRAPH_MODEL, spin: bool = True) -> None:
        path = Path(path)
        self.manifest = read_manifest(path)
        self.dimension = int(self.manifest["dimension"])
        self.model_path = path / model_file
        if not self.model_path.is_file():
            raise BundleError(f"{path}: no {model_file}; export with tokenizer_in_graph: true to get one")
        try:
            from onnxruntime_extensions import get_library_path
        except ImportError:
            raise BundleError("the tokenizer-in-graph model needs onnxruntime-extensions: "
                              "pip install onnxruntime-extensions (or edgedistill[extensions])") from None
        self.session = _session(self.model_path, threads, get_library_path(), spin)

    def encode(self, sentences: list[str], batch_size: int = 64) -> np.ndarray:
        sentences = list(sentences)
        out = np.zeros((len(sentences), self.dimension), dtype=np.float32)
        for start in range(0, len(sentences), batch_size):
            chunk = np.array(sentences[start : start + batch_size], dtype=object)
            out[start : start + len(chunk)] = self.session.run(None, {"text": chunk})[0]
        return normalise(out)


def load(path: str | Path, *, tokenizer_in_graph: bool = False, threads: int = 0,
         check: bool = True, precision: str | None = None) -> Any:
    """Open a deploy bundle; ``check`` verifies every file's sha256 first. ``precision`` ('fp32' or 'int8')
    picks one of the bundle's graphs; by default the final one (manifest["model"]).

    An embedding bundle gives an encoder (``encode``); a bundle of another task (manifest["task"]) gives that
    task's predictor from ``edgedistill.tasks.<task>.runtime`` (e.g. ``rank`` for a reranker, ``predict`` for a
    classifier), equally torch-free."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: no such bundle folder")
    if check:
        verify(path)
    task = bundle_task(path)
    if task != "embedding":
        import importlib

        try:
            module = importlib.import_module(f"edgedistill.tasks.{task}.runtime")
        except ModuleNotFoundError:
            raise BundleError(f"{path}: a {task!r} bundle, which this version of edgedistill cannot run; "
                              "upgrade edgedistill") from None
        return module.load(path, threads=threads, precision=precision)
    return InGraphEncoder(path, threads) if tokenizer_in_graph else OnnxEncoder(path, threads, precision=precision)


def bundle_task(path: str | Path) -> str:
    """The task a bundle was made for (manifest["task"]; bundles made before tasks existed are embeddings)."""
    return str(read_manifest(Path(path)).get("task", "embedding"))


# the command that serves each task's bundles, for "wrong kind of bundle" errors
TASK_COMMANDS = {"embedding": "edgedistill embed", "reranker": "edgedistill rank", "classifier": "edgedistill classify"}


class WrongTaskError(BundleError):
    """A bundle made for another task than the command or predictor serves: bad input (exit code 2)."""

    exit_code = 2


def require_task(path: str | Path, expected: str, command: str) -> None:
    """Raise WrongTaskError naming the fix when a bundle was made for another task than ``command`` serves."""
    task = bundle_task(path)
    if task != expected:
        fix = TASK_COMMANDS.get(task)
        raise WrongTaskError(f"{command}: {path} is a {task} bundle, not a{'n' if expected[0] in 'aeiou' else ''} "
                          f"{expected} bundle; " + (f"use `{fix} {path} ...`" if fix else "upgrade edgedistill"))
