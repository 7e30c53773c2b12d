"""Cross-process locks: one run per run folder, and one writer per cache key.

A run holds an exclusive ``flock`` on ``<run folder>/.lock`` for its whole life, so a second ``edgedistill run``
of the same recipe into the same folder cannot discard the first one's temporary stage folders. The lock file
records the holder (pid, host, command, start time) for the error message; the kernel releases the lock when
the holder exits, even on SIGKILL, so a stale file never blocks anyone.

Caches shared by recipes and runs (teacher labels, teacher evaluations) are computed under a per-key lock:
the first process computes and writes atomically, the others wait and then read the finished entry.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from edgedistill.errors import EdgedistillError

log = logging.getLogger(__name__)

RUN_LOCK = ".lock"


class RunLockedError(EdgedistillError):
    """Another process holds the run folder's lock."""

    exit_code = 3


def _try_flock(f: IO[Any], blocking: bool) -> bool:
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process locking
        return True
    try:
        fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return True
    except BlockingIOError:
        return False


def _unlock(f: IO[Any]) -> None:
    try:
        import fcntl
    except ImportError:
        return
    fcntl.flock(f, fcntl.LOCK_UN)


def read_holder(lock_path: Path) -> dict[str, Any]:
    """What the lock file says about its holder ({} if it says nothing readable)."""
    try:
        data = json.loads(Path(lock_path).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def describe_holder(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process"
    started = time.strftime("%H:%M:%S", time.localtime(holder.get("started", 0)))
    where = f" on {holder['host']}" if holder.get("host") and holder["host"] != socket.gethostname() else ""
    return f"pid {holder.get('pid', '?')}{where}, started {started}: {holder.get('command', '?')}"


@contextmanager
def run_lock(run_dir: Path, wait: bool = False) -> Iterator[None]:
    """Hold the exclusive lock of ``run_dir`` (created if needed).

    Without ``wait``, a folder locked by another run raises RunLockedError naming the holder and the fix;
    with ``wait``, logs who holds it and blocks until it is free.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / RUN_LOCK
    with path.open("a+") as f:
        if not _try_flock(f, blocking=False):
            holder = describe_holder(read_holder(path))
            if not wait:
                raise RunLockedError(
                    f"{run_dir} is in use by another edgedistill run ({holder}). Wait for it to finish, add --wait "
                    "to start when it does, or give this run another --runs-dir.")
            log.warning("%s is in use by another edgedistill run (%s); waiting for it to finish (--wait)",
                        run_dir, holder)
            t0 = time.monotonic()
            _try_flock(f, blocking=True)
            log.info("run folder free after %.0f s; starting", time.monotonic() - t0)
        try:
            f.seek(0)
            f.truncate()
            f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                                "command": " ".join(["edgedistill", *sys.argv[1:]])[:300]}) + "\n")
            f.flush()
            yield
        finally:
            _unlock(f)


@contextmanager
def key_lock(folder: Path, key: str, what: str) -> Iterator[None]:
    """Exclusive lock for one cache key (``folder/.locks/<key>.lock``); waits, logging once, if it is taken."""
    locks = Path(folder) / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with (locks / f"{key}.lock").open("a+") as f:
        if not _try_flock(f, blocking=False):
            log.info("%s: another process is computing it; waiting to use its result", what)
            _try_flock(f, blocking=True)
        try:
            yield
        finally:
            _unlock(f)
