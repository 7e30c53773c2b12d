"""The reranker task on tiny cross-encoders built in code: finetune, both distillation losses, export gate, INT8,
the rank runtime and command, held-out reranking metrics, bad input (exit 2), resume after a kill."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgedistill.cli import main
from edgedistill.errors import RecipeError
from edgedistill.integrity import KILL_ENV
from edgedistill.pipeline import run_recipe
from edgedistill.recipe import load_recipe
from edgedistill.tasks.reranker.evaluate import rank_agreement, ranking_metrics
from tests.conftest import write_recipe
from tests.tiny import build_st_model, write_retrieval, write_snli

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rerank-world")
    return {
        "encoder": build_st_model(root / "encoder", family="mpnet", hidden=32, layers=2, seed=0),
        "student": build_st_model(root / "student", family="bert", hidden=16, layers=3, seed=1),
        "snli": write_snli(root / "snli", n=40, seed=11),
        "retrieval": write_retrieval(root / "retrieval"),
    }


def rerank_recipe(world: dict[str, Path], **changes: object) -> dict:
    recipe = {
        "name": "tiny-rerank", "task": "reranker", "teacher": str(world["encoder"]),
        "data": {"pairs": str(world["snli"]), "seed": 0},
        "evaluation": {"retrieval": str(world["retrieval"]), "queries": 12, "top_k": 8, "latency_queries": 3,
                       "latency_candidates": 4, "batch_size": 16},
        "stages": [
            {"type": "finetune", "pairs": 60, "dev_queries": 5, "dev_corpus": 10, "dev_top_k": 6, "batch_size": 8,
             "learning_rate": 1e-3, "checkpoint_steps": 2},
            {"type": "distill", "student": {"init": str(world["student"]), "layers": [0, 2]},
             "losses": [{"type": "mse"}, {"type": "margin_mse", "weight": 0.5}], "pairs": 60, "triplets": 20,
             "dev_queries": 5, "batch_size": 8, "learning_rate": 1e-3, "checkpoint_steps": 2},
            {"type": "export", "exporter": "torchscript"},
            {"type": "quantize", "max_drop": 0.5, "on_fail": "warn", "budget_metrics": ["rerank_ndcg10"],
             "search": {"sensitivity": "off", "latency_sentences": 8, "latency_repeats": 1}},
            {"type": "profile", "candidates": [2, 4], "queries": 2, "warmup": 1},
        ],
        "threads": 1,
    }
    recipe.update(changes)
    return recipe


@pytest.fixture(scope="module")
def chain(world: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One full run (finetune -> distill -> export -> quantize -> profile), its cache shared by later tests."""
    root = tmp_path_factory.mktemp("rerank-chain")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEDISTILL_CACHE", str(root / "cache"))
        path = write_recipe(root / "r.yaml", rerank_recipe(world))
        records = run_recipe(load_recipe(path), root / "runs")
    return {"root": root, "recipe": path, "records": records, "run_dir": root / "runs" / "tiny-rerank",
            "cache": root / "cache"}


def test_ranking_metrics_by_hand() -> None:
    candidates = np.array([[5, 7, 9], [1, 2, 3]])
    scores = np.array([[0.1, 0.9, 0.5], [3.0, 2.0, 1.0]])
    found = ranking_metrics(candidates, scores, [{9}, {4}])  # query 1: 9 ranked 2nd; query 2: relevant missed
    assert found["mrr10"] == pytest.approx(100 * 0.5 / 2)
    assert found["ndcg10"] == pytest.approx(100 * (1 / np.log2(3)) / 2)
    assert rank_agreement(scores, scores * 2 + 1) == pytest.approx(1.0)


def test_pairs_without_labels_are_refused(tmp_path: Path) -> None:
    from edgedistill.tasks.reranker.data import load_groups

    file = tmp_path / "pairs.jsonl"
    file.write_text(json.dumps({"query": "a man", "passage": "a person"}) + "\n")
    with pytest.raises(RecipeError, match=r"data\.pairs: .*pairs\.jsonl line 1 has no label.*add 'label'"):
        load_groups(str(file))


