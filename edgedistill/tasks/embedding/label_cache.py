"""A per-sentence store of teacher labels that grows incrementally.

Labels are keyed by the sha256 of each sentence's text (first 16 bytes) inside a store named by the teacher's
content fingerprint and the label variant (``emb-onnx``, ``emb-torch``, ``hidden-L3-torch``, ...). A store is
256 shards, picked by the key's first byte; a shard is one ``.npz`` file holding its keys and rows, written to
a temporary file and renamed (readers never see half a shard) while a per-shard ``fcntl`` lock is held (two
processes adding labels to the same shard both keep theirs). ``index.json`` records the variant, row shape
and dtype. Labelling 100k sentences after 20k of them were cached encodes only the 80k new ones.

A shard that cannot be read (truncated, garbled) is logged as damaged and treated as empty: its sentences are
labelled again and the shard is rewritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgedistill.integrity import write_json_atomic

log = logging.getLogger(__name__)

KEY_BYTES = 16
SHARDS = 256
FORMAT = "edgedistill-labels/1"


def sentence_key(sentence: str) -> bytes:
    """The 128-bit key of a sentence: its sha256 (utf-8), truncated."""
    return hashlib.sha256(sentence.encode("utf-8")).digest()[:KEY_BYTES]


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive fcntl lock on ``path`` for the block (created if absent)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process locking (renames still keep each shard whole)
        yield
        return
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class LabelStore:
    """Rows of one shape and dtype per sentence, in ``root`` (one folder per teacher and variant)."""

    def __init__(self, root: Path, shape: tuple[int, ...] | None = None, dtype: str = "float32") -> None:
        self.root = Path(root)
        self.shape = shape
        self.dtype = np.dtype(dtype)

    def _shard(self, first_byte: int) -> Path:
        return self.root / f"{first_byte:02x}.npz"

    def _read(self, path: Path) -> tuple[np.ndarray, np.ndarray] | None:
        if not path.is_file():
            return None
        try:
            with np.load(path) as data:
                keys, rows = data["keys"], data["rows"]
            if keys.ndim != 2 or keys.shape[1] != KEY_BYTES or len(keys) != len(rows):
                raise ValueError(f"keys {keys.shape} and rows {rows.shape} do not match")
            if self.shape is not None and tuple(rows.shape[1:]) != tuple(self.shape):
                raise ValueError(f"rows of shape {rows.shape[1:]}, expected {self.shape}")
            return keys, rows
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            log.warning("label cache: the shard %s is damaged (%s); its sentences are labelled again", path, e)
            return None

    def get(self, sentences: list[str]) -> tuple[dict[bytes, np.ndarray], list[str]]:
        """Cached rows by key, and the (unique) sentences that have none."""
        keys = [sentence_key(s) for s in sentences]
        by_shard: dict[int, set[bytes]] = {}
        for k in keys:
            by_shard.setdefault(k[0], set()).add(k)
        found: dict[bytes, np.ndarray] = {}
        for first, wanted in by_shard.items():
            shard = self._read(self._shard(first))
            if shard is None:
                continue
            for i, k in enumerate(shard[0]):
                kb = k.tobytes()
                if kb in wanted:
                    found[kb] = shard[1][i]
        missing = list(dict.fromkeys(s for s, k in zip(sentences, keys, strict=True) if k not in found))
        return found, missing

    def put(self, sentences: list[str], rows: np.ndarray) -> None:
        """Add rows for sentences (merged into their shards under each shard's lock)."""
        if not sentences:
            return
        first: dict[str, int] = {}
        for i, s in enumerate(sentences):
            first.setdefault(s, i)
        first_seen = list(first.values())
        sentences = [sentences[i] for i in first_seen]
        rows = np.asarray(rows)[first_seen].astype(self.dtype, copy=False)
        self.root.mkdir(parents=True, exist_ok=True)
        if self.shape is None:
            self.shape = tuple(rows.shape[1:])
        write_json_atomic(self.root / "index.json", {"format": FORMAT, "shape": list(self.shape),
                                                     "dtype": self.dtype.name, "shards": SHARDS,
                                                     "key": f"sha256(sentence utf-8)[:{KEY_BYTES}]"})
        keys = np.frombuffer(b"".join(sentence_key(s) for s in sentences), np.uint8).reshape(-1, KEY_BYTES)
        for first in np.unique(keys[:, 0]):
            sel = keys[:, 0] == first
            path = self._shard(int(first))
            with file_lock(self.root / f".{int(first):02x}.lock"):
                old = self._read(path)
                new_keys, new_rows = keys[sel], rows[sel]
                if old is not None:
                    have = {k.tobytes() for k in old[0]}
                    fresh = np.array([k.tobytes() not in have for k in new_keys], dtype=bool)
                    new_keys = np.concatenate([old[0], new_keys[fresh]])
                    new_rows = np.concatenate([old[1], new_rows[fresh]])
                tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
                np.savez(tmp, keys=new_keys, rows=new_rows)
                os.replace(tmp, path)

    def count(self) -> int:
        """Sentences stored (reads every shard's keys)."""
        return sum(len(s[0]) for p in sorted(self.root.glob("*.npz")) if (s := self._read(p)) is not None)
