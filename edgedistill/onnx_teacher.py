"""The teacher as an ONNX Runtime fp32 graph, for labelling on CPU.

The graph is built once per teacher content (``<cache>/onnx-teacher/<key>/``) with the export stage's own code
(one graph from token ids and mask to the normalised embedding), checked against PyTorch (the same gate as the
export stage: min cosine 0.9999) and, beside it, onnxruntime's offline transformer fusions
(``model.fused.onnx``; MPNet's relative position bias leaves its attention unfused, so what fuses is GELU and
LayerNorm-with-residual). Encoding sorts sentences by token count and pads each batch only to its longest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from edgedistill.assets import cache_dir
from edgedistill.errors import GateError

log = logging.getLogger(__name__)

FORMAT = 1  # bump to rebuild every cached graph
OPSET = 17
EXPORTER = "torchscript"  # several times faster to export a 110M model than dynamo; gated the same way
MIN_COSINE = 0.9999
PLAIN, FUSED = "model.onnx", "model.fused.onnx"
DEFAULT_GRAPH = FUSED
CHECK_SENTENCES = [
    "A man is playing a guitar.", "Two dogs run across a snowy field.", "The cat sleeps.", "Hi", "?",
    "A woman in a red dress is dancing on the stage while the band plays loudly behind her.",
    "Stocks fell sharply on Monday after the central bank raised interest rates by half a point.",
    "How do I reset my password if I no longer have access to the e-mail address on my account?",
    "Children are playing soccer in the park.", "It's raining again, isn't it?",
    "The quick brown fox jumps over the lazy dog.", "Das ist ein Satz auf Deutsch.", "naïve café résumé",
    "1, 2, 3, 4, 5, 6, 7, 8, 9, 10", "A group of people are sitting at a table eating dinner together.",
    "The researchers reported that the new vaccine was effective in 94 percent of trial participants.",
]


def available_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def graph_key(fingerprint: str) -> str:
    """The cache key of the ONNX teacher: the teacher's content and everything that shapes the graph."""
    import onnxruntime
    import torch
    import transformers

    parts = [FORMAT, fingerprint, OPSET, EXPORTER, torch.__version__, transformers.__version__,
             onnxruntime.__version__]
    return f"{fingerprint}-{hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]}"


