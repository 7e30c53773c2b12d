"""The export stage on tiny models: one graph per model family and pooling, the numerical gate, fusions
kept only when they pay, the fused graph still quantizes, and the tokenizer-in-graph variant."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgedistill import optimize
from edgedistill.contract import Artifact, StageContext
from edgedistill.errors import GateError, RecipeError
from edgedistill.recipe import ExportStage
from edgedistill.runtime import InGraphEncoder, OnnxEncoder
from edgedistill.stages import export
from edgedistill.tasks.embedding import export as embedding_export
from edgedistill.tasks.embedding.evaluate import EvalSet
from tests.tiny import build_st_model, make_sentences

FAST = {"timing_sentences": 4, "timing_rounds": 3}


class Sentences:
    """Just the data an export needs (no quality evaluation)."""

    def __init__(self) -> None:
        self.data = EvalSet(sts=None, heldout=make_sentences(30, seed=3), latency_sentences=make_sentences(5))


def _ctx(tmp_path: Path, model: Path) -> StageContext:
    work = tmp_path / "work"
    work.mkdir(parents=True)
    return StageContext(index=1, teacher=Path("."), input=Artifact("sentence-transformer", model, "k"),
                        work_dir=work, device="cpu", input_evaluation={}, _evaluator=lambda: Sentences())


def _ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


@pytest.mark.parametrize(
    ("family", "pooling", "dense", "exporter", "inputs"),
    [("bert", "mean", None, "torchscript", ["input_ids", "attention_mask", "token_type_ids"]),
     ("mpnet", "cls", 24, "torchscript", ["input_ids", "attention_mask"]),
     ("bert", "max", 8, "dynamo", ["input_ids", "attention_mask", "token_type_ids"])],
)
def test_export_matches_torch(tmp_path: Path, family: str, pooling: str, dense: int | None, exporter: str,
                              inputs: list[str]) -> None:
    from sentence_transformers import SentenceTransformer

    model = build_st_model(tmp_path / "st", family=family, hidden=16, layers=2, pooling=pooling, dense_out=dense)
    ctx = _ctx(tmp_path, model)
    result = export.run(ExportStage(type="export", exporter=exporter, optimize="never"), ctx)
    check = result.metrics["validation"]
    assert check["max_abs_diff"] < 1e-4 and check["batch_sizes"] == [1, 7, 32]
    assert len(check["by_length"]) >= 2 and check["tokens_max"] == 64  # short ones and truncated long ones
    manifest = json.loads((ctx.artifact_dir / "manifest.json").read_text())
    assert manifest["pooling"] == pooling and manifest["dimension"] == (dense or 16)
    assert manifest["inputs"] == inputs == [i.name for i in onnx.load(str(ctx.artifact_dir / "model.onnx")).graph.input]
    assert manifest["opset"] == result.metrics["opset"] >= 18
    assert set(manifest["sha256"]) >= {"model.onnx", "tokenizer.json"}
    # Dynamic axes: any batch and length, same numbers as sentence-transformers.
    sentences = make_sentences(9, seed=11)
    reference = SentenceTransformer(str(model), device="cpu").encode(sentences, normalize_embeddings=True)
    assert np.abs(OnnxEncoder(ctx.artifact_dir).encode(sentences, batch_size=9) - reference).max() < 1e-5


def test_broken_export_fires_the_gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    model = build_st_model(tmp_path / "st", family="bert", hidden=16, layers=2)
    real = embedding_export.build_graph_module

    class Broken(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids=None):  # a bug: shifts the embedding
            return torch.nn.functional.normalize(self.inner(input_ids, attention_mask, token_type_ids) + 0.05, dim=1)

    monkeypatch.setattr(embedding_export, "build_graph_module", lambda m: Broken(real(m)))
    with pytest.raises(GateError, match=r"export validation failed \(plain graph\): max abs diff .* by length"):
        export.run(ExportStage(type="export", exporter="torchscript"), _ctx(tmp_path, model))


def _export_fused(root: Path, exporter: str) -> tuple[Path, dict]:
    model = build_st_model(root / "st", family="bert", hidden=16, layers=2, heads=2)
    ctx = _ctx(root, model)
    result = export.run(ExportStage(type="export", exporter=exporter, optimize="always", **FAST), ctx)
    return ctx.artifact_dir, result.metrics


@pytest.fixture(scope="module")
def fused(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A tiny BERT exported with optimize: always."""
    return _export_fused(tmp_path_factory.mktemp("fused"), "torchscript")


def test_always_optimize_fuses_and_passes_the_gate(fused: tuple[Path, dict]) -> None:
    bundle, metrics = fused
    opt = metrics["optimization"]
    assert opt["applied"] and opt["passed_gate"] and opt["validation"]["max_abs_diff"] < 1e-4
    assert opt["fusions"]["Attention"] == 2 and opt["fusions"]["SkipLayerNormalization"] == 4
    assert {"Attention", "SkipLayerNormalization", "EmbedLayerNormalization"} <= _ops(bundle / "model.onnx")
    assert {"plain", "optimized"} == set(opt["latency"]) and opt["latency"]["plain"]["timings"] == 12
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["graph"]["optimized"] and not (bundle / embedding_export.OPTIMIZED_FILE).exists()
    assert "| optimised |" in export.report_section(metrics)


