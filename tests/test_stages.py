"""Each stage on its own, on tiny models: distill helpers and profile (quantize: tests/test_quantize.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgedistill.contract import Artifact, StageContext
from edgedistill.errors import RecipeError
from edgedistill.recipe import ExportStage, ProfileStage, StudentConfig
from edgedistill.stages import export, profile
from edgedistill.tasks.embedding import distill
from edgedistill.tasks.embedding.evaluate import EvalSet
from tests.tiny import build_st_model, make_sentences


class FakeEvaluator:
    """Returns scripted STS scores, one per call."""

    def __init__(self, scores: list[float]) -> None:
        self.scores = list(scores)
        self.data = EvalSet(sts=None, heldout=make_sentences(20, seed=3), latency_sentences=make_sentences(5))

    def quality(self, encoder) -> dict[str, float]:
        return {"sts_spearman": self.scores.pop(0)}


def _ctx(tmp_path: Path, input_: Artifact, evaluator, input_eval: dict | None = None) -> StageContext:
    work = tmp_path / "work"
    work.mkdir(parents=True)
    return StageContext(index=0, teacher=Path("."), input=input_, work_dir=work, device="cpu",
                        input_evaluation=input_eval or {}, _evaluator=lambda: evaluator)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An fp32 ONNX bundle of a tiny BERT student."""
    root = tmp_path_factory.mktemp("bundle")
    model = build_st_model(root / "st", family="bert", hidden=16, layers=2)
    ctx = _ctx(root, Artifact("sentence-transformer", model, "k"), FakeEvaluator([]))
    export.run(ExportStage(type="export", exporter="torchscript"), ctx)
    return ctx.artifact_dir


def test_ridge_projection_recovers_a_linear_map() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 8))
    w_true, b_true = rng.normal(size=(8, 4)), rng.normal(size=4)
    w, b = distill.ridge_projection(x, x @ w_true + b_true, lam=1e-6)
    assert np.allclose(w, w_true, atol=1e-3) and np.allclose(b, b_true, atol=1e-3)
    w_strong, _ = distill.ridge_projection(x, x @ w_true + b_true, lam=10.0)
    assert np.linalg.norm(w_strong) < 0.5 * np.linalg.norm(w_true)


def test_procrustes_projection_keeps_cosines() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 8))
    y = np.concatenate([x, rng.normal(size=(200, 8))], axis=1) @ np.linalg.qr(rng.normal(size=(16, 16)))[0]
    w = distill.procrustes_projection(x, y)
    assert np.allclose(w @ w.T, np.eye(8), atol=1e-5)  # orthonormal rows
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    projected = xn @ w
    assert np.allclose(projected @ projected.T, xn @ xn.T, atol=1e-5)  # every cosine kept
    yn = y / np.linalg.norm(y, axis=1, keepdims=True)
    random_w = np.linalg.qr(rng.normal(size=(16, 8)))[0].T
    assert (projected * yn).sum(1).mean() > (xn @ random_w * yn).sum(1).mean() + 0.2  # and aligned with y


def test_build_student_keeps_layers_and_projects(tmp_path: Path) -> None:
    init = build_st_model(tmp_path / "init", family="bert", hidden=16, layers=3)
    sentences = make_sentences(60)
    labels = np.random.default_rng(0).normal(size=(60, 32)).astype(np.float32)
    cfg = StudentConfig(init=str(init), layers=[0, 2], projection_sentences=60)
    student, info = distill.build_student(cfg, 32, 32, sentences, labels, "cpu")
    assert len(student[0].auto_model.encoder.layer) == 2
    assert student.get_embedding_dimension() == 32
    assert info["init_layers"] == 3 and "projection_weight_norm" in info
    with pytest.raises(RecipeError, match="layers"):
        distill.build_student(cfg.model_copy(update={"layers": [0, 5]}), 32, 32, sentences, labels, "cpu")
    with pytest.raises(RecipeError, match="projection"):
        distill.build_student(cfg.model_copy(update={"projection": "none"}), 32, 32, sentences, labels, "cpu")
    with pytest.raises(RecipeError, match="projection_fit_epochs"):  # same dimension: nothing to fit
        distill.build_student(cfg.model_copy(update={"projection_fit_epochs": 5}), 32, 16, sentences, labels[:, :16],
                              "cpu")


