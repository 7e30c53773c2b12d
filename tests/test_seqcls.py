"""The shared sequence-classification core on tiny models built in code: folder kinds and refusals, new heads
and layer cuts, tokenising texts and pairs, the teacher-logits cache, the training loop (learning, resume after
a kill), the ONNX export gate and the torch-free runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgedistill.errors import GateError, RecipeError
from edgedistill.manifest import BundleError, read_manifest
from edgedistill.tasks.seqcls import TEXT, TEXT_PAIR, input_kind, split_pairs, teacher_cache
from edgedistill.tasks.seqcls import models as seqcls_models
from edgedistill.tasks.seqcls.export import export_bundle
from edgedistill.tasks.seqcls.models import (
    ENCODER,
    SENTENCE_TRANSFORMERS,
    SEQCLS,
    build_classifier,
    folder_kind,
    load_classifier,
)
from edgedistill.tasks.seqcls.runtime import LogitsProxy, OnnxSequenceClassifier
from edgedistill.tasks.seqcls.training import TrainSettings, train
from tests.tiny import build_seqcls_model, build_st_model, make_labelled


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("seqcls")
    bert = build_seqcls_model(root / "bert", family="bert", num_labels=3, labels=["a", "b", "c"], layers=2)
    encoder = root / "encoder"
    build_seqcls_model(encoder, family="bert")
    import json

    config = json.loads((encoder / "config.json").read_text())
    config["architectures"] = ["BertModel"]
    (encoder / "config.json").write_text(json.dumps(config))
    return {"bert": bert, "mpnet": build_seqcls_model(root / "mpnet", family="mpnet", num_labels=2, seed=1),
            "st": build_st_model(root / "st", family="bert", hidden=16, layers=2), "encoder": encoder}


def test_inputs_single_and_pairs() -> None:
    assert input_kind(["a", "b"]) == TEXT
    assert input_kind([("a", "b")]) == TEXT_PAIR
    assert split_pairs([("a", "b"), ("c", "d")]) == (["a", "c"], ["b", "d"])
    assert split_pairs(["a"]) == (["a"], None)


def test_folder_kinds_and_refusals(models: dict[str, Path]) -> None:
    assert folder_kind(models["bert"]) == SEQCLS
    assert folder_kind(models["st"]) == SENTENCE_TRANSFORMERS
    assert folder_kind(models["encoder"]) == ENCODER
    with pytest.raises(RecipeError, match="teacher: .*sentence-transformers embedding model"):
        load_classifier(models["st"], field="teacher")
    with pytest.raises(RecipeError, match="bare encoder"):
        load_classifier(models["encoder"])
    with pytest.raises(RecipeError, match="has 3 output label"):
        load_classifier(models["bert"], num_labels=2)
    with pytest.raises(RecipeError, match="student.init: .*3-way head but the data has 2"):
        build_classifier(models["bert"], 2, field="student.init")


def test_new_head_on_an_embedding_model_and_layer_cut(models: dict[str, Path], tmp_path: Path) -> None:
    clf = build_classifier(models["st"], 2, labels=["ham", "spam"])
    assert clf.labels == ["ham", "spam"] and clf.num_labels == 2
    assert clf.logits(["a dog.", "the cat is big."]).shape == (2, 2)
    cut = build_classifier(models["bert"], 3, layers=[1])
    assert cut.model.config.num_hidden_layers == 1 and len(cut.model.bert.encoder.layer) == 1
    teacher = load_classifier(models["bert"])
    # the cut keeps the teacher's head
    assert torch.equal(cut.model.classifier.weight, teacher.model.classifier.weight)
    cut.save(tmp_path / "saved", text_inputs=TEXT_PAIR)
    again = load_classifier(tmp_path / "saved", num_labels=3)
    assert again.model.config.num_hidden_layers == 1 and again.labels == ["a", "b", "c"]
    assert seqcls_models.text_inputs_of(tmp_path / "saved") == TEXT_PAIR


def test_pairs_use_token_types_and_internals(models: dict[str, Path]) -> None:
    clf = load_classifier(models["bert"])
    features = clf.features([("a dog runs.", "the cat sits.")])
    assert int(features["token_type_ids"].max()) == 1
    out = clf.forward([("a dog.", "a cat.")], hidden_states=True, attentions=True)
    assert len(out.hidden_states) == 3 and len(out.attentions) == 2


def test_teacher_logits_cached_once_and_keyed_by_content(models: dict[str, Path], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    teacher = tmp_path / "teacher"
    shutil.copytree(models["bert"], teacher)
    texts = [r[0] for r in make_labelled(12, pairs=True)]
    calls = []
    real = teacher_cache.compute_logits
    monkeypatch.setattr(teacher_cache, "compute_logits", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = teacher_cache.teacher_logits(teacher, texts)
    second = teacher_cache.teacher_logits(teacher, texts)
    assert len(calls) == 1 and np.array_equal(first, second) and first.shape == (12, 3)
    np.testing.assert_allclose(first, load_classifier(teacher).logits(texts), atol=1e-5)
    teacher_cache.teacher_logits(teacher, texts[:5])  # other inputs: computed
    assert len(calls) == 2
    build_seqcls_model(teacher, family="bert", num_labels=3, seed=7)  # retrained in place: a new key
    changed = teacher_cache.teacher_logits(teacher, texts)
    assert len(calls) == 3 and not np.allclose(changed, first)
    with pytest.raises(RecipeError, match="teacher: .*embedding model"):
        teacher_cache.teacher_logits(models["st"], texts)


def _ce_job(clf, rows, settings: TrainSettings, ckpt: Path | None, fail_at: int | None = None):
    texts = [r[0] for r in rows]
    labels = torch.tensor([r[1] for r in rows])
    seen = []

    def step_loss(idx: np.ndarray, progress: float) -> torch.Tensor:
        seen.append(1)
        if fail_at is not None and len(seen) == fail_at:
            raise KeyboardInterrupt("killed")
        logits = clf.forward([texts[i] for i in idx]).logits
        return torch.nn.functional.cross_entropy(logits, labels[idx])

    def dev() -> float:
        return float((clf.logits(texts[:30]).argmax(1) == labels[:30].numpy()).mean())

    return train(clf.model, len(texts), step_loss, settings, evaluate=dev, checkpoint_dir=ckpt)


def test_training_learns_and_resumes_after_a_kill(models: dict[str, Path], tmp_path: Path) -> None:
    rows = make_labelled(96, seed=1)
    settings = TrainSettings(epochs=4, batch_size=16, learning_rate=3e-3, seed=0, eval_steps=6, checkpoint_steps=5)
    torch.manual_seed(0)
    whole = build_classifier(models["bert"], 3)
    result = _ce_job(whole, rows, settings, tmp_path / "a")
    assert result.steps == 24 and result.best_score is not None and result.best_score > 0.6
    assert [h["step"] for h in result.history] == [6, 12, 18, 24]

    killed = build_classifier(models["bert"], 3)
    with pytest.raises(KeyboardInterrupt):
        _ce_job(killed, rows, settings, tmp_path / "b", fail_at=13)
    assert (tmp_path / "b" / "latest.pt").is_file()
    resumed = build_classifier(models["bert"], 3)
    again = _ce_job(resumed, rows, settings, tmp_path / "b")
    assert again.history == result.history  # the same batches and dropout masks as the uninterrupted run
    for a, b in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(("family", "pairs", "probabilities"), [("bert", True, False), ("mpnet", False, True)])
def test_export_gate_and_runtime(models: dict[str, Path], tmp_path: Path, family: str, pairs: bool,
                                 probabilities: bool) -> None:
    clf = load_classifier(models[family])
    texts = [r[0] for r in make_labelled(20, pairs=pairs)]
    metrics = export_bundle(clf, tmp_path / "b", texts, task="classifier", activation="softmax",
                            probabilities=probabilities, exporter="torchscript")
    assert metrics["validation"]["max_abs_diff"] < 1e-4
    manifest = read_manifest(tmp_path / "b")
    assert manifest["task"] == "classifier" and manifest["text_inputs"] == (TEXT_PAIR if pairs else TEXT)
    assert manifest["output"] == ("probabilities" if probabilities else "logits")
    assert manifest["labels"] == clf.labels and manifest["activation"] == "softmax"
    assert ("token_type_ids" in manifest["inputs"]) == (family == "bert")
    onnx_model = OnnxSequenceClassifier(tmp_path / "b")
    torch_logits = clf.logits(texts)
    scores = onnx_model.scores(texts)
    np.testing.assert_allclose(scores.sum(1), 1.0, atol=1e-5)
    want = torch.softmax(torch.from_numpy(torch_logits), -1).numpy()
    np.testing.assert_allclose(scores, want, atol=1e-5)
    # logits (up to a constant per row when the graph holds the softmax)
    got = onnx_model.logits(texts)
    np.testing.assert_allclose(got - got.mean(1, keepdims=True), torch_logits - torch_logits.mean(1, keepdims=True),
                               atol=1e-4)
    wrong = [t[0] for t in texts] if pairs else [(t, t) for t in texts]
    with pytest.raises(BundleError, match="pairs" if pairs else "single texts"):
        onnx_model.logits(wrong)
    assert LogitsProxy(tmp_path / "b", texts).cosine(tmp_path / "b") == pytest.approx(1.0)


def test_export_gate_stops_a_graph_that_differs(models: dict[str, Path], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from edgedistill.tasks.seqcls import export as seqcls_export

    clf = load_classifier(models["bert"])
    real = seqcls_export.validate

    def off(*args, **kwargs):
        check = real(*args, **kwargs)
        return {**check, "max_abs_diff": check["max_abs_diff"] + 0.5}

    monkeypatch.setattr(seqcls_export, "validate", off)
    with pytest.raises(GateError, match="max abs diff"):
        export_bundle(clf, tmp_path / "b", ["a dog.", "the cat."], task="classifier", activation="softmax",
                      exporter="torchscript")
