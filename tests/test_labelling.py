"""Teacher labelling: the per-sentence label cache, the teacher fingerprint and the ONNX backend (tiny models)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgedistill.tasks.embedding import labelling
from edgedistill.tasks.embedding.label_cache import LabelStore
from edgedistill.tasks.embedding.labelling import teacher_fingerprint, teacher_labels
from tests.tiny import make_sentences


def _count_encoded(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record how many sentences each call of the encoder got."""
    calls: list[int] = []
    real = labelling.encode_with

    def counting(backend, teacher, sentences, *args, **kwargs):
        calls.append(len(sentences))
        return real(backend, teacher, sentences, *args, **kwargs)

    monkeypatch.setattr(labelling, "encode_with", counting)
    return calls


def test_labelling_more_sentences_encodes_only_the_new_ones(tiny_world: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_encoded(monkeypatch)
    sentences = list(dict.fromkeys(make_sentences(120, seed=21)))
    small, _ = teacher_labels(tiny_world["teacher"], sentences[:20], 8, "cpu")
    big, _ = teacher_labels(tiny_world["teacher"], sentences[:100] + sentences[:5], 8, "cpu")
    assert calls == [20, 80]  # 100 after 20 costs the new 80; repeats are encoded once
    assert big.shape == (105, 32) and np.array_equal(big[:20], small) and np.array_equal(big[100:], small[:5])
    again, _ = teacher_labels(tiny_world["teacher"], sentences[:100], 8, "cpu")
    assert calls == [20, 80] and np.array_equal(again, big[:100])
    fresh, _ = labelling.encode(tiny_world["teacher"], sentences[:100], 8, "cpu", [])
    assert np.abs(fresh - big[:100]).max() < 1e-5


def test_hidden_states_are_cached_per_layer(tiny_world: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_encoded(monkeypatch)
    sentences = make_sentences(30, seed=22)
    _, hidden = teacher_labels(tiny_world["teacher"], sentences, 8, "cpu", hidden_layers=[1, 0])
    assert hidden is not None and hidden.shape == (30, 2, 32) and hidden.dtype == np.float16
    _, only_one = teacher_labels(tiny_world["teacher"], sentences, 8, "cpu", hidden_layers=[1])
    assert calls == [len(set(sentences))] and np.array_equal(only_one[:, 0], hidden[:, 1])


def test_the_label_cache_is_keyed_by_teacher_content_not_path(tiny_world: dict, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_encoded(monkeypatch)
    copy = Path(shutil.copytree(tiny_world["teacher"], tmp_path / "moved-teacher"))
    assert teacher_fingerprint(copy) == teacher_fingerprint(tiny_world["teacher"])
    sentences = make_sentences(10, seed=23)
    teacher_labels(tiny_world["teacher"], sentences, 8, "cpu")
    teacher_labels(copy, sentences, 8, "cpu")
    assert calls == [len(set(sentences))]
    (copy / "README.md").write_text("changed")
    assert teacher_fingerprint(copy) != teacher_fingerprint(tiny_world["teacher"])


def test_teacher_fingerprint_hashes_only_changed_files(tiny_world: dict, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from edgedistill import integrity

    copy = Path(shutil.copytree(tiny_world["teacher"], tmp_path / "t"))
    first = teacher_fingerprint(copy)
    hashed: list[Path] = []
    real = integrity.sha256_file
    monkeypatch.setattr(integrity, "sha256_file", lambda p: hashed.append(p) or real(p))
    assert teacher_fingerprint(copy) == first and hashed == []  # size and mtime unchanged: nothing read
    config = copy / "config.json"
    config.write_text(config.read_text())  # same bytes, new mtime: hashed again, same fingerprint
    assert teacher_fingerprint(copy) == first and hashed == [config.resolve()]


def test_a_damaged_shard_is_labelled_again(tiny_world: dict, isolated_cache: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    sentences = make_sentences(40, seed=24)
    first, _ = teacher_labels(tiny_world["teacher"], sentences, 8, "cpu")
    shards = sorted((isolated_cache / "labels").rglob("*.npz"))
    assert shards
    shards[0].write_bytes(shards[0].read_bytes()[:50])
    with caplog.at_level(logging.WARNING, logger="edgedistill.tasks.embedding.label_cache"):
        again, _ = teacher_labels(tiny_world["teacher"], sentences, 8, "cpu")
    assert "damaged" in caplog.text and np.abs(again - first).max() < 1e-5
    assert LabelStore(shards[0].parent).count() == len(set(sentences))


def test_label_store_keeps_what_two_writers_add(tmp_path: Path) -> None:
    a, b = LabelStore(tmp_path / "s"), LabelStore(tmp_path / "s")
    rows = np.arange(12, dtype=np.float32).reshape(6, 2)
    a.put(["x", "y", "z"], rows[:3])
    b.put(["z", "u", "v", "u"], rows[2:6])
    found, missing = a.get(["x", "y", "z", "u", "v", "w"])
    assert missing == ["w"] and len(found) == 5 and a.count() == 5


def test_onnx_backend_matches_torch_and_builds_the_graph_once(tiny_world: dict, isolated_cache: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from edgedistill.tasks.embedding import onnx_teacher

    sentences = make_sentences(50, seed=25) + ["  padded with spaces  ", "x " * 200]
    torch_labels, _ = teacher_labels(tiny_world["teacher"], sentences, 8, "cpu", backend="torch")
    onnx_labels, _ = teacher_labels(tiny_world["teacher"], sentences, 8, "cpu", backend="onnx")
    assert (onnx_labels * torch_labels).sum(axis=1).min() >= 0.9999
    (folder,) = [p for p in (isolated_cache / "onnx-teacher").iterdir() if not p.name.startswith(".")]
    check = json.loads((folder / "check.json").read_text())
    # MPNet: attention exported as onnxruntime Attention nodes (the fuser alone leaves it unfused), gated.
    assert check["graph"] == "model.attention.onnx" and check["fusions"]["model.attention.onnx"]["Attention"] == 2
    assert min(check["min_cosine"].values()) >= 0.9999
    monkeypatch.setattr(onnx_teacher, "build", None)  # would fail if built again
    assert onnx_teacher.onnx_teacher(tiny_world["teacher"]) == folder
    two = onnx_teacher.encode_onnx(tiny_world["teacher"], sentences, 8, processes=2)
    assert np.abs(two - onnx_labels).max() < 1e-5


def test_cpu_bf16_labels_agree_with_fp32_and_keep_their_own_store(tiny_world: dict, isolated_cache: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    sentences = make_sentences(40, seed=12)
    fp32, _ = teacher_labels(tiny_world["teacher"], sentences, 8, "cpu", backend="auto", bf16=True)
    monkeypatch.setenv("EDGEDISTILL_CPU_BF16", "1")  # as on a CPU with AVX512-BF16 / AMX
    bf16, _ = teacher_labels(tiny_world["teacher"], sentences, 8, "cpu", backend="auto", bf16=True)
    stores = sorted(p.name for p in next((isolated_cache / "labels").iterdir()).iterdir())
    assert stores == ["emb-onnx", "emb-torch-bf16"]
    cosine = (fp32 * bf16).sum(axis=1)
    assert cosine.min() > 0.99 and np.abs(fp32 - bf16).max() > 0  # bf16 really ran, and stays close


def test_backend_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert labelling.label_backend("auto", "cpu", []) == "onnx"
    assert labelling.label_backend("auto", "cpu", [], bf16=True) == "onnx"  # no native CPU bf16 (forced off)
    monkeypatch.setenv("EDGEDISTILL_CPU_BF16", "1")
    assert labelling.label_backend("auto", "cpu", [], bf16=True) == "torch"
    assert labelling.label_backend("auto", "cpu", [], bf16=False) == "onnx"
    monkeypatch.setenv("EDGEDISTILL_CPU_BF16", "0")
    assert labelling.label_backend("auto", "cuda", []) == "torch"
    assert labelling.label_backend("auto", "cpu", [3]) == "torch"
    with pytest.raises(ValueError, match="hidden"):
        labelling.label_backend("onnx", "cpu", [3])
