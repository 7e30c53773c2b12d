"""Archive extraction that refuses members escaping the target folder (zip and tar; links skipped)."""

from __future__ import annotations

import re
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from edgedistill.errors import AssetError


def _safe_member(name: str, archive: Path) -> PurePosixPath:
    member = PurePosixPath(name.replace("\\", "/"))
    if member.is_absolute() or ".." in member.parts or re.match(r"^[A-Za-z]:", name):
        raise AssetError(f"refusing to extract {archive.name}: unsafe member path {name!r}")
    return member


def extract_zip(archive: Path, dest: Path) -> None:
    """Extract regular files only; absolute paths and `..` are refused, symlinks skipped."""
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            member = _safe_member(info.filename, archive)
            if info.is_dir() or stat.S_ISLNK(info.external_attr >> 16) or not member.parts:
                continue
            target = dest.joinpath(*member.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst, 16 << 20)


def extract_tar(archive: Path, dest: Path) -> None:
    """Extract regular files and folders only; absolute paths and `..` are refused."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:*") as tf:
        members = []
        for info in tf.getmembers():
            _safe_member(info.name, archive)
            if info.isfile() or info.isdir():
                members.append(info)
        if hasattr(tarfile, "data_filter"):
            tf.extractall(dest, members=members, filter="data")
        else:  # Python < 3.10.12: members were checked above
            tf.extractall(dest, members=members)  # noqa: S202
