"""Corruption, environment faults and hostile files: detected, refused or rebuilt with a clear message."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgedistill import archives, assets, stages
from edgedistill.catalog import Catalog, CatalogEntry, PipSource
from edgedistill.cli import main
from edgedistill.errors import AssetError, StorageError
from edgedistill.integrity import check_folder, check_model_folder, write_manifest
from edgedistill.pipeline import run_recipe
from edgedistill.recipe import load_recipe
from tests.conftest import tiny_recipe, write_recipe
from tests.test_assets import copy_all, make_wheel, pip_args, sha


def _two_stage(world: dict, **changes: object) -> dict:
    """distill -> export only: the cheapest chain with an earlier stage to keep intact."""
    recipe = tiny_recipe(world, **changes)
    recipe["stages"] = recipe["stages"][:2]
    recipe["stages"][1]["optimize"] = "never"
    return recipe


# -- manifests ------------------------------------------------------------------------------------------------
def test_manifest_detects_truncation_and_corruption(tmp_path: Path) -> None:
    folder = tmp_path / "stage"
    (folder / "artifact").mkdir(parents=True)
    (folder / "artifact" / "model.onnx").write_bytes(b"x" * 1000)
    (folder / "config.json").write_text("{}")
    (folder / "metrics.json").write_text("{}")  # re-evaluated later: not in the manifest
    manifest = write_manifest(folder)
    assert set(manifest) == {"artifact/model.onnx", "config.json"}
    assert check_folder(folder) == []
    (folder / "metrics.json").write_text('{"changed": 1}')
    assert check_folder(folder) == []

    model = folder / "artifact" / "model.onnx"
    st = model.stat()
    model.write_bytes(b"x" * 500)  # truncated: caught by size alone
    assert check_folder(folder) == ["artifact/model.onnx: 500 bytes, 1000 recorded (truncated or overwritten)"]
    model.write_bytes(b"y" + b"x" * 999)  # same size, new mtime: hashed
    assert check_folder(folder) == ["artifact/model.onnx: sha256 differs from the one recorded (corrupted)"]
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime: only the full check sees it
    assert check_folder(folder) == []
    assert check_folder(folder, full=True) == ["artifact/model.onnx: sha256 differs from the one recorded (corrupted)"]
    model.unlink()
    assert check_folder(folder) == ["artifact/model.onnx: missing"]
    (folder / "files.json").write_text("{trunc")
    assert check_folder(folder) == ["files.json: unreadable"]


def test_truncated_asset_cache_file_is_fetched_again(isolated_cache: Path, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    index = tmp_path / "index"
    index.mkdir()
    wheel = make_wheel(index, "edt-wheel", "1.0", {"x/a.txt": b"alpha\n" * 100, "x/b.txt": b"beta\n"})
    entry = CatalogEntry(name="thing", description="t", build=copy_all,
                         sources=(PipSource("edt-wheel", "1.0", sha(wheel.read_bytes())),),
                         outputs={"a.txt": sha(b"alpha\n" * 100)})  # b.txt is not pinned but still recorded
    catalog = Catalog([entry])
    path = assets.resolve("thing", pip_args=pip_args(index), catalog=catalog)
    marker = json.loads((path / assets.MARKER).read_text())
    assert set(marker["manifest"]) == {"a.txt", "b.txt"}
    for damaged, content in (("a.txt", b"alpha\n"), ("b.txt", b"BETA\n")):
        (path / damaged).write_bytes(content)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="edgedistill.assets"):
            assert assets.resolve("thing", pip_args=pip_args(index), catalog=catalog) == path
        assert "damaged" in caplog.text and damaged in caplog.text
        assert (path / "a.txt").read_bytes() == b"alpha\n" * 100 and (path / "b.txt").read_bytes() == b"beta\n"


def test_asset_cached_by_an_older_version_is_verified_and_upgraded(isolated_cache: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    index.mkdir()
    make_wheel(index, "edt-wheel", "1.0", {"x/a.txt": b"alpha\n"})
    entry = CatalogEntry(name="thing", description="t", build=copy_all, sources=(PipSource("edt-wheel", "1.0"),),
                         outputs={"a.txt": sha(b"alpha\n")})
    path = assets.resolve("thing", pip_args=pip_args(index), catalog=Catalog([entry]))
    marker = json.loads((path / assets.MARKER).read_text())
    del marker["manifest"]
    (path / assets.MARKER).write_text(json.dumps(marker))
    resolver = assets.Resolver(Catalog([entry]), pip_args=pip_args(index))
    assert resolver.is_cached(entry)
    assert "manifest" in json.loads((path / assets.MARKER).read_text())
    (path / assets.MARKER).write_text(json.dumps(marker))
    (path / "a.txt").write_bytes(b"alphA\n")
    assert not resolver.is_cached(entry)


def test_damaged_stage_is_rebuilt_and_intact_ones_reused(tmp_path: Path, tiny_world: dict,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    path = write_recipe(tmp_path / "r.yaml", _two_stage(tiny_world))
    first = run_recipe(load_recipe(path), tmp_path / "runs")
    for record in first:
        manifest = json.loads((record.dir / "files.json").read_text())["files"]
        assert "artifact/model.onnx" in manifest or "artifact/model.safetensors" in manifest
        assert all(len(v["sha256"]) == 64 for v in manifest.values())
    onnx = first[1].artifact.path / "model.onnx"
    good = onnx.read_bytes()
    onnx.write_bytes(good[: len(good) // 2])  # truncated by a crash of another program, a bad copy, ...
    ran: list[str] = []
    real_get = stages.get
    monkeypatch.setattr(stages, "get", lambda t: (ran.append(t), real_get(t))[1])
    with caplog.at_level(logging.WARNING, logger="edgedistill.runner"):
        second = run_recipe(load_recipe(path), tmp_path / "runs")
    assert ran == ["export"] and [r.reused for r in second] == [True, False]
    assert "01-export" in caplog.text and "truncated" in caplog.text
    assert onnx.stat().st_size == len(good) and check_folder(second[1].dir, full=True) == []
    assert second[1].evaluation["sts_spearman"] == pytest.approx(first[1].evaluation["sts_spearman"], abs=1e-6)

    # A garbled record (metrics.json is not in the manifest: it is re-evaluated) is not taken as finished either.
    (second[1].dir / "metrics.json").write_text('{"stage": "exp')
    ran.clear()
    run_recipe(load_recipe(path), tmp_path / "runs")
    assert ran == ["export"]


# -- environment faults -------------------------------------------------------------------------------------
def test_storage_faults_mid_stage_are_clear_and_keep_earlier_stages(
        tmp_path: Path, tiny_world: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = tmp_path / "runs"
    path = write_recipe(tmp_path / "r.yaml", _two_stage(tiny_world))
    real_get = stages.get
    fault: list[int] = []

    def failing_get(stage_type: str):
        if stage_type != "export" or not fault:
            return real_get(stage_type)

        def fill_disk(cfg, ctx):
            ctx.artifact_dir.mkdir()
            (ctx.artifact_dir / "model.onnx").write_bytes(b"half")
            raise OSError(fault[0], os.strerror(fault[0]), str(ctx.artifact_dir / "model.onnx"))

        return fill_disk

    monkeypatch.setattr(stages, "get", failing_get)
    for code, words in ((errno.ENOSPC, "disk is full"), (errno.EACCES, "permission denied"),
                        (errno.EROFS, "read-only")):
        fault[:] = [code]
        result = CliRunner().invoke(main, ["run", str(path), "--runs-dir", str(runs)])
        assert result.exit_code == 1, result.output
        assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
        assert "error: stage 1 export failed: " in result.output and words in result.output
        assert "model.onnx" in result.output and "run the same command again" in result.output
        distill = next(runs.glob("tiny/00-distill-*"))
        assert check_folder(distill, full=True) == []  # the finished stage is intact
        assert not list(runs.glob("tiny/.tmp-01-export-*"))  # the partial attempt gave its space back
        assert not list(runs.glob("tiny/01-export-*"))
    fault.clear()  # space freed: the same command resumes
    records = run_recipe(load_recipe(path), runs)
    assert [r.reused for r in records] == [True, False]


def test_read_only_runs_dir(tmp_path: Path, tiny_world: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Root ignores chmod, so the read-only file system is simulated where the runner creates its folder."""
    real_mkdir = Path.mkdir

    def read_only(self: Path, *args: object, **kwargs: object) -> None:
        if str(self).startswith(str(tmp_path / "ro")):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    path = write_recipe(tmp_path / "r.yaml", _two_stage(tiny_world))
    result = CliRunner().invoke(main, ["run", str(path), "--runs-dir", str(tmp_path / "ro")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "read-only" in result.output and str(tmp_path / "ro") in result.output
    with pytest.raises(StorageError):
        run_recipe(load_recipe(path), tmp_path / "ro")


def test_unreachable_hub_is_a_clear_error(tmp_path: Path, tiny_world: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    path = write_recipe(tmp_path / "r.yaml", _two_stage(tiny_world, teacher="edgedistill-test/no-such-model"))
    result = CliRunner().invoke(main, ["run", str(path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "hub is unreachable" in result.output and "edgedistill-test/no-such-model" in result.output


# -- hostile files ------------------------------------------------------------------------------------------
def test_pickle_weights_need_an_opt_in(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(AssetError, match=r"pytorch_model\.bin.*pickle.*trust: \{pickle_weights: true\}"):
        check_model_folder(model, "teacher")
    with caplog.at_level(logging.WARNING):
        check_model_folder(model, "teacher", allow_pickle=True)
    assert "pickle-format weights" in caplog.text
    (model / "model.safetensors").write_bytes(b"st")  # the loaders prefer safetensors: the .bin is never read
    check_model_folder(model, "teacher")
    (model / "openvino").mkdir()  # hub repos ship OpenVINO IR: raw weights, not a pickle
    (model / "openvino" / "openvino_model.xml").write_text("<net/>")
    (model / "openvino" / "openvino_model.bin").write_bytes(b"raw")
    check_model_folder(model, "teacher")
    (model / "2_Dense").mkdir()
    (model / "2_Dense" / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(AssetError, match=r"2_Dense/pytorch_model\.bin"):
        check_model_folder(model, "teacher")


def test_remote_code_is_refused_by_default(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"st")
    (model / "config.json").write_text(json.dumps({"auto_map": {"AutoModel": "evil.Model"}}))
    (model / "evil.py").write_text(f"open({str(tmp_path / 'pwned')!r}, 'w')\n")
    with pytest.raises(AssetError, match=r"custom model code.*trust_remote_code is off.*trust: \{remote_code: true\}"):
        check_model_folder(model, "teacher")
    assert not (tmp_path / "pwned").exists()


def test_remote_code_only_with_the_recipe_opt_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    import sentence_transformers

    from edgedistill import trust

    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"st")
    (model / "config.json").write_text(json.dumps({"auto_map": {"AutoModel": "custom.Model"}}))
    check_model_folder(model, "teacher", allow_remote_code=True)
    assert "will run the model's own code" in caplog.text
    seen: list[bool] = []
    monkeypatch.setattr(sentence_transformers, "SentenceTransformer",
                        lambda path, device, trust_remote_code: seen.append(trust_remote_code))
    monkeypatch.delenv(trust.REMOTE_CODE_ENV, raising=False)
    trust.load_sentence_transformer(model, "cpu")
    trust.allow_remote_code(True)  # what the runner does for `trust: {remote_code: true}`; child processes inherit it
    trust.load_sentence_transformer(model, "cpu")
    trust.allow_remote_code(False)
    trust.load_sentence_transformer(model, "cpu")
    assert seen == [False, True, False]


def test_runner_refuses_a_pickled_teacher_before_any_stage(tmp_path: Path, tiny_world: dict) -> None:
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_world["teacher"], teacher)
    for st in teacher.rglob("*.safetensors"):
        st.with_suffix(".bin").write_bytes(b"not really a pickle")
        st.unlink()
    path = write_recipe(tmp_path / "r.yaml", _two_stage(tiny_world, teacher=str(teacher)))
    result = CliRunner().invoke(main, ["run", str(path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "pickle format" in result.output and "model.bin" in result.output
    assert not list((tmp_path / "runs" / "tiny").glob("*-distill-*"))
    # The opt-in is a recipe field (and then the loaders' own safeguards apply).
    assert load_recipe(path, ["trust.pickle_weights=true"]).trust.pickle_weights


def _zip(path: Path, names: list[str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name in names:
            zf.writestr(name, b"data")
    return path


@pytest.mark.parametrize("name", ["../evil.txt", "a/../../evil.txt", "/tmp/evil.txt", "C:/evil.txt",
                                  "..\\evil.txt"])
def test_zip_and_tar_members_escaping_the_target_are_refused(tmp_path: Path, name: str) -> None:
    dest = tmp_path / "out" / "deep"
    with pytest.raises(AssetError, match="unsafe member path"):
        archives.extract_zip(_zip(tmp_path / "a.whl", ["ok.txt", name]), dest)
    tar = tmp_path / "a.tar.gz"
    with tarfile.open(tar, "w:gz") as tf:
        info = tarfile.TarInfo(name)
        info.size = 4
        tf.addfile(info, io.BytesIO(b"data"))
    with pytest.raises(AssetError, match="unsafe member path"):
        archives.extract_tar(tar, dest)
    assert not list(tmp_path.rglob("evil.txt"))


def test_archive_links_are_not_extracted(tmp_path: Path) -> None:
    tar = tmp_path / "a.tar.gz"
    with tarfile.open(tar, "w:gz") as tf:
        for kind, target in ((tarfile.SYMTYPE, "/etc/passwd"), (tarfile.LNKTYPE, "/etc/passwd")):
            info = tarfile.TarInfo(f"link{kind.decode()}")
            info.type, info.linkname = kind, target
            tf.addfile(info)
    archives.extract_tar(tar, tmp_path / "t")
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    archives.extract_zip(archive, tmp_path / "z")
    assert list((tmp_path / "t").iterdir()) == [] and list((tmp_path / "z").iterdir()) == []


def test_hub_downloads_are_checked_against_the_served_hashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            isolated_cache: Path) -> None:
    """huggingface_hub names each cached blob by its sha256 (LFS) or git blob sha1: both are checked."""
    import hashlib

    hf = pytest.importorskip("huggingface_hub")
    repo = tmp_path / "hub" / "models--org--model"
    snapshot = repo / "snapshots" / ("c" * 40)
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    weights, config = b"w" * 4096, b'{"hidden_size": 8}'
    for name, data, blob in (("model.safetensors", weights, hashlib.sha256(weights).hexdigest()),
                             ("config.json", config, hashlib.sha1(b"blob %d\0" % len(config) + config).hexdigest())):
        (repo / "blobs" / blob).write_bytes(data)
        (snapshot / name).symlink_to(Path("../../blobs") / blob)
    monkeypatch.setattr(hf, "snapshot_download", lambda repo_id, **kw: str(snapshot))
    assert assets.resolve("org/model") == snapshot
    assert list((isolated_cache / "hub-verified").glob("org--model--*.json"))
    assert assets.resolve("org/model") == snapshot  # stamped: size and mtime unchanged, not hashed again
    (snapshot / "model.safetensors").write_bytes(b"W" + weights[1:])  # corrupted in the hub cache
    with pytest.raises(AssetError, match=r"model\.safetensors in the hub cache does not match"):
        assets.resolve("org/model")


def test_damaged_training_checkpoint_is_discarded(tmp_path: Path, tiny_world: dict,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A truncated or planted latest.pt is not unpickled as arbitrary objects: training starts over."""
    from edgedistill.tasks.embedding.training import train
    from tests.test_training import _job

    job = _job(tmp_path, tiny_world, checkpoint_steps=2)
    Path(job.checkpoint_dir).mkdir(parents=True)
    (Path(job.checkpoint_dir) / "latest.pt").write_bytes(b"PK\x03\x04 truncated")
    with caplog.at_level(logging.WARNING, logger="edgedistill.tasks.embedding.training"):
        stats = train(job)
    assert "discarding the unreadable checkpoint" in caplog.text
    assert stats["train_steps"] == 4


def test_truncated_label_cache_is_computed_again(tmp_path: Path, tiny_world: dict, isolated_cache: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    from edgedistill.tasks.embedding.labelling import teacher_labels
    from tests.tiny import make_sentences

    sentences = make_sentences(20, seed=3)
    first, _ = teacher_labels(tiny_world["teacher"], sentences, 8, "cpu")
    cached = sorted((isolated_cache / "labels").rglob("*.npz"))[0]  # one shard of the per-sentence cache
    size = cached.stat().st_size
    cached.write_bytes(cached.read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="edgedistill.tasks.embedding.label_cache"):
        again, _ = teacher_labels(tiny_world["teacher"], sentences, 8, "cpu")
    assert "damaged" in caplog.text
    assert abs(again - first).max() < 1e-6 and cached.stat().st_size == size
