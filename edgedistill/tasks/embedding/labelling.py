"""Teacher labels: embeddings (and mean-pooled hidden states of chosen layers), computed once and cached.

Labelling can be spread over several processes (``torchrun -m edgedistill.tasks.embedding.labelling JOB.json``): each rank
encodes every world-th sentence and the parent merges the shards in order.
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
from edgedistill.data import fingerprint
from edgedistill.locks import key_lock
from edgedistill.progress import Progress

log = logging.getLogger(__name__)


def encode(teacher: Path, sentences: list[str], batch_size: int, device: str,
           hidden_layers: list[int]) -> tuple[np.ndarray, np.ndarray | None]:
    """Normalised teacher embeddings, plus mean-pooled hidden states [N, len(layers), H] when asked."""
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


def teacher_labels(teacher: Path, sentences: list[str], batch_size: int, device: str,
                   hidden_layers: list[int] | tuple[int, ...] = (),
                   processes: int = 1) -> tuple[np.ndarray, np.ndarray | None]:
    """Cached teacher embeddings (and hidden states) of ``sentences`` under a content key."""
    from edgedistill.contract import content_key

    hidden_layers = sorted(hidden_layers)
    key = content_key("labels", source_fingerprint(teacher), fingerprint(sentences),
                      *([hidden_layers] if hidden_layers else []))
    folder = cache_dir() / "labels"
    with key_lock(folder, key, "teacher labels"):
        return _teacher_labels(teacher, sentences, batch_size, device, hidden_layers, processes, folder, key)


def _teacher_labels(teacher: Path, sentences: list[str], batch_size: int, device: str, hidden_layers: list[int],
                    processes: int, folder: Path, key: str) -> tuple[np.ndarray, np.ndarray | None]:
    path, hidden_path = folder / f"{key}.npy", folder / f"{key}.hidden.npy"
    if path.is_file() and (not hidden_layers or hidden_path.is_file()):
        try:  # a truncated or garbled cache file is computed again
            cached = np.load(path), np.load(hidden_path) if hidden_layers else None
            if len(cached[0]) == len(sentences):
                log.info("teacher labels: cached (%s)", path)
                return cached
        except (OSError, ValueError, EOFError) as e:
            log.warning("teacher labels: the cached %s is damaged (%s); encoding again", path, e)
    log.info("teacher labels: encoding %d sentences on %s with %d process(es) (cached afterwards)",
             len(sentences), device, processes)
    t0 = time.perf_counter()
    if processes == 1:
        emb, hidden = encode(teacher, sentences, batch_size, device, hidden_layers)
    else:
        emb, hidden = _encode_parallel(teacher, sentences, batch_size, device, hidden_layers, processes)
    log.info("teacher labels: %.0f sentences/s", len(sentences) / (time.perf_counter() - t0))
    folder.mkdir(parents=True, exist_ok=True)
    if hidden is not None:
        _save_atomic(hidden_path, hidden)
    _save_atomic(path, emb)
    return emb, hidden


def _save_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


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