@pytest.mark.parametrize("bank", [0, 48], ids=["in-batch", "bank"])
def test_fit_projection_fits_the_projection_alone(tmp_path: Path, bank: int) -> None:
    import torch

    from edgedistill.recipe import DistillStage
    from edgedistill.tasks.embedding.training import fit_projection

    init = build_st_model(tmp_path / "init", family="bert", hidden=16, layers=2, dropout=0.0)
    sentences = make_sentences(96)
    from sentence_transformers import SentenceTransformer

    pooled = SentenceTransformer(str(init), device="cpu").encode(sentences, convert_to_numpy=True)
    # Targets a linear map of the student's own embeddings cannot reach exactly: there is something to learn.
    labels = np.tanh(pooled @ np.random.default_rng(0).normal(size=(16, 32)) * 3).astype(np.float32)
    labels /= np.linalg.norm(labels, axis=1, keepdims=True)
    cfg = DistillStage(type="distill", student=StudentConfig(init=str(init), projection_sentences=96,
                                                             projection_fit_epochs=20),
                       losses=[{"type": "mse", "weight": 0.2}, {"type": "cross_kl", "temperature": 0.1, "bank": bank}],
                       batch_size=32)
    student, _ = distill.build_student(cfg.student, 32, 32, sentences, labels, "cpu")
    body_before = {k: v.clone() for k, v in student[0].state_dict().items()}
    projection_before = student[2].linear.weight.detach().clone()
    info = fit_projection(student, cfg, sentences, labels, seed=0, device="cpu")
    assert info["projection_fit_loss_last"] < 0.8 * info["projection_fit_loss_first"]
    assert not torch.equal(student[2].linear.weight, projection_before)
    assert all(torch.equal(v, body_before[k]) for k, v in student[0].state_dict().items())  # the body is untouched
    cosine = (student.encode(sentences, convert_to_numpy=True) * labels).sum(1).mean()
    assert cosine > (pooled / np.linalg.norm(pooled, axis=1, keepdims=True) @ distill.procrustes_projection(
        pooled, labels) * labels).sum(1).mean()  # closer to the teacher than the rotation it started from


def test_projection_fit_needs_a_projection_and_an_embedding_loss() -> None:
    from pydantic import ValidationError

    from edgedistill.recipe import DistillStage

    with pytest.raises(ValidationError, match="projection pca has none"):
        DistillStage(type="distill", student={"init": "x", "projection": "pca", "projection_fit_epochs": 5})
    with pytest.raises(ValidationError, match="embedding losses"):
        DistillStage(type="distill", student={"init": "x", "projection_fit_epochs": 5},
                     losses=[{"type": "mnrl"}], triplets=10)


def test_teacher_labels_are_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    teacher = build_st_model(tmp_path / "t", family="mpnet", hidden=16, layers=1)
    sentences = make_sentences(10)
    from edgedistill.tasks.embedding.labelling import teacher_labels

    first, none = teacher_labels(teacher, sentences, 4, "cpu")
    assert first.shape == (10, 16) and none is None
    emb, hidden = teacher_labels(teacher, sentences, 4, "cpu", hidden_layers=[0])
    assert np.allclose(emb, first, atol=1e-5) and hidden.shape == (10, 1, 16)
    import sentence_transformers

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", None)  # would fail if used again
    assert np.array_equal(teacher_labels(teacher, sentences, 4, "cpu")[0], first)


def test_profile_measures_the_bundle(tmp_path: Path, bundle: Path) -> None:
    ctx = _ctx(tmp_path, Artifact("onnx", bundle, "k"), FakeEvaluator([]))
    result = profile.run(ProfileStage(type="profile", sentences=8, warmup=1, batch_size=4), ctx)
    m = result.metrics
    assert result.passthrough
    assert 0 < m["latency_ms_p50"] <= m["latency_ms_p90"] <= m["latency_ms_p99"]
    assert m["throughput_per_s"] > 0 and m["size_mb"] > 0 and m["host"]["cores"] >= 1
