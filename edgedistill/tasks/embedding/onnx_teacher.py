"""The teacher as an ONNX Runtime fp32 graph, for labelling on CPU.

The graph is built once per teacher content (``<cache>/onnx-teacher/<key>/``) with the export stage's own code
(one graph from token ids and mask to the normalised embedding), checked against PyTorch (the same gate as the
export stage: min cosine 0.9999) and, beside it, onnxruntime's offline transformer fusions
(``model.fused.onnx``; MPNet's relative position bias leaves its attention unfused there, so what fuses is GELU
and LayerNorm-with-residual). For MPNet teachers a third graph, ``model.attention.onnx``, is exported with each
self-attention as one onnxruntime ``com.microsoft.Attention`` node (packed QKV, raw mask, the relative position
bias as its ``attention_bias`` input), then given the same fusions. Every graph passes the gate or is dropped.
Encoding sorts sentences by token count and pads each batch only to its longest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.assets import cache_dir
from edgedistill.errors import GateError

log = logging.getLogger(__name__)

FORMAT = 3  # bump to rebuild every cached graph
OPSET = 17
EXPORTER = "torchscript"  # several times faster to export a 110M model than dynamo; gated the same way
MIN_COSINE = 0.9999
PLAIN, FUSED, ATTENTION = "model.onnx", "model.fused.onnx", "model.attention.onnx"
PREFERENCE = (ATTENTION, FUSED, PLAIN)  # used in this order: equal on idle cores, fused+Attention fastest on busy ones (benchmarks/labelling.py)
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
    from edgedistill.assets import source_fingerprint
    from edgedistill.tasks.embedding.label_cache import file_lock

    folder = cache_dir() / "onnx-teacher" / graph_key(source_fingerprint(teacher))
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
    """Export the teacher, gate it against PyTorch, add the fused graphs that pass the same gate (check.json)."""
    from edgedistill.optimize import fuse_transformer
    from edgedistill.tasks.embedding.export import build_manifest, check_sentences, export_onnx, graph_opset
    from edgedistill.trust import load_sentence_transformer

    t0 = time.perf_counter()
    log.info("onnx teacher: exporting %s (once per teacher content)", teacher)
    model = load_sentence_transformer(teacher, "cpu")
    inputs = export_onnx(model, out / PLAIN, OPSET, EXPORTER)
    model[0].tokenizer.save_pretrained(str(out))
    build_manifest(model, out, graph_opset(out / PLAIN), EXPORTER, inputs)
    sentences = check_sentences(CHECK_SENTENCES, len(CHECK_SENTENCES), model.max_seq_length)
    reference = model.encode(sentences, batch_size=16, convert_to_numpy=True, normalize_embeddings=True)

    def validate(graph: str) -> dict[str, float]:
        """Cosine and largest difference to PyTorch, at batch sizes 1 and 8 (the labelling code path)."""
        encoder = OnnxTeacher(out, 0, graph)
        got = [encoder.encode(sentences, batch_size) for batch_size in (1, 8)]
        return {"min_cosine": float(min((g * reference).sum(axis=1).min() for g in got)),
                "max_abs_diff": float(max(np.abs(g - reference).max() for g in got))}

    checks = {PLAIN: validate(PLAIN)}
    if checks[PLAIN]["min_cosine"] < MIN_COSINE:
        raise GateError(f"onnx teacher: the exported graph reproduces PyTorch only to a cosine of "
                        f"{checks[PLAIN]['min_cosine']:.6f} (< {MIN_COSINE}); label with label_backend: torch")
    config = model[0].auto_model.config
    heads, hidden = int(config.num_attention_heads), int(config.hidden_size)
    fusions: dict[str, dict[str, int]] = {}

    def optional(graph: str, make: Any) -> None:
        """Build one optional graph; keep it only when it builds and passes the gate."""
        try:
            fusions[graph] = make()
            checks[graph] = validate(graph)
        except Exception as e:  # noqa: BLE001 - the plain graph is enough; fusion is an optimisation
            log.warning("onnx teacher: %s could not be built (%s); skipped", graph, e)
            (out / graph).unlink(missing_ok=True)
            fusions.pop(graph, None)
            return
        if checks[graph]["min_cosine"] < MIN_COSINE:
            log.warning("onnx teacher: %s fails the gate (min cosine %.6f); skipped", graph,
                        checks[graph]["min_cosine"])
            (out / graph).unlink()

    optional(FUSED, lambda: fuse_transformer(out / PLAIN, out / FUSED, heads, hidden))
    if config.model_type == "mpnet":
        def attention() -> dict[str, int]:
            export_mpnet_attention(model, out / ATTENTION)
            tmp = out / f".{ATTENTION}"
            stats = fuse_transformer(out / ATTENTION, tmp, heads, hidden)
            os.replace(tmp, out / ATTENTION)
            return stats

        optional(ATTENTION, attention)
    graphs = [g for g in PREFERENCE if (out / g).is_file()]
    record = {"teacher": str(teacher), "opset": OPSET, "exporter": EXPORTER, "graphs": graphs, "graph": graphs[0],
              "fusions": fusions, "min_cosine": {k: v["min_cosine"] for k, v in checks.items()},
              "max_abs_diff": {k: v["max_abs_diff"] for k, v in checks.items()},
              "build_s": round(time.perf_counter() - t0, 1)}
    (out / "check.json").write_text(json.dumps(record, indent=2) + "\n")
    log.info("onnx teacher: built in %.0f s; using %s (min cosine to PyTorch %s; fusions %s)", record["build_s"],
             graphs[0], record["min_cosine"], fusions)
    return record


def export_mpnet_attention(model: Any, path: Path) -> None:
    """Export an MPNet sentence-transformers model with each self-attention as one ``com.microsoft.Attention``.

    onnxruntime's fuser does not recognise MPNet attention (the relative position bias is a second Add before
    the Softmax), so the attention module is swapped, for the export only, for a function whose ONNX form is
    that node: packed QKV weights, the raw 2-D mask and the position bias as ``attention_bias``.
    """
    import torch
    from transformers.models.mpnet import modeling_mpnet

    from edgedistill.tasks.embedding.export import OUTPUT_NAME, build_graph_module, graph_inputs

    raw_mask: list[torch.Tensor] = []

    class FusedAttention(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, mask: torch.Tensor,
                    attention_bias: torch.Tensor, num_heads: int) -> torch.Tensor:
            b, s, h = hidden.shape
            d = h // num_heads
            q, k, v = ((hidden @ weight + bias).split(h, dim=-1))
            q, k, v = (t.view(b, s, num_heads, d).transpose(1, 2) for t in (q, k, v))
            scores = q @ k.transpose(-1, -2) / math.sqrt(d) + attention_bias
            scores = scores + (1.0 - mask[:, None, None, :].to(scores.dtype)) * -10000.0
            return (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, s, h)

        @staticmethod
        def symbolic(g: Any, hidden: Any, weight: Any, bias: Any, mask: Any, attention_bias: Any,
                     num_heads: int) -> Any:
            mask32 = g.op("Cast", mask, to_i=6)  # int32: a raw [batch, sequence] mask
            return g.op("com.microsoft::Attention", hidden, weight, bias, mask32, attention_bias,
                        num_heads_i=num_heads)

    def forward(self: Any, hidden_states: torch.Tensor, attention_mask: Any = None, position_bias: Any = None,
                output_attentions: bool = False, **kwargs: Any) -> tuple[torch.Tensor]:
        weight = torch.cat([self.q.weight, self.k.weight, self.v.weight], 0).t()
        bias = torch.cat([self.q.bias, self.k.bias, self.v.bias])
        c = FusedAttention.apply(hidden_states, weight, bias, raw_mask[0], position_bias, self.num_attention_heads)
        return (self.o(c),)

    inner = build_graph_module(model)

    class Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            raw_mask[:] = [attention_mask]
            return self.inner(input_ids, attention_mask)

    names = graph_inputs(model)
    example = model[0].tokenizer(["a short one", "a somewhat longer example sentence here"], padding=True,
                                 return_tensors="pt")
    original = modeling_mpnet.MPNetSelfAttention.forward
    modeling_mpnet.MPNetSelfAttention.forward = forward
    try:
        with torch.no_grad():
            torch.onnx.export(Graph().eval(), tuple(example[n] for n in names), str(path), input_names=names,
                              output_names=[OUTPUT_NAME], opset_version=OPSET, dynamo=False,
                              dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names} | {OUTPUT_NAME: {0: "batch"}})
    finally:
        modeling_mpnet.MPNetSelfAttention.forward = original
    import onnx

    graph = onnx.load(str(path))
    for node in graph.graph.node:
        if node.op_type == "Attention":  # insert the empty `past` input before attention_bias (input 5)
            given = list(node.input)
            del node.input[:]
            node.input.extend([*given[:4], "", *given[4:]])
    if not any(o.domain == "com.microsoft" for o in graph.opset_import):
        graph.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    onnx.save(graph, str(path))


class OnnxTeacher:
    """Batched encoding with an ONNX teacher folder: sentences sorted by token count, each batch padded only to
    its own longest sentence, the caller's order restored."""

    def __init__(self, folder: Path, threads: int = 0, graph: str | None = None) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        manifest = json.loads((folder / "manifest.json").read_text())
        graph = graph or json.loads((folder / "check.json").read_text())["graph"]
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


