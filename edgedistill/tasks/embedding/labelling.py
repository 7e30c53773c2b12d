"""Teacher labels: embeddings (and mean-pooled hidden states of chosen layers), computed once per sentence
and cached (edgedistill.tasks.embedding.label_cache) under the teacher's content fingerprint.

Two backends: ``torch`` (sentence-transformers; CUDA, hidden states) and ``onnx`` (the teacher exported once
to an ONNX Runtime fp32 graph, edgedistill.tasks.embedding.onnx_teacher; faster on CPU, see benchmarks/labelling.py).
PyTorch labelling can be spread over several processes (``torchrun -m edgedistill.tasks.embedding.labelling JOB.json``):
each rank encodes every world-th sentence and the parent merges the shards in order.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edgedistill.assets import cache_dir, source_fingerprint
from edgedistill.progress import Progress

log = logging.getLogger(__name__)


def encode(teacher: Path, sentences: list[str], batch_size: int, device: str,
           hidden_layers: list[int], bf16: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Normalised teacher embeddings, plus mean-pooled hidden states [N, len(layers), H] when asked (``bf16``:
    under bf16 autocast where the device computes bf16 natively, edgedistill.precision)."""
    from edgedistill.precision import autocast

    with autocast(device, bf16):
        return _encode(teacher, sentences, batch_size, device, hidden_layers)


def _encode(teacher: Path, sentences: list[str], batch_size: int, device: str,
            hidden_layers: list[int]) -> tuple[np.ndarray, np.ndarray | None]:
    import torch

    from edgedistill.trust import load_sentence_transformer

    model = load_sentence_transformer(teacher, device)
    order = np.argsort([-len(s) for s in sentences], kind="stable")
    progress = Progress("teacher labels", len(sentences), "sentences")
    if not hidden_layers:  # longest first, in chunks of whole batches: the batches of one encode call
        step = batch_size * 8
        emb = np.zeros((len(sentences), model.get_embedding_dimension()), dtype=np.float32)
        for start in range(0, len(sentences), step):
            idx = order[start:start + step]
            emb[idx] = model.encode([sentences[i] for i in idx], batch_size=batch_size, convert_to_numpy=True,
                                    normalize_embeddings=True, show_progress_bar=False)
            progress.update(len(idx))
        progress.close()
        return emb, None
    from edgedistill.tasks.embedding.training import mean_pool, to_device

    emb = np.zeros((len(sentences), model.get_embedding_dimension()), dtype=np.float32)
    hidden = np.zeros((len(sentences), len(hidden_layers), model[0].auto_model.config.hidden_size), np.float16)
    model.eval()
    with torch.no_grad():
        for start in range(0, len(sentences), batch_size):
            idx = order[start:start + batch_size]
            progress.update(len(idx))
            features = to_device(model.preprocess([sentences[i] for i in idx]), device)
            out = model[0].auto_model(input_ids=features["input_ids"], attention_mask=features["attention_mask"],
                                      output_hidden_states=True)
            features["token_embeddings"] = out.last_hidden_state
            for module in list(model)[1:]:
                features = module(features)
            vec = torch.nn.functional.normalize(features["sentence_embedding"], dim=-1)
            emb[idx] = vec.float().cpu().numpy()
            pooled = [mean_pool(out.hidden_states[layer + 1], features["attention_mask"]) for layer in hidden_layers]
            hidden[idx] = torch.stack(pooled, dim=1).float().cpu().numpy().astype(np.float16)
    progress.close()
    return emb, hidden


BACKENDS = ("auto", "torch", "onnx")


def teacher_fingerprint(path: Path) -> str:
    """The teacher's content fingerprint (``assets.source_fingerprint``: the same files give the same key wherever
    they live; an unchanged folder costs one stat per file). The label cache is keyed by it."""
    return source_fingerprint(path).split(":", 1)[1]


def label_backend(backend: str, device: str, hidden_layers: list[int] | tuple[int, ...], bf16: bool = False) -> str:
    """The backend that labels: ``auto`` is PyTorch on CUDA, when hidden states are needed, or under ``bf16`` on a
    CPU with native bf16 (2.2x the fp32 rate on this project's machine, benchmarks/labelling.py); otherwise ONNX
    Runtime fp32 on CPU (1.5-1.7x)."""
    from edgedistill.precision import native_bf16

    if backend not in BACKENDS:
        raise ValueError(f"label backend {backend!r}: expected one of {BACKENDS}")
    if backend == "auto":
        return "onnx" if device == "cpu" and not hidden_layers and not (bf16 and native_bf16(device)) else "torch"
    if backend == "onnx" and hidden_layers:
        raise ValueError("label_backend onnx gives sentence embeddings only; a hidden loss needs torch (or auto)")
    return backend