def onnx_teacher(teacher: Path) -> Path:
    """The folder of the teacher's checked ONNX graph (built on first use; one builder at a time)."""
    from edgedistill.label_cache import file_lock
    from edgedistill.labelling import teacher_fingerprint

    folder = cache_dir() / "onnx-teacher" / graph_key(teacher_fingerprint(teacher))
    if (folder / "check.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(folder.parent / f".{folder.name}.lock"):
        if (folder / "check.json").is_file():  # built while we waited
            return folder
        tmp = folder.with_name(f".tmp-{folder.name}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        build(teacher, tmp)
        os.replace(tmp, folder)
    return folder


def build(teacher: Path, out: Path) -> dict:
    """Export the teacher, gate it against PyTorch, fuse it and gate the fused graph too (check.json)."""
    from edgedistill.optimize import fuse_transformer
    from edgedistill.stages.export import check_sentences, export_onnx, graph_opset, validate, write_manifest
    from edgedistill.trust import load_sentence_transformer

    t0 = time.perf_counter()
    log.info("onnx teacher: exporting %s (once per teacher content)", teacher)
    model = load_sentence_transformer(teacher, "cpu")
    inputs = export_onnx(model, out / PLAIN, OPSET, EXPORTER)
    model[0].tokenizer.save_pretrained(str(out))
    write_manifest(model, out, graph_opset(out / PLAIN), EXPORTER, inputs)
    sentences = check_sentences(CHECK_SENTENCES, len(CHECK_SENTENCES), model.max_seq_length)
    checks = {PLAIN: validate(model, out, sentences, PLAIN)}
    if checks[PLAIN]["min_cosine"] < MIN_COSINE:
        raise GateError(f"onnx teacher: the exported graph reproduces PyTorch only to a cosine of "
                        f"{checks[PLAIN]['min_cosine']:.6f} (< {MIN_COSINE}); label with label_backend: torch")
    config = model[0].auto_model.config
    try:
        fusions = fuse_transformer(out / PLAIN, out / FUSED, int(config.num_attention_heads), int(config.hidden_size))
        checks[FUSED] = validate(model, out, sentences, FUSED)
        if checks[FUSED]["min_cosine"] < MIN_COSINE:
            log.warning("onnx teacher: the fused graph fails the gate (min cosine %.6f); using the plain graph",
                        checks[FUSED]["min_cosine"])
            (out / FUSED).unlink()
    except Exception as e:  # noqa: BLE001 - the plain graph is enough; fusion is an optimisation
        log.warning("onnx teacher: transformer fusion failed (%s); using the plain graph", e)
        fusions = {}
        (out / FUSED).unlink(missing_ok=True)
    record = {"teacher": str(teacher), "opset": OPSET, "exporter": EXPORTER, "fusions": fusions,
              "min_cosine": {k: v["min_cosine"] for k, v in checks.items()},
              "max_abs_diff": {k: v["max_abs_diff"] for k, v in checks.items()},
              "graphs": [g for g in (PLAIN, FUSED) if (out / g).is_file()],
              "build_s": round(time.perf_counter() - t0, 1)}
    (out / "check.json").write_text(json.dumps(record, indent=2) + "\n")
    log.info("onnx teacher: built in %.0f s (min cosine to PyTorch %s; fusions %s)", record["build_s"],
             record["min_cosine"], fusions or "none")
    return record


class OnnxTeacher:
    """Batched encoding with an ONNX teacher folder: sentences sorted by token count, each batch padded only to
    its own longest sentence, the caller's order restored."""

    def __init__(self, folder: Path, threads: int = 0, graph: str = DEFAULT_GRAPH) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        manifest = json.loads((folder / "manifest.json").read_text())
        if not (folder / graph).is_file():
            graph = PLAIN
        self.inputs = list(manifest["inputs"])
        self.dimension = int(manifest["dimension"])
        self.pad_id = int(manifest["pad_token_id"])
        self.tokenizer = Tokenizer.from_file(str(folder / manifest["tokenizer"]))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=int(manifest["max_seq_length"]))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(folder / graph), sess_options=options,
                                            providers=["CPUExecutionProvider"])

    def encode(self, sentences: list[str], batch_size: int = 64) -> np.ndarray:
        # sentence-transformers strips each text before tokenising; so do we, to get the same tokens.
        encodings = self.tokenizer.encode_batch([s.strip() for s in sentences])
        lengths = np.array([len(e.ids) for e in encodings])
        order = np.argsort(lengths, kind="stable")
        out = np.zeros((len(sentences), self.dimension), dtype=np.float32)
        for start in range(0, len(sentences), batch_size):
            idx = order[start:start + batch_size]
            width = int(lengths[idx].max())
            ids = np.full((len(idx), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                ids[row, :lengths[i]] = encodings[i].ids
                mask[row, :lengths[i]] = 1
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            out[idx] = self.session.run(None, {n: feeds[n] for n in self.inputs})[0]
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def _worker(job: tuple[str, list[str], int, int, str]) -> np.ndarray:
    folder, sentences, batch_size, threads, graph = job
    return OnnxTeacher(Path(folder), threads, graph).encode(sentences, batch_size)


def encode_onnx(teacher: Path, sentences: list[str], batch_size: int, processes: int = 1,
                threads: int | None = None, graph: str = DEFAULT_GRAPH) -> np.ndarray:
    """Normalised teacher embeddings through ONNX Runtime; ``processes`` > 1 splits the sentences over that
    many worker processes with cores / processes threads each."""
    folder = onnx_teacher(teacher)
    threads = threads or max(1, available_cores() // processes)
    if processes == 1:
        return OnnxTeacher(folder, threads, graph).encode(sentences, batch_size)
    import multiprocessing

    # Interleave so each worker gets the same mix of lengths.
    shares = [sentences[r::processes] for r in range(processes)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        parts = pool.map(_worker, [(str(folder), share, batch_size, threads, graph) for share in shares])
    out = np.zeros((len(sentences), parts[0].shape[1]), dtype=np.float32)
    for r, part in enumerate(parts):
        out[r::processes] = part
    return out
