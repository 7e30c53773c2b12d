"""File integrity and hostile-file checks: sha256 manifests of finished folders, safe model folders,
storage errors turned into clear messages, and the test hook that SIGKILLs a run at a chosen moment.

A manifest maps every file of a folder to its sha256, size and mtime. Verifying one is cheap: a file whose
size and mtime (ns) are unchanged is taken as intact without reading it; a changed size is corrupt at once;
a changed mtime with the same size is hashed in full and compared. So a finished multi-GB stage is hashed
once when written, and again only if something touched it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from edgedistill.errors import AssetError, StorageError

log = logging.getLogger(__name__)

MANIFEST = "files.json"
# Files of a stage folder that change after it finished (metrics.json is re-evaluated when the evaluation
# settings change), so they are not in its manifest.
MUTABLE = frozenset({MANIFEST, "metrics.json"})
KILL_ENV = "EDGEDISTILL_TEST_KILL_ON"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so a reader never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


def _files(folder: Path, skip: frozenset[str]) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix() not in skip)


def build_manifest(folder: Path, skip: frozenset[str] = MUTABLE) -> dict[str, dict[str, Any]]:
    """``{relative path: {sha256, size, mtime_ns}}`` of every regular file under ``folder``."""
    out = {}
    for path in _files(folder, skip):
        st = path.stat()
        out[path.relative_to(folder).as_posix()] = {"sha256": sha256_file(path), "size": st.st_size,
                                                    "mtime_ns": st.st_mtime_ns}
    return out


def write_manifest(folder: Path, skip: frozenset[str] = MUTABLE) -> dict[str, dict[str, Any]]:
    """Record the manifest of ``folder`` in ``folder/files.json``."""
    manifest = build_manifest(folder, skip)
    write_json_atomic(folder / MANIFEST, {"files": manifest})
    return manifest


def verify_manifest(folder: Path, manifest: dict[str, dict[str, Any]], full: bool = False,
                    skip: frozenset[str] = MUTABLE) -> list[str]:
    """Problems found in ``folder`` against ``manifest`` (empty: intact). ``full`` hashes every file."""
    problems = []
    for rel, want in manifest.items():
        path = folder / rel
        try:
            st = path.stat()
        except OSError:
            problems.append(f"{rel}: missing")
            continue
        if st.st_size != want["size"]:
            problems.append(f"{rel}: {st.st_size} bytes, {want['size']} recorded (truncated or overwritten)")
        elif (full or st.st_mtime_ns != want.get("mtime_ns")) and sha256_file(path) != want["sha256"]:
            problems.append(f"{rel}: sha256 differs from the one recorded (corrupted)")
    extra = sorted(p.relative_to(folder).as_posix() for p in _files(folder, skip)) if full else []
    problems += [f"{rel}: not in the manifest" for rel in extra if rel not in manifest]
    return problems


def check_folder(folder: Path, full: bool = False) -> list[str] | None:
    """Problems of a folder with a ``files.json`` (None: it has no manifest, e.g. written by an older version)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return [f"{MANIFEST}: unreadable"]
    return verify_manifest(folder, manifest, full=full)


# -- hostile files ---------------------------------------------------------------------------------------
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")


