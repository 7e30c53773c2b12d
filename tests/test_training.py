"""Distillation training on tiny models: every loss, resume mid-training, best-checkpoint selection, DDP."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgedistill.recipe import DistillStage, LossSpec, StudentConfig
from edgedistill.tasks.embedding.distill import build_student, trim_vocabulary
from edgedistill.tasks.embedding.training import TrainJob, train
from tests.tiny import build_st_model, make_sentences, write_snli


def _job(tmp_path: Path, world: dict, *, losses=None, dev=False, dev_retrieval=False, **changes) -> TrainJob:
    """A training job over a 32-d tiny teacher's labels for a 16-d student projected to 32-d (``dev``: with STS-b
    dev pairs; ``dev_retrieval``: with a dev retrieval set; ``changes``: DistillStage fields)."""
    from edgedistill.tasks.embedding.labelling import teacher_labels

    hidden_layers = sorted({t for spec in (losses or []) if spec.type == "hidden" for t in spec.layer_map.values()})
    sentences = make_sentences(64, seed=11)
    labels, hidden = teacher_labels(world["teacher"], sentences, 16, "cpu", hidden_layers=hidden_layers)
    settings = dict(student=StudentConfig(init=str(world["student"]), projection_sentences=64),
                    losses=losses or [LossSpec(type="mse")], batch_size=16, epochs=1, learning_rate=1e-3,
                    eval_steps=0, checkpoint_steps=0)
    cfg = DistillStage(type="distill", **{**settings, **changes})
    student, _ = build_student(cfg.student, 32, labels.shape[1], sentences, labels, "cpu")
    student.save(str(tmp_path / "init"))
    (tmp_path / "s.txt").write_text("\n".join(sentences))
    np.save(tmp_path / "labels.npy", labels)
    if hidden is not None:
        np.save(tmp_path / "hidden.npy", hidden)
    triplets_file = None
    if cfg.triplets:
        np.save(tmp_path / "triplets.npy", np.arange(30).reshape(10, 3))
        triplets_file = str(tmp_path / "triplets.npy")
    sts = {"first": sentences[:20], "second": sentences[20:40], "scores": list(np.linspace(0, 5, 20))}
    retrieval = None
    if dev_retrieval:  # 6 queries, each relevant to one of 12 documents; teacher labels of queries then corpus
        dev_sentences = make_sentences(18, seed=12)
        dev_labels, _ = teacher_labels(world["teacher"], dev_sentences, 16, "cpu")
        np.save(tmp_path / "dev-labels.npy", dev_labels)
        retrieval = {"queries": dev_sentences[:6], "corpus": dev_sentences[6:], "relevant": [[i] for i in range(6)],
                     "labels_file": str(tmp_path / "dev-labels.npy")}
    return TrainJob(student_dir=str(tmp_path / "init"), output_dir=str(tmp_path / "out"),
                    checkpoint_dir=str(tmp_path / "ckpt"), sentences_file=str(tmp_path / "s.txt"),
                    labels_file=str(tmp_path / "labels.npy"), config=cfg.model_dump(), seed=0, device="cpu",
                    hidden_file=str(tmp_path / "hidden.npy") if hidden is not None else None,
                    triplets_file=triplets_file, teacher_dir=str(world["teacher"]), dev_sts=sts if dev else None,
                    dev_retrieval=retrieval)


@pytest.mark.parametrize("losses", [
    [LossSpec(type="mse")],
    [LossSpec(type="cosine"), LossSpec(type="kl", temperature=0.1, temperature_end=0.05, weight=0.5)],
    [LossSpec(type="mse"), LossSpec(type="hidden", layer_map={0: 0, 2: 1})],
    [LossSpec(type="mse"), LossSpec(type="margin_mse"), LossSpec(type="mnrl", weight=0.1)],
    [LossSpec(type="mse", weight=0.2), LossSpec(type="cross_kl", bank=24)],
], ids=["mse", "cosine+kl", "hidden", "pairs", "cross_kl+bank"])
def test_each_loss_trains(tmp_path: Path, tiny_world: dict, losses: list) -> None:
    triplets = 10 if any(spec.type in ("margin_mse", "mnrl") for spec in losses) else 0
    job = _job(tmp_path, tiny_world, losses=losses, epochs=3, triplets=triplets)
    stats = train(job)
    assert stats["train_steps"] == 12
    assert set(stats["final_loss_terms"]) == {spec.type for spec in losses}
    assert all(np.isfinite(v) for v in stats["final_loss_terms"].values())
    assert (Path(job.output_dir) / "modules.json").is_file()


@pytest.mark.parametrize("dropout", [None, 0.0], ids=["checkpoint's", "off"])
def test_student_dropout_setting_reaches_every_dropout_layer(tmp_path: Path, tiny_world: dict, dropout: float | None,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[float] = []
    real_forward = torch.nn.Dropout.forward

    def recording(self: torch.nn.Dropout, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            seen.append(self.p)
        return real_forward(self, x)

    monkeypatch.setattr(torch.nn.Dropout, "forward", recording)
    student = StudentConfig(init=str(tiny_world["student"]), projection_sentences=64, dropout=dropout)
    train(_job(tmp_path, tiny_world, student=student))
    assert seen, "no dropout layer ran while training"
    assert (set(seen) == {0.0}) if dropout == 0.0 else any(p > 0 for p in seen)


def test_mse_decreases(tmp_path: Path, tiny_world: dict) -> None:
    from sentence_transformers import SentenceTransformer

    job = _job(tmp_path, tiny_world, epochs=5)
    labels = np.load(job.labels_file)
    sentences = Path(job.sentences_file).read_text().split("\n")

    def mse(path: str) -> float:
        return float(((SentenceTransformer(path).encode(sentences) - labels) ** 2).mean())

    before = mse(job.student_dir)
    train(job)
    assert mse(job.output_dir) < 0.8 * before


def test_attention_distillation_needs_a_shared_tokenizer(tmp_path: Path) -> None:
    teacher = build_st_model(tmp_path / "teacher", family="bert", hidden=16, layers=4)
    world = {"teacher": teacher, "student": teacher}
    job = _job(tmp_path, world, losses=[LossSpec(type="mse"), LossSpec(type="attention", layer_map={0: 1, 1: 3})],
               student=StudentConfig(init=str(teacher), layers=[0, 3]))
    job.student_dir = str(tmp_path / "student")
    student, _ = build_student(StudentConfig(init=str(teacher), layers=[0, 3]), 32, 16,
                               Path(job.sentences_file).read_text().split("\n"), np.load(job.labels_file), "cpu")
    student.save(job.student_dir)
    stats = train(job)
    assert stats["final_loss_terms"]["attention"] > 0


def test_resume_mid_training(tmp_path: Path, tiny_world: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = train(_job(tmp_path / "a", tiny_world, epochs=3, checkpoint_steps=4))
    job = _job(tmp_path / "b", tiny_world, epochs=3, checkpoint_steps=4)
    real_step = torch.optim.AdamW.step
    calls = {"n": 0}

    def dying_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        train(job)
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    assert (Path(job.checkpoint_dir) / "latest.pt").is_file()
    resumed = train(job)
    assert resumed["train_steps"] == reference["train_steps"] == 12
    from sentence_transformers import SentenceTransformer

    sentences = make_sentences(8, seed=99)
    a = SentenceTransformer(str(tmp_path / "a" / "out")).encode(sentences)
    b = SentenceTransformer(job.output_dir).encode(sentences)
    assert np.abs(a - b).max() < 0.02  # dropout masks differ after the restart; the weights barely do


def test_best_checkpoint_is_kept(tmp_path: Path, tiny_world: dict) -> None:
    stats = train(_job(tmp_path, tiny_world, dev=True, epochs=3, eval_steps=2, validation_sentences=8))
    steps = [h["step"] for h in stats["history"]]
    assert steps[0] == 0 and steps[-1] == 12  # 56 training sentences (8 held out): 4 batches of 16 x 3 epochs
    assert all(-1 <= h["val_teacher_cosine"] <= 1 for h in stats["history"])
    best = max(stats["history"], key=lambda h: h["sts_dev"])
    assert stats["best_step"] == best["step"] and stats["best_sts_dev"] == pytest.approx(best["sts_dev"])


def test_dev_objective_selects_under_the_sts_floor(tmp_path: Path, tiny_world: dict) -> None:
    from edgedistill.stages.configs import DevConfig

    job = _job(tmp_path, tiny_world, dev=True, dev_retrieval=True, epochs=3, eval_steps=2,
               projection_learning_rate=1e-2)
    job.config["dev"] = DevConfig(objective="asymmetric", sts_floor=0.5, queries=6).model_dump()
    stats = train(job)
    history = stats["history"]
    for h in history:
        assert h["objective"] == pytest.approx(h["dev_cross_ndcg10"] / 100 + h["dev_teacher_cosine"])
        assert h["qualifies"] == (h["sts_dev"] >= history[0]["sts_dev"] - 0.5)
    best = max((h for h in history if h["qualifies"]), key=lambda h: h["objective"])
    assert stats["best_step"] == best["step"] and stats["objective_name"] == "asymmetric"
    assert stats["best_objective"] == pytest.approx(best["objective"])
    if stats["best_step"]:
        for low, high in stats["dev_gain_ci95"].values():
            assert low <= high


def test_projection_learning_rate_is_its_own_group(tiny_world: dict) -> None:
    from edgedistill.tasks.embedding.losses import build_loss
    from edgedistill.tasks.embedding.training import StudentForward, parameter_groups

    sentences = make_sentences(32, seed=5)
    cfg = DistillStage(type="distill", student=StudentConfig(init=str(tiny_world["student"]), projection="random"),
                       projection_learning_rate=5e-3, learning_rate=1e-4)
    student, _ = build_student(cfg.student, 32, 32, sentences, np.zeros((32, 32), np.float32), "cpu")
    module = StudentForward(student, build_loss(cfg.losses, 32, 16, 16))
    groups = parameter_groups(module, cfg)
    fast = [g for g in groups if g["lr"] == 5e-3]
    assert sum(p.numel() for g in fast for p in g["params"]) == 16 * 32 + 32  # the 16 -> 32 Dense only
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in module.parameters())


def test_ddp_two_processes_match_single_process(tmp_path: Path) -> None:
    """torchrun with 2 CPU processes (gloo) reproduces the single-process model (same global batches)."""
    world = {"teacher": build_st_model(tmp_path / "t", family="mpnet", hidden=32, layers=1, dropout=0.0),
             "student": build_st_model(tmp_path / "s", family="bert", hidden=16, layers=2, dropout=0.0)}
    single = _job(tmp_path / "single", world, epochs=2)
    train(single)
    ddp = _job(tmp_path / "ddp", world, epochs=2)
    job_file = tmp_path / "ddp" / "job.json"
    ddp.save(job_file)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "edgedistill.tasks.embedding.training", str(job_file)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert '"processes": 2' in (Path(ddp.output_dir) / "train_stats.json").read_text()
    from sentence_transformers import SentenceTransformer

    sentences = make_sentences(16, seed=42)
    a = SentenceTransformer(single.output_dir).encode(sentences)
    b = SentenceTransformer(ddp.output_dir).encode(sentences)
    init = SentenceTransformer(single.student_dir).encode(sentences)
    assert np.abs(a - init).max() > 1e-2  # training moved the model...
    assert np.abs(a - b).max() < 1e-4  # ...and DDP moved it the same way


def test_trim_vocabulary_keeps_tokenisation(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(build_st_model(tmp_path / "m", family="bert", hidden=16, layers=1)))
    corpus = make_sentences(30, seed=4)
    before_tokens = [model[0].tokenizer.tokenize(s) for s in corpus]
    before = model.encode(corpus)
    info = trim_vocabulary(model, corpus)
    assert info["vocab_after"] < info["vocab_before"] and info["vocab_params_saved"] > 0
    assert [model[0].tokenizer.tokenize(s) for s in corpus] == before_tokens
    assert np.allclose(model.encode(corpus), before, atol=1e-5)
    model.save(str(tmp_path / "trimmed"))
    reloaded = SentenceTransformer(str(tmp_path / "trimmed"))
    assert np.allclose(reloaded.encode(corpus), before, atol=1e-5)


def test_dev_retrieval_set_from_snli_training_pairs(tmp_path: Path) -> None:
    from edgedistill.catalog import sentence_key
    from edgedistill.tasks.embedding.distill import build_dev_retrieval

    folder = write_snli(tmp_path / "snli")
    dev = build_dev_retrieval(str(folder), 5, 12, seed=0, exclude=set())
    assert len(dev.queries) == 5 and len(dev.corpus) == 12
    for query, relevant in zip(dev.queries, dev.relevant, strict=True):
        assert relevant and all(dev.corpus[i] == " ".join(query.split()[:3]) + "." for i in relevant)
    blocked = build_dev_retrieval(str(folder), 40, 80, seed=0, exclude={sentence_key(dev.queries[0])})
    assert dev.queries[0] not in blocked.queries


def test_triplets_from_snli(tmp_path: Path) -> None:
    from edgedistill.tasks.embedding.distill import load_triplets

    folder = write_snli(tmp_path / "snli")
    triplets = load_triplets(str(folder), 10, seed=0, exclude=set())
    assert len(triplets) == 10 and all(len(set(t)) == 3 for t in triplets)
    excluded = load_triplets(str(folder), 100, seed=0, exclude={triplets[0][0]})
    assert triplets[0][0] not in {t[0] for t in excluded}


def test_distill_stage_with_a_dev_retrieval_set_keeps_dev_sentences_out_of_training(
        tmp_path: Path, tiny_world: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from edgedistill.pipeline import run_recipe
    from edgedistill.recipe import load_recipe
    from tests.conftest import tiny_recipe, write_recipe

    monkeypatch.setenv("EDGEDISTILL_CACHE", str(tmp_path / "cache"))
    snli = write_snli(tmp_path / "snli")
    rows = [json.loads(line) for line in (snli / "snli_1.0_train_subset.jsonl").read_text().splitlines()]
    train = tmp_path / "train.txt"  # the training pool holds every SNLI sentence, dev ones included
    train.write_text("\n".join(dict.fromkeys(s for r in rows for s in (r["sentence1"], r["sentence2"]))) + "\n")
    recipe = tiny_recipe(tiny_world, data={"train": str(train), "seed": 0})
    stage = recipe["stages"][0]
    recipe["stages"] = [{**stage, "student": {**stage["student"], "projection_fit_epochs": 3},
                         "losses": [{"type": "mse", "weight": 0.2}, {"type": "cross_kl"}],
                         "train_sentences": 1000, "eval_steps": 1,
                         "dev": {"objective": "asymmetric", "sts_floor": 100.0, "queries": 6, "corpus": 20,
                                 "source": str(snli)}}]
    record = run_recipe(load_recipe(write_recipe(tmp_path / "r.yaml", recipe)), tmp_path / "runs")[0]
    m = record.metrics
    assert m["dev_queries"] == 6 and m["dev_corpus"] == 20
    # The projection was fitted before training, and the student measured before and after that fit.
    assert m["projection_fit_loss_last"] < m["projection_fit_loss_first"]
    assert m["history"][0]["step"] == -1 and m["history"][1]["step"] == 0  # measured before and after the fit
    assert set(m["after_projection_fit"]) == set(m["before_training"]) and m["after_projection_fit"] != m["before_training"]
    from edgedistill.catalog import sentence_key
    from edgedistill.tasks.embedding.distill import build_dev_retrieval

    dev = build_dev_retrieval(str(snli), 6, 20, seed=0, exclude=set())
    dev_keys = {sentence_key(s) for s in [*dev.queries, *dev.corpus]}
    kept = [s for s in train.read_text().splitlines() if sentence_key(s) not in dev_keys]
    assert len(dev_keys) == 26 and m["train_sentences"] == len(kept) < train.read_text().count("\n")
    assert all("dev_cross_ndcg10" in h and "dev_teacher_cosine" in h for h in m["history"])
    best = max(m["history"], key=lambda h: h["objective"])
    assert m["best_step"] == best["step"] and m["objective_name"] == "asymmetric"
