"""The classifier task on tiny models and data built in code: every loss, the chain end to end (finetune, distill,
export gate, INT8), the classify runtime and command, resume after a SIGKILL, and bad input (exit 2, naming the
field, nothing lost)."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from click.testing import CliRunner

from edgedistill.cli import main
from edgedistill.errors import RecipeError
from edgedistill.tasks.classifier.config import ClassifierDistillStage, ClassifierLoss
from edgedistill.tasks.classifier.losses import DistillLoss, LayerBatch, align, canonical_tokens, kl_loss
from tests.tiny import build_seqcls_model, build_st_model, make_labelled

NAMES = ["animals", "music", "water"]


def _write_split(folder: Path, split: str, n: int, seed: int, pairs: bool, names: list[str] = NAMES) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{split}.jsonl").open("w") as f:
        for x, y in make_labelled(n, seed=seed, pairs=pairs):
            row = {"text": x[0], "text_pair": x[1]} if pairs else {"text": x}
            f.write(json.dumps({**row, "label": names[y]}) + "\n")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("classifier")
    for pairs in (False, True):
        folder = root / ("pairs" if pairs else "single")
        _write_split(folder, "train", 300, 1, pairs)
        _write_split(folder, "test", 60, 2, pairs)
    return {"root": root, "single": root / "single", "pairs": root / "pairs",
            "encoder": build_st_model(root / "encoder", family="mpnet", hidden=32, layers=2, seed=0),
            "student": build_st_model(root / "student", family="bert", hidden=16, layers=2, heads=2, seed=1),
            "two_way": build_seqcls_model(root / "two-way", num_labels=2, labels=["a", "b"])}


def recipe(world: dict[str, Path], pairs: bool = True, **changes: Any) -> dict:
    data = world["pairs" if pairs else "single"]
    columns = {"text_pair_column": "text_pair"} if pairs else {}
    out = {
        "name": "tiny-cls", "task": "classifier", "teacher": str(world["encoder"]), "threads": 1,
        "data": {"train": str(data), "examples": 240, "dev_examples": 30, **columns},
        "evaluation": {"test": str(data), "latency_examples": 5, "batch_size": 32, **columns},
        "stages": [
            {"type": "finetune", "epochs": 4, "batch_size": 16, "learning_rate": 3e-3, "checkpoint_steps": 0},
            {"type": "distill", "student": {"init": str(world["student"])}, "epochs": 4, "batch_size": 16,
             "learning_rate": 3e-3, "checkpoint_steps": 5, "alpha": 0.5, "unlabelled_examples": 20,
             "losses": [{"type": "kl", "temperature": 4, "temperature_end": 2}, {"type": "ce"},
                        {"type": "hidden", "layer_map": {0: 0, 1: 1}}, {"type": "attention", "layer_map": {1: 1}},
                        {"type": "embedding", "weight": 0.5}]},
            {"type": "export", "exporter": "torchscript"},
            {"type": "quantize", "max_drop": 0.5, "on_fail": "warn",
             "search": {"sensitivity": "off", "latency_sentences": 8, "latency_repeats": 1}},
        ],
    }
    out.update(changes)
    return out


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# -- losses ----------------------------------------------------------------------------------------------
def test_kl_is_scaled_by_t_squared_and_zero_for_equal_logits() -> None:
    student, teacher = torch.randn(8, 3), torch.randn(8, 3)
    p = torch.softmax(teacher / 4, -1)
    manual = (p * (torch.log(p) - torch.log_softmax(student / 4, -1))).sum(-1).mean() * 16
    torch.testing.assert_close(kl_loss(student, teacher, 4.0), manual)
    assert float(kl_loss(teacher, teacher, 2.0)) == pytest.approx(0.0, abs=1e-6)


def test_loss_terms_weights_schedule_and_unlabelled_rows() -> None:
    cfg = ClassifierDistillStage.model_validate({
        "type": "distill", "student": {"init": "x"}, "alpha": 0.8,
        "losses": [{"type": "kl", "temperature": 4, "temperature_end": 1}, {"type": "ce", "weight": 5}]})
    loss = DistillLoss(cfg.losses, [cfg.weight(x) for x in cfg.losses], 8, 8)
    assert loss.weights == [0.8, pytest.approx(0.2)]
    student, teacher = torch.randn(4, 3), torch.randn(4, 3)
    unlabelled = torch.tensor([-1, -1, -1, -1])
    total = loss(student, teacher, unlabelled, progress=1.0)  # T = 1 at the end; no labelled row: ce = 0
    assert loss.last["ce"] == 0.0
    torch.testing.assert_close(total, 0.8 * kl_loss(student, teacher, 1.0))
    labels = torch.tensor([0, 1, -1, 2])
    loss(student, teacher, labels, progress=0.0)
    keep = labels >= 0
    assert loss.last["ce"] == pytest.approx(float(torch.nn.functional.cross_entropy(student[keep], labels[keep])))


def _layer_batch(s_width: int, t_width: int, s_heads: int, t_heads: int) -> LayerBatch:
    s_hidden = tuple(torch.randn(2, 5, s_width, requires_grad=True) for _ in range(3))
    t_hidden = tuple(torch.randn(2, 6, t_width) for _ in range(3))
    s_att = tuple(torch.softmax(torch.randn(2, s_heads, 5, 5, requires_grad=True), -1) for _ in range(2))
    t_att = tuple(torch.softmax(torch.randn(2, t_heads, 6, 6), -1) for _ in range(2))
    alignment = [([0, 1, 2, 3, 4], [0, 1, 2, 4, 5]), ([0, 1, 2], [0, 1, 2])]
    return LayerBatch(s_hidden, t_hidden, s_att, t_att, alignment)


def test_hidden_attention_embedding_losses_project_and_average_heads() -> None:
    specs = [ClassifierLoss(type="hidden", layer_map={0: 1, 1: 0}), ClassifierLoss(type="attention", layer_map={1: 1}),
             ClassifierLoss(type="embedding")]
    loss = DistillLoss(specs, [1.0, 1.0, 1.0], student_width=4, teacher_width=6)
    assert isinstance(loss.projections["hidden_0"], torch.nn.Linear)  # widths differ: learned projection
    assert loss.projections["embedding"].weight.shape == (6, 4)
    batch = _layer_batch(4, 6, s_heads=2, t_heads=3)  # head counts differ: head-averaged maps
    total = loss(torch.randn(2, 3), torch.randn(2, 3), torch.tensor([0, 1]), 0.5, batch)
    assert set(loss.last) == {"hidden", "attention", "embedding"} and all(v > 0 for v in loss.last.values())
    total.backward()
    assert loss.projections["hidden_0"].weight.grad is not None and batch.student_hidden[1].grad is not None
    # equal widths: no projection; identical aligned internals: zero loss
    identity = [ClassifierLoss(type="hidden", layer_map={0: 0, 1: 1}),
                ClassifierLoss(type="attention", layer_map={1: 1}), ClassifierLoss(type="embedding")]
    same = DistillLoss(identity, [1.0, 1.0, 1.0], 4, 4)
    assert isinstance(same.projections["hidden_0"], torch.nn.Identity)
    h = tuple(torch.randn(1, 3, 4) for _ in range(3))
    a = tuple(torch.softmax(torch.randn(1, 2, 3, 3), -1) for _ in range(2))
    batch = LayerBatch(h, h, a, a, [([0, 1, 2], [0, 1, 2])])
    assert float(same(torch.zeros(1, 3), torch.zeros(1, 3), torch.tensor([-1]), 0.0, batch)) == pytest.approx(0.0)


def test_checkpoint_selection_prefers_agreement_and_breaks_ties_on_accuracy() -> None:
    import numpy as np

    from edgedistill.tasks.classifier.train import agreement_score

    teacher, labels = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])
    follows_teacher = agreement_score(np.array([0, 0, 1, 1]), teacher, labels)   # agreement 1.0, accuracy 0.75
    follows_labels = agreement_score(np.array([0, 1, 1, 1]), teacher, labels)    # agreement 0.75, accuracy 1.0
    assert follows_teacher > follows_labels
    tie_better = agreement_score(np.array([0, 1, 1, 0]), teacher, labels)         # agreement 0.5, accuracy 0.75
    tie_worse = agreement_score(np.array([1, 0, 1, 0]), teacher, labels)          # agreement 0.5, accuracy 0.25
    assert tie_worse < tie_better < 0.5 + 1 / len(labels)


def test_tokens_of_an_mpnet_teacher_and_a_bert_student_align(world: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    teacher = AutoTokenizer.from_pretrained(str(world["encoder"]))
    student = AutoTokenizer.from_pretrained(str(world["student"]))
    t_ids = teacher("a dog runs", "the cat")["input_ids"]
    s_ids = student("a dog runs", "the cat")["input_ids"]
    assert len(t_ids) == len(s_ids) + 1  # <s> a </s></s> b </s> vs [CLS] a [SEP] b [SEP]
    s_idx, t_idx = align(canonical_tokens(student, s_ids), canonical_tokens(teacher, t_ids))
    assert s_idx == list(range(len(s_ids)))
    assert [canonical_tokens(teacher, t_ids)[i] for i in t_idx] == canonical_tokens(student, s_ids)


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="needs layer_map"):
        ClassifierLoss(type="attention")
    with pytest.raises(ValueError, match="alpha mixes kl and ce"):
        ClassifierDistillStage.model_validate({"type": "distill", "student": {"init": "x"}, "alpha": 0.5,
                                               "losses": [{"type": "kl"}]})


# -- the chain ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pair_run(world: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from edgedistill.pipeline import run_recipe
    from edgedistill.recipe import load_recipe

    root = tmp_path_factory.mktemp("pair-run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEDISTILL_CACHE", str(root / "cache"))
        path = write(root / "r.yaml", recipe(world))
        records = run_recipe(load_recipe(path), root / "runs")
    return {"root": root, "recipe": path, "records": records, "run_dir": root / "runs" / "tiny-cls", "world": world}


def test_pair_chain_end_to_end(pair_run: dict[str, Any]) -> None:
    records = pair_run["records"]
    assert [r.type for r in records] == ["finetune", "distill", "export", "quantize"]
    teacher = records[0].evaluation
    assert teacher["accuracy"] > 50 and teacher["agreement"] == 100 and teacher["kl_to_teacher"] < 1e-6  # chance: 33
    student = records[1].evaluation
    assert {"accuracy", "macro_f1", "agreement", "kl_to_teacher", "ece", "latency_ms_p50"} <= set(student)
    assert 0 <= student["agreement"] <= 100 and student["kl_to_teacher"] >= 0  # a tiny student learns little
    assert records[1].metrics["unlabelled_examples"] == 20 and records[1].metrics["select_on"] == "agreement"
    assert set(records[1].metrics["final_loss_terms"]) == {"kl", "ce", "hidden", "attention", "embedding"}
    export = records[2]
    assert export.metrics["validation"]["max_abs_diff"] < 1e-4
    assert math.isclose(export.evaluation["accuracy"], student["accuracy"], abs_tol=1e-6)
    quantize = records[3]
    manifest = json.loads((quantize.artifact.path / "manifest.json").read_text())
    assert manifest["quantization"]["weight_type"] == "int8" and manifest["labels"] == NAMES
    report = (pair_run["run_dir"] / "report.md").read_text()
    assert "| finetune |" in report and "agreement" in report and "KL to teacher" in report


def test_bundle_predicts_label_names_without_torch(pair_run: dict[str, Any]) -> None:
    bundle = pair_run["run_dir"] / "bundle"
    code = ("import sys, json; from edgedistill.runtime import load; m = load(sys.argv[1]); "
            "p = m.predict([('a dog dog dog.', 'a dog dog.')]); "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules; print(json.dumps(p))")
    out = subprocess.run([sys.executable, "-c", code, str(bundle)], capture_output=True, text=True, check=True)
    (prediction,) = json.loads(out.stdout)
    assert prediction["label"] in NAMES and math.isclose(sum(prediction["scores"].values()), 1.0, abs_tol=1e-5)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["task"] == "classifier" and manifest["text_inputs"] == "text_pair"
    assert manifest["activation"] == "softmax" and manifest["output"] == "logits"

    result = CliRunner().invoke(main, ["classify", str(bundle), "--pair", "a dog.", "a dog.", "--format", "jsonl"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.splitlines()[0])["label"] in NAMES
    single = CliRunner().invoke(main, ["classify", str(bundle), "just one text"])
    assert single.exit_code == 1 and "pass --pair" in single.output
    embed = CliRunner().invoke(main, ["embed", str(bundle), "a text"])
    assert embed.exit_code != 0 and "classifier bundle" in embed.output


def test_profile_times_the_teacher_classifier_beside_the_student(pair_run: dict[str, Any], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The fine-tuned teacher and the PyTorch student are sequence-classification folders: the profile stage times
    them (logits out) beside the ONNX artifacts, so the report's speed-ups are side-by-side ratios."""
    import shutil

    from edgedistill.pipeline import run_recipe
    from edgedistill.recipe import load_recipe

    runs = tmp_path / "runs"
    shutil.copytree(pair_run["run_dir"], runs / "tiny-cls", symlinks=True)
    data = recipe(pair_run["world"])
    data["stages"].append({"type": "profile", "sentences": 4, "warmup": 1, "repeats": 1, "min_repeats": 1,
                           "threads": [1], "batch_sizes": [1], "seq_lengths": [8], "cell_repeats": 1,
                           "cell_seconds": 0.2})
    monkeypatch.setenv("EDGEDISTILL_CACHE", str(pair_run["root"] / "cache"))
    records = run_recipe(load_recipe(write(tmp_path / "r.yaml", data)), runs)
    measured = {m["artifact"] for m in records[-1].metrics["measurements"]}
    assert "teacher" in measured and any(name.startswith("01-distill") for name in measured), measured
    report = json.loads((runs / "tiny-cls" / "report.json").read_text())
    final = next(r for r in report["rows"] if r["stage"] == "quantize")
    assert final["latency_source"] == "profile" and final["speedup"] > 0