def check_model_folder(path: Path, what: str, allow_pickle: bool = False, allow_remote_code: bool = False) -> None:
    """Refuse a model folder whose weights would be unpickled, or that ships code to run.

    Weights must be safetensors: a folder with a pickle-format weight file and no ``.safetensors`` beside it
    is refused unless the recipe sets ``trust.pickle_weights: true`` (then a warning is logged; transformers
    still loads ``.bin`` files with ``torch.load(weights_only=True)``). A model whose config asks for custom
    code (``auto_map``) is refused unless the recipe sets ``trust.remote_code: true`` (then a warning is logged).
    """
    path = Path(path)
    if not path.is_dir():
        return
    for config in [path / "config.json", *path.glob("*/config.json")]:
        try:
            data = json.loads(config.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("auto_map"):
            if not allow_remote_code:
                raise AssetError(
                    f"{what} ({path}): {config.relative_to(path)} asks for custom model code (auto_map). edgedistill "
                    "does not run code shipped with a model (trust_remote_code is off); use a model whose "
                    "architecture transformers supports natively, or, if you have read that code and trust it, set "
                    "`trust: {remote_code: true}` in the recipe.")
            log.warning("%s (%s): will run the model's own code (auto_map in %s) because the recipe sets "
                        "trust.remote_code", what, path, config.relative_to(path))
    pickled = []
    for file in sorted(path.rglob("*")):
        if (file.suffix in PICKLE_SUFFIXES and file.is_file() and not list(file.parent.glob("*.safetensors"))
                and not file.with_suffix(".xml").is_file()):  # OpenVINO IR weights (.bin beside .xml): no pickle
            pickled.append(file.relative_to(path).as_posix())
    if not pickled:
        return
    if not allow_pickle:
        raise AssetError(
            f"{what} ({path}): weights {', '.join(pickled)} are in a pickle format, which can run code when "
            "loaded, and there is no .safetensors copy. Convert them to safetensors, or, if you trust the "
            "source, set `trust: {pickle_weights: true}` in the recipe.")
    log.warning("%s (%s): loading pickle-format weights %s because the recipe sets trust.pickle_weights",
                what, path, ", ".join(pickled))


# -- environment faults ---------------------------------------------------------------------------------
_ADVICE = {
    errno.ENOSPC: "the disk is full: free some space",
    errno.EDQUOT: "the disk quota is exhausted: free some space",
    errno.EROFS: "the file system is read-only: use a writable --runs-dir (or EDGEDISTILL_CACHE)",
    errno.EACCES: "permission denied: fix the folder's permissions or choose another --runs-dir",
    errno.EPERM: "operation not permitted: fix the folder's permissions or choose another --runs-dir",
}
STORAGE_ERRNOS = frozenset(_ADVICE)


def storage_error(err: OSError, doing: str) -> StorageError:
    """A clear, actionable error for a failed read or write."""
    where = f" ({err.filename})" if err.filename else ""
    advice = _ADVICE.get(err.errno or 0, "check the folder")
    return StorageError(f"{doing} failed: {err.strerror or err}{where}; {advice}. Finished stages are kept: run "
                        "the same command again to resume.")


# -- test hook ------------------------------------------------------------------------------------------
def start_kill_watch(run_dir: Path) -> None:
    """Test hook: if ``$EDGEDISTILL_TEST_KILL_ON`` is a glob (relative to the run folder), SIGKILL this
    process as soon as a matching path exists, i.e. mid-stage at a point the test chose."""
    pattern = os.environ.get(KILL_ENV)
    if not pattern:
        return

    def watch() -> None:
        while not any(run_dir.glob(pattern)):
            time.sleep(0.005)
        log.warning("test hook %s=%s matched: killing this process", KILL_ENV, pattern)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="edgedistill-kill-watch", daemon=True).start()


def content_fingerprint(path: Path, cache: Path | None = None) -> str:
    """A content hash of a file or folder (every regular file's relative path and sha256), for stage and cache
    keys: the same bytes give the same key wherever they live, and editing a file in place changes it.

    With ``cache`` (a folder), a file whose size and mtime are unchanged since it was last hashed is not read
    again, so fingerprinting a multi-GB teacher costs one stat per file after the first time.
    """
    path = Path(path).resolve()
    files = [path] if path.is_file() else _files(path, frozenset()) if path.is_dir() else []
    if not files:
        return f"missing:{path}"
    memo_file = (cache / f"{hashlib.sha256(str(path).encode()).hexdigest()[:24]}.json") if cache else None
    memo: dict[str, Any] = {}
    if memo_file is not None and memo_file.is_file():
        try:
            memo = json.loads(memo_file.read_text())
        except (OSError, ValueError):
            memo = {}
    digest, fresh = hashlib.sha256(), {}
    for file in files:
        rel = file.name if file == path else file.relative_to(path).as_posix()
        st = file.stat()
        known = memo.get(rel)
        if known and known["size"] == st.st_size and known["mtime_ns"] == st.st_mtime_ns:
            sha = known["sha256"]
        else:
            sha = sha256_file(file)
        fresh[rel] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}
        digest.update(f"{rel}\0{sha}\n".encode())
    if memo_file is not None and fresh != memo:
        try:
            memo_file.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(memo_file, fresh)
        except OSError as e:  # a read-only cache only costs speed
            log.debug("fingerprint cache not written: %s", e)
    return digest.hexdigest()[:16]