def teacher_labels(teacher: Path, sentences: list[str], batch_size: int, device: str,
                   hidden_layers: list[int] | tuple[int, ...] = (),
                   processes: int = 1, backend: str = "torch",
                   bf16: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Teacher embeddings (and hidden states) of ``sentences``, from the per-sentence label cache.

    Only sentences the cache lacks are encoded, so labelling 100k sentences after 20k of them costs the new
    80k. The cache is keyed by the teacher's content fingerprint and the backend (ONNX and PyTorch labels agree
    to a cosine of 0.9999 but are not bit-identical, so each keeps its own store).
    """
    from edgedistill.tasks.embedding.label_cache import LabelStore

    hidden_layers = sorted(hidden_layers)
    from edgedistill.precision import native_bf16

    backend = label_backend(backend, device, hidden_layers, bf16)
    bf16 = bf16 and backend == "torch" and native_bf16(device)
    store = backend + ("-bf16" if bf16 else "")  # bf16 labels differ slightly (cosine >= 0.9999): their own store
    root = cache_dir() / "labels" / teacher_fingerprint(teacher)
    emb_store = LabelStore(root / f"emb-{store}")
    hidden_stores = {layer: LabelStore(root / f"hidden-L{layer}-{store}", dtype="float16") for layer in hidden_layers}
    found, missing = emb_store.get(sentences)
    hidden_found: dict[int, dict[bytes, np.ndarray]] = {}
    for layer, store in hidden_stores.items():
        hidden_found[layer], lacking = store.get(sentences)
        missing = list(dict.fromkeys([*missing, *lacking]))
    log.info("teacher labels: %d of %d sentences cached; encoding %d with %s on %s (%d process(es))",
             len(dict.fromkeys(sentences)) - len(missing), len(dict.fromkeys(sentences)), len(missing), backend,
             device, processes)
    if missing:
        t0 = time.perf_counter()
        new_emb, new_hidden = encode_with(backend, teacher, missing, batch_size, device, hidden_layers, processes,
                                          bf16)
        log.info("teacher labels: %.1f sentences/s (%s)", len(missing) / (time.perf_counter() - t0), backend)
        emb_store.put(missing, new_emb)
        found.update(zip(_keys(missing), new_emb, strict=True))
        for j, (layer, store) in enumerate(hidden_stores.items()):
            assert new_hidden is not None
            store.put(missing, new_hidden[:, j])
            hidden_found[layer].update(zip(_keys(missing), new_hidden[:, j], strict=True))
    keys = _keys(sentences)
    emb = np.stack([found[k] for k in keys]).astype(np.float32, copy=False)
    hidden = None
    if hidden_layers:
        hidden = np.stack([np.stack([hidden_found[layer][k] for layer in hidden_layers]) for k in keys])
        hidden = hidden.astype(np.float16, copy=False)
    return emb, hidden


def _keys(sentences: list[str]) -> list[bytes]:
    from edgedistill.tasks.embedding.label_cache import sentence_key

    return [sentence_key(s) for s in sentences]


def encode_with(backend: str, teacher: Path, sentences: list[str], batch_size: int, device: str,
                hidden_layers: list[int], processes: int, bf16: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Encode with a resolved backend (``torch`` or ``onnx``), in one process or several (``bf16``: autocast,
    single process)."""
    if backend == "onnx":
        from edgedistill.tasks.embedding.onnx_teacher import encode_onnx

        return encode_onnx(teacher, sentences, batch_size, processes), None
    if processes == 1:
        return encode(teacher, sentences, batch_size, device, hidden_layers, bf16)
    return _encode_parallel(teacher, sentences, batch_size, device, hidden_layers, processes)


def _encode_parallel(teacher: Path, sentences: list[str], batch_size: int, device: str,
                     hidden_layers: list[int], processes: int) -> tuple[np.ndarray, np.ndarray | None]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgedistill-label-") as tmp:
        job = Path(tmp) / "job.json"
        (Path(tmp) / "sentences.txt").write_text("\n".join(sentences), encoding="utf-8")
        job.write_text(json.dumps({"teacher": str(teacher), "dir": tmp, "batch_size": batch_size,
                                   "device": device, "hidden_layers": hidden_layers}))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "edgedistill.tasks.embedding.labelling", str(job)]
        subprocess.run(cmd, check=True)
        parts = [np.load(Path(tmp) / f"emb.{r}.npy") for r in range(processes)]
        emb = np.zeros((len(sentences), parts[0].shape[1]), np.float32)
        hidden = None
        if hidden_layers:
            hparts = [np.load(Path(tmp) / f"hidden.{r}.npy") for r in range(processes)]
            hidden = np.zeros((len(sentences), *hparts[0].shape[1:]), np.float16)
        for r in range(processes):
            emb[r::processes] = parts[r]
            if hidden is not None:
                hidden[r::processes] = hparts[r]
        return emb, hidden


def main() -> None:
    """One labelling worker under torchrun: encodes sentences rank::world."""
    import torch

    job = json.loads(Path(sys.argv[1]).read_text())
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    device = job["device"]
    if device.startswith("cuda") and torch.cuda.device_count() > 1:
        device = f"cuda:{rank % torch.cuda.device_count()}"
    sentences = (Path(job["dir"]) / "sentences.txt").read_text(encoding="utf-8").split("\n")[rank::world]
    emb, hidden = encode(Path(job["teacher"]), sentences, job["batch_size"], device, job["hidden_layers"])
    np.save(Path(job["dir"]) / f"emb.{rank}.npy", emb)
    if hidden is not None:
        np.save(Path(job["dir"]) / f"hidden.{rank}.npy", hidden)


if __name__ == "__main__":
    main()