def test_dynamo_graphs_get_attention_fusion_too(tmp_path: Path) -> None:
    """The dynamo exporter merges the mask's Unsqueezes; they are split so the attention fusion applies."""
    bundle, metrics = _export_fused(tmp_path, "dynamo")
    assert metrics["optimization"]["fusions"]["Attention"] == 2
    assert "Attention" in _ops(bundle / "model.onnx")
    assert metrics["optimization"]["validation"]["max_abs_diff"] < 1e-4


def test_fused_graph_still_quantizes(tmp_path: Path, fused: tuple[Path, dict]) -> None:
    """The quantize stage consumes this artifact: onnxruntime's dynamic INT8 must accept the fused graph."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    bundle, _ = fused
    for op_types, expected in ((["MatMul"], {"MatMulInteger", "Attention"}),
                               (["MatMul", "Attention"], {"MatMulInteger", "QAttention"})):
        target = tmp_path / f"{len(op_types)}.onnx"
        quantize_dynamic(str(bundle / "model.onnx"), str(target), op_types_to_quantize=op_types,
                         weight_type=QuantType.QInt8)
        assert expected <= _ops(target)
    # The feed-forward down-projections (weights [4h, h]) stay plain MatMuls that a search can keep in fp32.
    graph = onnx.load(str(bundle / "model.onnx")).graph
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    down = [n for n in graph.node if n.op_type == "MatMul" and any(shapes.get(i) == (64, 16) for i in n.input)]
    assert len(down) == 2


@pytest.mark.parametrize(("plain_ms", "optimized_ms", "applied"), [(1.0, 0.8, True), (1.0, 0.99, False)])
def test_auto_keeps_fusions_only_when_they_pay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plain_ms: float,
                                               optimized_ms: float, applied: bool) -> None:
    def scripted(encoders, sentences, rounds, warmup=5):
        ms = {"plain": plain_ms, "optimized": optimized_ms}
        return {n: {"latency_ms_p50": ms[n], "latency_ms_p90": ms[n], "round_p50_ms": [ms[n]] * rounds,
                    "timings": rounds} for n in encoders}

    monkeypatch.setattr(optimize, "interleaved_latency", scripted)
    model = build_st_model(tmp_path / "st", family="bert", hidden=16, layers=2)
    ctx = _ctx(tmp_path, model)
    opt = export.run(ExportStage(type="export", exporter="torchscript", **FAST), ctx).metrics["optimization"]
    assert opt["applied"] is applied and opt["speedup"] == pytest.approx(plain_ms / optimized_ms, rel=1e-3)
    assert ("Attention" in _ops(ctx.artifact_dir / "model.onnx")) is applied
    assert json.loads((ctx.artifact_dir / "manifest.json").read_text())["graph"]["optimized"] is applied


def test_speedup_decision_needs_a_majority_of_rounds() -> None:
    plain = {"latency_ms_p50": 1.0, "round_p50_ms": [1.0, 1.0, 1.0]}
    lucky = {"latency_ms_p50": 0.9, "round_p50_ms": [0.5, 1.1, 1.2]}  # one fast round, slower in the others
    assert not optimize.speedup_decision(plain, lucky, 1.05)["helps"]
    steady = {"latency_ms_p50": 0.9, "round_p50_ms": [0.9, 0.92, 0.88]}
    assert optimize.speedup_decision(plain, steady, 1.05)["helps"]


@pytest.mark.parametrize("family", ["bert", "mpnet"])
def test_tokenizer_in_graph_matches_the_two_file_path(tmp_path: Path, family: str) -> None:
    pytest.importorskip("onnxruntime_extensions")
    model = build_st_model(tmp_path / "st", family=family, hidden=16, layers=2)
    ctx = _ctx(tmp_path, model)
    metrics = export.run(ExportStage(type="export", exporter="torchscript", optimize="never",
                                     tokenizer_in_graph=True, **FAST), ctx).metrics["tokenizer_in_graph"]
    assert metrics["validation"]["max_abs_diff"] <= 1e-5 and metrics["validation"]["sentences"] == 34
    assert {"two_file", "in_graph"} == set(metrics["latency"])
    # Kept beside the artifact, not in it (quantize changes model.onnx; the bundle rebuilds the variant).
    assert not (ctx.artifact_dir / optimize.IN_GRAPH_MODEL).exists()
    variant = ctx.work_dir / "tokenizer-in-graph"
    assert (variant / optimize.IN_GRAPH_MODEL).is_file()
    # Several strings in one call are separate texts, not a sentence pair; odd text works too.
    texts = ["A man is playing a guitar.", "Zebrafish! Café naïve 日本 résumé", "", "x " * 200]
    got = InGraphEncoder(variant).encode(texts)
    one_by_one = np.vstack([OnnxEncoder(ctx.artifact_dir).encode([t]) for t in texts])
    assert got.shape == (4, 16) and np.abs(got - one_by_one).max() < 1e-5


def test_tokenizer_in_graph_refuses_other_tokenizers() -> None:
    bpe = {"model": {"type": "BPE", "vocab": {}}, "normalizer": None, "pre_tokenizer": {"type": "ByteLevel"},
           "post_processor": {"type": "ByteLevel"}}
    with pytest.raises(RecipeError, match="only reproduces BERT-style WordPiece.*model is 'BPE'"):
        optimize.wordpiece_settings(bpe, 128)