def test_full_chain(chain: dict) -> None:
    records = chain["records"]
    assert [r.type for r in records] == ["finetune", "distill", "export", "quantize", "profile"]
    teacher = json.loads((chain["run_dir"] / "report.json").read_text())["rows"][0]
    finetune, distill, export, quantize = (r.metrics for r in records[:4])
    assert finetune["train_pairs"] == 60 + finetune["mined_negatives"] and finetune["mined_negatives"] >= 20
    assert finetune["dev_queries"] == 5 and finetune["dev_corpus"] > 10 and "dev_ndcg10" in finetune
    assert finetune["train_steps"] > 0
    assert distill["train_triplets"] >= 20 and set(distill["losses"]) == {"mse", "margin_mse"}
    assert all(np.isfinite(h["dev"]) for h in distill["history"])
    assert export["validation"]["max_abs_diff"] <= 1e-4  # the gate
    for r in records[1:4]:
        ev = r.evaluation
        assert 0 <= ev["rerank_ndcg10"] <= 100 and 0 <= ev["rerank_mrr10"] <= 100
        assert ev["ndcg10_gain"] == pytest.approx(ev["rerank_ndcg10"] - ev["first_stage_ndcg10"])
        assert ev["latency_ms_p50"] > 0
    assert records[2].evaluation["rerank_ndcg10"] == pytest.approx(records[1].evaluation["rerank_ndcg10"], abs=1e-3)
    assert teacher["rerank_ndcg10"] is not None  # the fine-tuned teacher is the report's reference
    manifest = json.loads((chain["run_dir"] / "bundle" / "manifest.json").read_text())
    assert manifest["task"] == "reranker" and manifest["activation"] == "sigmoid"
    assert manifest["output"] == "logits" and manifest["quantization"]
    profile = records[4].metrics["rerank_profile"]
    assert {m["label"].split(" · ")[0] for m in profile} >= {"teacher", "distill", "export", "quantize"}
    assert all(m["candidates"]["4"]["pairs_per_s"] > 0 for m in profile)
    report = (chain["run_dir"] / "report.md").read_text()
    assert "nDCG@10" in report and "1 x 4: p50 ms" in report and "activation sigmoid" in report
    summary = json.loads((chain["run_dir"] / "report.json").read_text())["summary"]
    assert "Per-query p50" in summary and "Batch-1" not in summary  # a query's candidates, not one text


def test_rank_runtime_and_command(chain: dict) -> None:
    from edgedistill.runtime import load
    from edgedistill.tasks.reranker.runtime import OnnxReranker

    bundle = chain["run_dir"] / "bundle"
    docs = ["The man is playing soccer today.", "A cat sits on the table.", "Two people eat bread."]
    result = load(bundle).rank("A man is playing soccer in the park.", docs)
    raw = OnnxReranker(bundle).logits([("A man is playing soccer in the park.", d) for d in docs])
    assert result.scores == pytest.approx((1 / (1 + np.exp(-raw))).tolist(), abs=1e-6)
    assert result.ranking == sorted(range(3), key=lambda i: -result.scores[i])
    out = CliRunner().invoke(main, ["rank", str(bundle), "A man is playing soccer in the park.", *docs])
    assert out.exit_code == 0, out.output
    printed = json.loads(out.output)
    assert printed["scores"] == pytest.approx(result.scores, abs=1e-6) and printed["ranking"] == result.ranking


def test_wrong_task_bundles_exit_2(chain: dict, tmp_path: Path) -> None:
    bundle = chain["run_dir"] / "bundle"
    out = CliRunner().invoke(main, ["embed", str(bundle), "a sentence"])
    assert out.exit_code == 2 and "reranker bundle" in out.output and "edgedistill rank" in out.output
    manifest = json.loads((bundle / "manifest.json").read_text())
    fake = tmp_path / "embedding-bundle"
    fake.mkdir()
    (fake / "manifest.json").write_text(json.dumps({**manifest, "task": "embedding"}))
    out = CliRunner().invoke(main, ["rank", str(fake), "q", "d", "--no-check"])
    assert out.exit_code == 2 and "embedding bundle" in out.output and "edgedistill embed" in out.output