def test_resume_after_a_kill_mid_distill(pair_run: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    import shutil

    from edgedistill.integrity import KILL_ENV

    runs = tmp_path / "runs"
    run_dir = runs / "tiny-cls"
    run_dir.mkdir(parents=True)
    (finetuned,) = pair_run["run_dir"].glob("00-finetune-*")
    shutil.copytree(finetuned, run_dir / finetuned.name)
    cache = pair_run["root"] / "cache"
    env = {**os.environ, KILL_ENV: ".ckpt-01-distill-*/latest.pt", "EDGEDISTILL_CACHE": str(cache),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "edgedistill.cli", "run", str(pair_run["recipe"]), "--runs-dir", str(runs)]
    killed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert list(run_dir.glob(".ckpt-01-distill-*/latest.pt")) and not list(run_dir.glob("01-distill-*"))

    monkeypatch.setenv("EDGEDISTILL_CACHE", str(cache))
    with caplog.at_level(logging.INFO, logger="edgedistill"):
        result = CliRunner().invoke(main, ["run", str(pair_run["recipe"]), "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    assert "distilling the student: resuming from step 5/" in caplog.text
    assert "stage 0 finetune: finished earlier, reusing" in caplog.text
    (resumed,) = run_dir.glob("01-distill-*")
    (reference,) = pair_run["run_dir"].glob("01-distill-*")
    got = json.loads((resumed / "metrics.json").read_text())["evaluation"]
    want = json.loads((reference / "metrics.json").read_text())["evaluation"]
    # Resumed from the checkpoint and finished where the uninterrupted run did: the new head is seeded, the batches
    # and dropout masks replay. Thread counts differ between the two runs (1 vs the default), so float sums may too.
    assert set(got) == set(want)
    for key, value in want.items():
        if isinstance(value, float) and not key.startswith("latency"):
            assert abs(got[key] - value) < 1e-3, (key, got[key], value)


def test_single_texts_with_a_layer_cut_student_and_probabilities_in_the_graph(
        world: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgedistill.pipeline import run_recipe
    from edgedistill.recipe import load_recipe
    from edgedistill.runtime import load

    monkeypatch.setenv("EDGEDISTILL_CACHE", str(tmp_path / "cache"))
    r = recipe(world, pairs=False)
    r["stages"][1].update(student={"init": "teacher", "layers": [1]}, alpha=None, unlabelled_examples=0,
                          losses=[{"type": "kl"}, {"type": "hidden", "layer_map": {0: 1}},
                                  {"type": "attention", "layer_map": {0: 1}}])
    r["stages"] = r["stages"][:3]
    r["stages"][2]["probabilities"] = True
    records = run_recipe(load_recipe(write(tmp_path / "r.yaml", r)), tmp_path / "runs")
    assert records[1].metrics["student_layers"] == 1
    assert records[2].metrics["output"] == "probabilities"
    model = load(tmp_path / "runs" / "tiny-cls" / "bundle")
    probs = model.probabilities(["a dog dog dog.", "music music guitar."])
    assert probs.shape == (2, 3) and abs(float(probs.sum()) - 2.0) < 1e-4
    with pytest.raises(Exception, match="single texts"):
        model.predict([("a", "b")])


# -- bad input ---------------------------------------------------------------------------------------------
def _run_cli(path: Path, runs: Path) -> Any:
    return CliRunner().invoke(main, ["run", str(path), "--runs-dir", str(runs)])


def test_labels_outside_the_declared_classes(world: dict[str, Path], tmp_path: Path) -> None:
    r = recipe(world)
    r["data"]["labels"] = ["animals", "music"]
    result = _run_cli(write(tmp_path / "r.yaml", r), tmp_path / "runs")
    assert result.exit_code == 2
    assert "data.labels" in result.output and "'water'" in result.output


def test_missing_label_column(world: dict[str, Path], tmp_path: Path) -> None:
    r = recipe(world)
    r["data"]["label_column"] = "gold"
    result = _run_cli(write(tmp_path / "r.yaml", r), tmp_path / "runs")
    assert result.exit_code == 2 and "data.label_column" in result.output and "'gold'" in result.output


def test_teacher_with_another_label_count(world: dict[str, Path], tmp_path: Path) -> None:
    r = recipe(world, teacher=str(world["two_way"]))
    r["stages"] = r["stages"][1:2]  # the user's own classifier as the teacher, no finetune
    result = _run_cli(write(tmp_path / "r.yaml", r), tmp_path / "runs")
    assert result.exit_code == 2 and result.output.count("teacher:") >= 1, result.output


def test_embedding_model_as_teacher_without_finetune(world: dict[str, Path], tmp_path: Path) -> None:
    r = recipe(world)
    r["stages"] = r["stages"][1:2]
    result = _run_cli(write(tmp_path / "r.yaml", r), tmp_path / "runs")
    assert result.exit_code == 2 and "teacher:" in result.output and "embedding model" in result.output


def test_student_head_of_the_wrong_size_keeps_the_finetuned_teacher(world: dict[str, Path], tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEDISTILL_CACHE", str(tmp_path / "cache"))
    r = recipe(world)
    r["stages"][0].update(epochs=1)
    r["stages"][1]["student"] = {"init": str(world["two_way"])}
    result = _run_cli(write(tmp_path / "r.yaml", r), tmp_path / "runs")
    assert result.exit_code == 2
    assert "stages.1.student.init" in result.output and "2-way head but the data has 3" in result.output
    assert list((tmp_path / "runs" / "tiny-cls").glob("00-finetune-*/artifact/config.json"))  # nothing lost


def test_recipe_section_errors(world: dict[str, Path], tmp_path: Path) -> None:
    from edgedistill.recipe import load_recipe

    r = recipe(world)
    r["stages"][1]["losses"] = [{"type": "mse"}]
    with pytest.raises(RecipeError, match=r"stages\.1\.losses\.0\.type"):
        load_recipe(write(tmp_path / "r.yaml", r))


@pytest.mark.parametrize("name", ["snli-classifier", "spam-classifier"])
def test_shipped_classifier_recipes_validate(name: str) -> None:
    from edgedistill.recipe import load_recipe

    recipe = load_recipe(name)
    assert recipe.task == "classifier"
    assert [s.type for s in recipe.stages] == ["finetune", "distill", "export", "quantize", "profile"]
