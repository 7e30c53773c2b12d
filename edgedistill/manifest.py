"""A bundle's manifest.json: the one place that reads it, writes it and records the sha256 of every shipped file.

Torch-free and light: the runtime, the stages and the deploy bundle all use it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from edgedistill.errors import EdgedistillError

MANIFEST = "manifest.json"


class BundleError(EdgedistillError):
    """A bundle folder is missing a file, has a bad manifest or fails its checksums."""


def sha256_of(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(bundle: Path) -> dict:
    """The bundle's manifest.json, with a clear error when it is missing or not JSON."""
    file = Path(bundle) / MANIFEST
    if not file.is_file():
        raise BundleError(f"{bundle}: not a bundle (no {MANIFEST}); pass a folder such as runs/<recipe>/bundle")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{file}: not valid JSON ({e})") from None


def write_manifest(bundle: Path, manifest: dict) -> None:
    """Record the sha256 of every shipped file (every file of the folder, recursively, but the manifest) and
    write manifest.json."""
    bundle = Path(bundle)
    manifest["sha256"] = {
        p.relative_to(bundle).as_posix(): sha256_of(p)
        for p in sorted(bundle.rglob("*")) if p.is_file() and p.name != MANIFEST
    }
    (bundle / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def verify(bundle: Path, manifest: dict | None = None) -> None:
    """Check every file listed in the manifest against its sha256."""
    bundle = Path(bundle)
    manifest = manifest or read_manifest(bundle)
    for name, expected in manifest.get("sha256", {}).items():
        file = bundle / name
        if not file.is_file():
            raise BundleError(f"{bundle}: {name} is listed in {MANIFEST} but missing")
        if sha256_of(file) != expected:
            raise BundleError(f"{file}: sha256 mismatch (file changed or corrupt); re-copy the bundle")