def test_bi_encoder_as_teacher_exit_2(world: dict, tmp_path: Path) -> None:
    recipe = rerank_recipe(world)
    recipe["stages"] = recipe["stages"][1:3]  # no finetune: the bi-encoder itself would be the cross-encoder
    path = write_recipe(tmp_path / "r.yaml", recipe)
    out = CliRunner().invoke(main, ["run", str(path), "--runs-dir", str(tmp_path / "runs")])
    assert out.exit_code == 2, out.output
    assert "teacher" in out.output and "sentence-transformers embedding model" in out.output
    assert "finetune stage" in out.output


def test_unsupported_loss_exit_2(world: dict, tmp_path: Path) -> None:
    recipe = rerank_recipe(world)
    recipe["stages"][1]["losses"] = [{"type": "kl"}]
    out = CliRunner().invoke(main, ["validate", str(write_recipe(tmp_path / "r.yaml", recipe))])
    assert out.exit_code == 2 and "stages.1.losses.0.type" in out.output and "margin_mse" in out.output


@pytest.mark.parametrize("loss", ["mse", "margin_mse"])
def test_each_loss_trains(world: dict, chain: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          loss: str) -> None:
    monkeypatch.setenv("EDGEDISTILL_CACHE", str(chain["cache"]))
    recipe = rerank_recipe(world)
    recipe["stages"] = recipe["stages"][:2]
    recipe["stages"][1]["losses"] = [{"type": loss}]
    records = run_recipe(load_recipe(write_recipe(tmp_path / "r.yaml", recipe)), tmp_path / "runs")
    history = records[1].metrics["history"]
    assert records[0].reused is False or records[0].type == "finetune"
    assert history and loss in history[-1] and np.isfinite(history[-1][loss])


