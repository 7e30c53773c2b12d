"""Teacher logits, computed once and cached on disk.

One ``.npy`` per (teacher content, inputs, max_seq_length) under ``assets.cache_dir()/labels/seqcls``: the key is
``assets.source_fingerprint(teacher)`` (a folder retrained in place gets a new key) and the sha256 of the inputs
in order. The first process computes under a per-key lock (``locks.key_lock``) and writes atomically; others wait
and read it. A damaged file is logged and computed again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from edgedistill.assets import cache_dir, source_fingerprint
from edgedistill.contract import content_key
from edgedistill.locks import key_lock
from edgedistill.tasks.seqcls import Texts

log = logging.getLogger(__name__)

FOLDER = ("labels", "seqcls")
BLOCK = 256  # inputs per progress update


def inputs_hash(texts: Texts) -> str:
    """The sha256 of the inputs, in order (pairs and single texts never collide)."""
    digest = hashlib.sha256()
    for t in texts:
        digest.update(json.dumps(t if isinstance(t, str) else list(t), ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def cache_key(teacher: Path | str, texts: Texts, max_seq_length: int, bf16: bool = False) -> str:
    """bf16 logits differ slightly from fp32 ones: their own key (fp32 keys are as before bf16 existed)."""
    return content_key("seqcls-logits", source_fingerprint(teacher), inputs_hash(texts), int(max_seq_length),
                       *(["bf16"] if bf16 else []))


def teacher_logits(teacher: Path, texts: Texts, *, batch_size: int = 32, device: str = "cpu",
                   max_seq_length: int | None = None, field: str = "teacher",
                   num_labels: int | None = None, bf16: bool = False) -> np.ndarray:
    """Logits [n, num_labels] of the sequence-classification ``teacher`` for ``texts``, cached (``bf16``: under
    bf16 autocast where ``device`` computes it natively, edgedistill.precision)."""
    from edgedistill.precision import autocast, native_bf16
    from edgedistill.tasks.seqcls.models import load_classifier, max_seq_length_of, require_seqcls

    require_seqcls(Path(teacher), field, num_labels)
    texts = list(texts)
    length = max_seq_length or max_seq_length_of(Path(teacher))
    bf16 = bf16 and native_bf16(device)
    key = cache_key(teacher, texts, length, bf16)
    folder = cache_dir().joinpath(*FOLDER)
    file = folder / f"{key}.npy"
    with key_lock(folder, key, "teacher logits"):
        if file.is_file():
            try:
                logits = np.load(file)
                if logits.ndim == 2 and len(logits) == len(texts):
                    log.info("teacher logits: cached (%d inputs, %s)", len(texts), file.name)
                    return logits
                raise ValueError(f"shape {logits.shape} for {len(texts)} inputs")
            except (OSError, ValueError) as e:
                log.warning("teacher logits: the cached %s is damaged (%s); computing again", file, e)
        with autocast(device, bf16):
            logits = compute_logits(load_classifier(Path(teacher), device=device, max_seq_length=length), texts,
                                    batch_size)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, logits)
        os.replace(tmp, file)
        return logits


def compute_logits(model, texts: Texts, batch_size: int = 32, what: str = "teacher logits") -> np.ndarray:
    """Logits of a SequenceClassifier for many inputs, with progress lines."""
    from edgedistill.progress import Progress

    texts = list(texts)
    progress = Progress(what, len(texts), "inputs")
    parts = []
    for start in range(0, len(texts), BLOCK):
        parts.append(model.logits(texts[start:start + BLOCK], batch_size=batch_size))
        progress.update(len(parts[-1]))
    progress.close()
    return np.concatenate(parts) if parts else np.zeros((0, model.num_labels), dtype=np.float32)