_WORKER: OnnxTeacher | None = None
BLOCK = 512  # sentences per unit of work: progress is reported per block


def _start_worker(folder: str, threads: int, graph: str | None) -> None:
    global _WORKER
    _WORKER = OnnxTeacher(Path(folder), threads, graph)


def _encode_block(job: tuple[list[str], int]) -> np.ndarray:
    sentences, batch_size = job
    assert _WORKER is not None
    return _WORKER.encode(sentences, batch_size)


def encode_onnx(teacher: Path, sentences: list[str], batch_size: int, processes: int = 1,
                threads: int | None = None, graph: str | None = None) -> np.ndarray:
    """Normalised teacher embeddings through ONNX Runtime, in blocks of ``BLOCK`` sentences (a progress line
    per block); ``processes`` > 1 shares the blocks among that many worker processes (one session each, cores /
    processes threads each)."""
    from edgedistill.progress import Progress

    folder = onnx_teacher(teacher)
    blocks = [sentences[i:i + BLOCK] for i in range(0, len(sentences), BLOCK)]
    processes = max(1, min(processes, len(blocks)))
    threads = threads or max(1, available_cores() // processes)
    progress = Progress("teacher labels", len(sentences), "sentences")
    parts: list[np.ndarray] = []
    if processes == 1:
        model = OnnxTeacher(folder, threads, graph)
        for block in blocks:
            parts.append(model.encode(block, batch_size))
            progress.update(len(block))
    else:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(processes, _start_worker,
                                                       (str(folder), threads, graph)) as pool:
            for block, part in zip(blocks, pool.imap(_encode_block, [(b, batch_size) for b in blocks]),
                                   strict=True):
                parts.append(part)
                progress.update(len(block))
    progress.close()
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)