def test_sigkill_mid_distill_then_resume(chain: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    import shutil

    runs = tmp_path / "runs"
    run_dir = runs / "tiny-rerank"
    run_dir.mkdir(parents=True)
    (finetuned,) = chain["run_dir"].glob("00-finetune-*")
    shutil.copytree(finetuned, run_dir / finetuned.name)
    env = {**os.environ, KILL_ENV: ".ckpt-01-distill-*/latest.pt", "EDGEDISTILL_CACHE": str(chain["cache"]),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    killed = subprocess.run([sys.executable, "-m", "edgedistill.cli", "run", str(chain["recipe"]), "--runs-dir",
                             str(runs)], check=False, env=env, capture_output=True, text=True, timeout=900)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert list(run_dir.glob(".ckpt-01-distill-*/latest.pt")) and not list(run_dir.glob("01-distill-*"))
    monkeypatch.setenv("EDGEDISTILL_CACHE", str(chain["cache"]))
    with caplog.at_level(logging.INFO, logger="edgedistill"):
        result = CliRunner().invoke(main, ["run", str(chain["recipe"]), "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    assert "resuming from step 2/" in caplog.text and "stage 0 finetune: finished earlier" in caplog.text
    (resumed,) = run_dir.glob("01-distill-*")
    (reference,) = chain["run_dir"].glob("01-distill-*")
    got, want = (json.loads((d / "metrics.json").read_text())["evaluation"] for d in (resumed, reference))
    for key in ("rerank_ndcg10", "rerank_mrr10", "teacher_rank_spearman"):
        assert got[key] == pytest.approx(want[key], abs=TOLERANCE), key


def _ce_to_bi_recipe(tiny_world: dict, world: dict, margin_teacher: str) -> dict:
    from tests.conftest import tiny_recipe

    recipe = tiny_recipe(tiny_world, name="ce-to-bi")
    distill = recipe["stages"][0]
    distill.update(losses=[{"type": "mse"}, {"type": "margin_mse"}], triplets=20, triplet_source=str(world["snli"]),
                   triplet_batch_size=8, margin_teacher=margin_teacher)
    recipe["stages"] = [distill]
    return recipe


def test_cross_encoder_margins_train_a_bi_encoder(tiny_world: dict, world: dict, chain: dict, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEDISTILL_CACHE", str(chain["cache"]))
    (finetuned,) = chain["run_dir"].glob("00-finetune-*")
    recipe = _ce_to_bi_recipe(tiny_world, world, str(finetuned / "artifact"))
    (record,) = run_recipe(load_recipe(write_recipe(tmp_path / "r.yaml", recipe)), tmp_path / "runs")
    assert record.metrics["margin_teacher_scale"] > 0 and 0 <= record.metrics["margin_sign_agreement"] <= 1
    assert np.isfinite(record.evaluation["retrieval_ndcg10"])


def test_bi_encoder_as_margin_teacher_exit_2(tiny_world: dict, world: dict, tmp_path: Path) -> None:
    recipe = _ce_to_bi_recipe(tiny_world, world, str(world["encoder"]))
    out = CliRunner().invoke(main, ["run", str(write_recipe(tmp_path / "r.yaml", recipe)), "--runs-dir",
                                    str(tmp_path / "runs")])
    assert out.exit_code == 2, out.output
    assert "stages.distill.margin_teacher" in out.output and "sentence-transformers embedding model" in out.output


def test_unset_margin_teacher_keeps_embedding_keys() -> None:
    from edgedistill.contract import content_key
    from edgedistill.stages.configs import DistillStage

    cfg = DistillStage(type="distill", student={"init": "all-MiniLM-L6-v2"})
    assert "margin_teacher" not in cfg.model_dump()  # so the key is what it was before margin_teacher existed
    with_margins = DistillStage(type="distill", student={"init": "all-MiniLM-L6-v2"}, triplets=10,
                                losses=[{"type": "mse"}, {"type": "margin_mse"}], margin_teacher="ce")
    without = DistillStage(type="distill", student={"init": "all-MiniLM-L6-v2"}, triplets=10,
                           losses=[{"type": "mse"}, {"type": "margin_mse"}])
    assert content_key(with_margins.model_dump()) != content_key(without.model_dump())


def test_regression_teacher_on_sts_train(world: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.tiny import make_sentences

    sts = tmp_path / "sts"  # three splits with their own sentences (scores 0-5)
    sts.mkdir()
    for i, split in enumerate(("train", "dev", "test")):
        a, b = make_sentences(60, seed=40 + 2 * i), make_sentences(60, seed=41 + 2 * i)
        (sts / f"sts-{split}.csv").write_text("".join(f"g\tc\ty\t{j}\t{(j * 7) % 50 / 10:.1f}\t{x}\t{y}\n"
                                                     for j, (x, y) in enumerate(zip(a, b, strict=True))))
    recipe = rerank_recipe(world, data={"pairs": str(world["snli"]), "sts": str(sts), "seed": 0})
    recipe["evaluation"]["sts"] = str(sts)
    recipe["stages"] = recipe["stages"][:2]
    recipe["stages"][0].update(objective="regression", pairs=40, dev_queries=2)
    records = run_recipe(load_recipe(write_recipe(tmp_path / "r.yaml", recipe)), tmp_path / "runs")
    finetune, distill = records
    assert finetune.metrics["objective"] == "regression" and "dev_spearman" in finetune.metrics
    assert np.isfinite(distill.evaluation["sts_spearman"]) and np.isfinite(finetune.evaluation["sts_spearman"])


def test_listwise_finetune_ranks_query_groups_and_selects_on_dev_reranking(world: dict, tmp_path: Path) -> None:
    recipe = rerank_recipe(world)
    recipe["stages"] = recipe["stages"][:1]
    recipe["stages"][0].update(objective="listwise", pairs=48, negatives=1, hard_negatives=2, eval_steps=1)
    (finetune,) = run_recipe(load_recipe(write_recipe(tmp_path / "r.yaml", recipe)), tmp_path / "runs")
    m = finetune.metrics
    assert m["objective"] == "listwise" and m["train_pairs"] == 4 * m["train_queries"] and m["train_queries"] >= 4
    assert m["mined_negatives"] == 2 * m["train_queries"]
    # dev: held-apart queries' BM25 candidates among held-apart passages, nDCG@10 of the reordered list
    assert m["dev_queries"] == 5 and m["dev_corpus"] > 10 and 0 <= m["dev_first_stage_ndcg10"] <= 100
    assert m["dev_ndcg10"] == max(h["dev"] for h in m["history"]) and len(m["history"]) >= 2
    sidecar = json.loads((finetune.artifact.path / "edgedistill_seqcls.json").read_text())
    assert sidecar["activation"] == "none"  # listwise scores rank; they are no probabilities


def test_listwise_needs_queries_with_enough_own_negatives(world: dict, tmp_path: Path) -> None:
    recipe = rerank_recipe(world)
    recipe["stages"] = recipe["stages"][:1]
    recipe["stages"][0].update(objective="listwise", negatives=2)  # the tiny SNLI has one per premise
    out = CliRunner().invoke(main, ["run", str(write_recipe(tmp_path / "r.yaml", recipe)), "--runs-dir",
                                    str(tmp_path / "runs")])
    assert out.exit_code == 2 and "lower negatives" in out.output


def test_the_student_learns_standardised_scores_and_folds_the_scale_back(world: dict, tmp_path: Path) -> None:
    from edgedistill.tasks.reranker.distill import fold_affine
    from edgedistill.tasks.seqcls.models import build_classifier

    clf = build_classifier(world["student"], 1, labels=["relevance"], device="cpu", field="student")
    pairs = [("a man plays", "a person plays"), ("a dog runs", "a cat sleeps")]
    before = clf.logits(pairs)[:, 0]
    fold_affine(clf.model, 0.05, -1.3)
    assert np.allclose(clf.logits(pairs)[:, 0], 0.05 * before - 1.3, atol=1e-5)


def test_listwise_loss_prefers_the_first_passage() -> None:
    import torch

    from edgedistill.tasks.reranker.losses import listwise_cross_entropy

    right, wrong = torch.tensor([[5.0, 0.0, 0.0]]), torch.tensor([[0.0, 5.0, 0.0]])
    assert listwise_cross_entropy(right) < 0.02 < 5 < listwise_cross_entropy(wrong)


def test_regression_needs_sts_data(world: dict, tmp_path: Path) -> None:
    recipe = rerank_recipe(world)
    recipe["stages"] = recipe["stages"][:1]
    recipe["stages"][0]["objective"] = "regression"
    out = CliRunner().invoke(main, ["run", str(write_recipe(tmp_path / "r.yaml", recipe)), "--runs-dir",
                                    str(tmp_path / "runs")])
    assert out.exit_code == 2 and "data.sts" in out.output


def test_cross_encoder_as_embedding_teacher_exit_2(tiny_world: dict, chain: dict, tmp_path: Path) -> None:
    from tests.conftest import tiny_recipe

    (finetuned,) = chain["run_dir"].glob("00-finetune-*")
    recipe = tiny_recipe(tiny_world, teacher=str(finetuned / "artifact"))
    out = CliRunner().invoke(main, ["run", str(write_recipe(tmp_path / "r.yaml", recipe)), "--runs-dir",
                                    str(tmp_path / "runs")])
    assert out.exit_code == 2, out.output
    assert "teacher:" in out.output and "task: reranker" in out.output and "margin_teacher" in out.output


def test_export_gate_stops_a_graph_that_differs(world: dict, chain: dict, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEDISTILL_CACHE", str(chain["cache"]))
    recipe = rerank_recipe(world)
    recipe["stages"] = recipe["stages"][:3]
    recipe["stages"][2]["max_abs_diff"] = 1e-12  # float32 ONNX never matches PyTorch that closely
    out = CliRunner().invoke(main, ["run", str(write_recipe(tmp_path / "r.yaml", recipe)), "--runs-dir",
                                    str(tmp_path / "runs")])
    assert out.exit_code == 1 and "export validation failed" in out.output and "allowed 1e-12" in out.output
    assert not list((tmp_path / "runs" / "tiny-rerank").glob("02-export-*"))
