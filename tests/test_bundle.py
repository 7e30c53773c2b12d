"""What ships from a run: the deploy bundle (atomic, complete manifest) and the student's round trip."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from edgedistill.bundle import write_bundle
from edgedistill.pipeline import run_recipe
from edgedistill.recipe import load_recipe
from edgedistill.runtime import load
from tests.conftest import tiny_recipe, write_recipe
from tests.tiny import make_sentences


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tiny_world: dict) -> tuple[Path, list]:
    """The whole tiny chain, with the tokenizer-in-graph option on."""
    pytest.importorskip("onnxruntime_extensions")
    root = tmp_path_factory.mktemp("bundle-run")
    recipe = tiny_recipe(tiny_world)
    recipe["stages"][1].update(tokenizer_in_graph=True, timing_sentences=4, timing_rounds=3)
    records = run_recipe(load_recipe(write_recipe(root / "r.yaml", recipe)), root / "runs")
    return root / "runs" / "tiny", records


def test_run_ends_with_a_complete_bundle(run: tuple[Path, list]) -> None:
    run_dir, records = run
    bundle = run_dir / "bundle"
    files = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    assert files == {"onnx/model.onnx", "onnx/model_quantized.onnx", "config.json", "tokenizer.json",
                     "tokenizer_config.json", "special_tokens_map.json", "manifest.json", "README.md",
                     "model_with_tokenizer.onnx"}
    assert not list(run_dir.glob(".bundle*"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    for name, digest in manifest["sha256"].items():
        assert hashlib.sha256((bundle / name).read_bytes()).hexdigest() == digest
    assert set(manifest["sha256"]) == files - {"manifest.json"}
    assert manifest["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert manifest["outputs"] == ["sentence_embedding"] and manifest["dimension"] == 32
    assert manifest["pooling"] == "mean" and manifest["normalized"]
    assert manifest["max_seq_length"] == records[0].config["max_seq_length"]
    assert manifest["opset"] >= 18 and manifest["quantization"]  # the quantize stage's record travels along
    assert manifest["model"] == "onnx/model_quantized.onnx" and manifest["precision"] == "int8"
    assert manifest["models"] == {"fp32": "onnx/model.onnx", "int8": "onnx/model_quantized.onnx"}
    config = json.loads((bundle / "config.json").read_text())
    assert config["model_type"] == "bert" and config["edgedistill"]["output"] == "sentence_embedding"
    tokenizer_config = json.loads((bundle / "tokenizer_config.json").read_text())
    assert tokenizer_config["model_max_length"] == manifest["max_seq_length"]
    # The figures are the report's: final row quality, the profile stage's latency.
    report = json.loads((run_dir / "report.json").read_text())
    final_row = report["rows"][-1]
    assert manifest["quality"]["sts_spearman"] == pytest.approx(final_row["sts_spearman"])
    assert manifest["quality"]["retention_pct"] == pytest.approx(final_row["retention_pct"])
    assert manifest["latency"]["latency_ms_p50"] == pytest.approx(records[-1].metrics["latency_ms_p50"])
    assert manifest["source"]["chain"] == ["00-distill", "01-export", "02-quantize", "03-profile"]
    # The tokenizer-in-graph variant was rebuilt from the final INT8 graph and checked against it.
    variant = manifest["variants"]["tokenizer_in_graph"]
    assert variant["check_vs_two_file"]["max_abs_diff"] <= variant["tolerance"]
    assert "STS-benchmark Spearman" in (bundle / "README.md").read_text()


def test_bundle_embeds_like_the_final_artifact(run: tuple[Path, list]) -> None:
    run_dir, records = run
    texts = make_sentences(6, seed=21)
    shipped = load(run_dir / "bundle").encode(texts, batch_size=1)
    assert np.abs(shipped - load(records[2].artifact.path, check=False).encode(texts, batch_size=1)).max() < 1e-6
    fp32 = load(run_dir / "bundle", precision="fp32").encode(texts)
    assert np.abs(fp32 - load(records[1].artifact.path, check=False).encode(texts)).max() < 1e-6
    in_graph = load(run_dir / "bundle", tokenizer_in_graph=True).encode(texts)
    assert np.abs(in_graph - shipped).max() < 1e-4


def test_student_round_trip(run: tuple[Path, list]) -> None:
    """The distilled student is a sentence-transformers folder with a model card; the ONNX export matches it."""
    from sentence_transformers import SentenceTransformer

    _, records = run
    student = records[0].artifact.path
    card = (student / "README.md").read_text()
    for needle in ("teacher", "training data", "sts_spearman", "## Recipe (distill stage)", "train_sentences"):
        assert needle in card
    texts = make_sentences(8, seed=22)
    torch_emb = SentenceTransformer(str(student), device="cpu").encode(texts, normalize_embeddings=True)
    onnx_emb = load(records[1].artifact.path, check=False).encode(texts)
    assert np.abs(onnx_emb - torch_emb).max() < 1e-5


def test_rewriting_the_bundle_replaces_it_whole(run: tuple[Path, list], tiny_world: dict) -> None:
    run_dir, records = run
    (run_dir / "bundle" / "stale.txt").write_text("left over")
    (run_dir / ".bundle.999.tmp").mkdir()  # a run killed while writing its bundle
    teacher = json.loads((run_dir / "teacher.json").read_text())["evaluation"]
    path = write_bundle(run_dir, records, teacher, make_sentences(10))
    assert path == run_dir / "bundle" and not (path / "stale.txt").exists()
    assert not list(run_dir.glob(".bundle*"))
    assert write_bundle(run_dir, records[:1], teacher, []) is None  # a sentence-transformers artifact: nothing to ship
