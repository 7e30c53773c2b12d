"""Torch-free runtime: embed texts with an exported bundle using only onnxruntime, tokenizers and numpy.

This module must never import torch or transformers: it is what an app or device runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def normalise(x: np.ndarray) -> np.ndarray:
    """L2-normalise rows as float32."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class OnnxEncoder:
    """An exported bundle (model.onnx + tokenizer.json + manifest.json), run with onnxruntime.

    Uses only onnxruntime, tokenizers and numpy, the same code path an app would take.
    """

    def __init__(self, path: Path, threads: int = 0, model_file: str = "model.onnx") -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        path = Path(path)
        manifest = json.loads((path / "manifest.json").read_text())
        self.max_seq_length = int(manifest["max_seq_length"])
        self.input_names = list(manifest["inputs"])
        self.dimension = int(manifest["dimension"])
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=self.max_seq_length)
        self.tokenizer.enable_padding(pad_id=int(manifest["pad_token_id"]), pad_token=manifest["pad_token"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.model_path = path / model_file
        self.session = ort.InferenceSession(
            str(self.model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )

    def _feeds(self, sentences: list[str]) -> dict[str, np.ndarray]:
        encodings = self.tokenizer.encode_batch(sentences)
        feeds = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        }
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.array([e.type_ids for e in encodings], dtype=np.int64)
        return feeds

    def encode(self, sentences: list[str], batch_size: int = 64) -> np.ndarray:
        sentences = list(sentences)
        # Sort by length so each batch pads little, then restore the caller's order.
        order = np.argsort([-len(s) for s in sentences], kind="stable")
        out = np.zeros((len(sentences), self.dimension), dtype=np.float32)
        for start in range(0, len(sentences), batch_size):
            idx = order[start : start + batch_size]
            out[idx] = self.session.run(None, self._feeds([sentences[i] for i in idx]))[0]
        return normalise(out)
