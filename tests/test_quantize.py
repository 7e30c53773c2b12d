"""Quantization on tiny bundles: presets, graph labels, INT8 embeddings, real ORT dynamic and static QDQ,
the accuracy-aware search (scripted quality and latency), the stage's gate, config file and report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgedistill.contract import Artifact, StageContext
from edgedistill.errors import GateError, RecipeError
from edgedistill.quant import calibration, embedding, graph, measure, presets
from edgedistill.quant.ort import gemm_to_matmul, prepare, quantize_file
from edgedistill.quant.presets import QuantSettings
from edgedistill.quant.search import Budget, Search, SearchConfig, groups_of
from edgedistill.recipe import QuantizeStage
from edgedistill.runtime import OnnxEncoder
from edgedistill.stages import quantize
from edgedistill.tasks.embedding.evaluate import EvalSet
from tests.tiny import build_st_model, make_sentences


def make_bundle(root: Path, exporter: str, dense: int | None = 24) -> Path:
    """An fp32 ONNX bundle of a tiny 2-layer BERT (hidden 16, FFN 64), with a Dense projection (a Gemm)."""
    from sentence_transformers import SentenceTransformer

    from edgedistill.tasks.embedding.export import build_manifest, export_onnx

    st = SentenceTransformer(str(build_st_model(root / "st", family="bert", hidden=16, layers=2, dense_out=dense)),
                             device="cpu")
    bundle = root / "bundle"
    bundle.mkdir(parents=True)
    export_onnx(st, bundle / "model.onnx", 18, exporter)
    st[0].tokenizer.save_pretrained(str(bundle))
    build_manifest(st, bundle, 18, exporter)
    return bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("q-dynamo"), "dynamo")


@pytest.fixture(scope="module")
def ts_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("q-ts"), "torchscript")


def fp32_weight_nodes(model_path: Path) -> set[str]:
    """Names of MatMul nodes and of the word-embedding Gather still reading an fp32 initializer."""
    model = onnx.load(str(model_path))
    table = graph.word_embedding_gather(model)
    floats = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    floats |= {n.output[0] for n in model.graph.node if n.op_type == "Transpose" and n.input[0] in floats}
    out = set()
    for n in model.graph.node:
        if n.op_type == "MatMul" and n.input[1] in floats:
            out.add(n.name)
        if n.op_type == "Gather" and n.input[0] in floats and table and n.name == table[0].name:
            out.add(n.name)
    return out


def ops(model_path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(model_path)).graph.node}


# -- presets and recipe -------------------------------------------------------------------------------------
def test_every_preset_is_a_named_factory_with_sensible_defaults() -> None:
    assert set(presets.PRESETS) == {"portable", "arm64", "avx2", "avx512_vnni"}
    for name, factory in presets.PRESETS.items():
        candidates = factory()
        assert candidates and all(isinstance(c, QuantSettings) for c in candidates)
        assert all(c.op_types == ("MatMul", "Attention") for c in candidates)
        if name in ("avx2", "avx512_vnni"):  # S8S8 is slow on x86
            assert all(c.activation_type == "uint8" for c in candidates)
    assert all(c.reduce_range for c in presets.avx2())
    assert not any(c.reduce_range for c in presets.avx512_vnni())
    assert [c.method for c in presets.portable()] == ["dynamic"]


def test_resolve_applies_method_and_overrides() -> None:
    static = presets.resolve("portable", "static")
    assert [c.method for c in static] == ["static"] and static[0].calibration == "minmax"
    pinned = presets.resolve("avx2", "auto", {"calibration": "entropy", "per_channel": False, "embedding": None})
    assert {c.per_channel for c in pinned} == {False}
    assert next(c for c in pinned if c.method == "static").calibration == "entropy"
    assert next(c for c in pinned if c.method == "dynamic").calibration is None  # dynamic ignores it
    assert presets.resolve("arm64", "dynamic", {"activation_type": "int8"})[0].activation_type == "uint8"


def test_recipe_rejects_unknown_targets_and_fields(tmp_path: Path) -> None:
    from edgedistill.recipe import load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nteacher: t\ndata: {train: x}\nstages:\n  - {type: distill, student: {init: s}}\n"
                      "  - {type: export}\n  - {type: quantize, target: x86}\n")
    with pytest.raises(RecipeError, match=r"stages.2.target.*avx2"):
        load_recipe(recipe)
    recipe.write_text(recipe.read_text().replace("target: x86", "search: {sensitivty: node}"))
    with pytest.raises(RecipeError, match="did you mean 'sensitivity'"):
        load_recipe(recipe)


# -- graph labels ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["bundle", "ts_bundle"])
def test_quantizable_nodes_know_layer_and_role(which: str, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(which) / "model.onnx"
    nodes = graph.quantizable_nodes(path, ["MatMul"])
    assert nodes[0].role == "embedding" and nodes[0].shape[1] == 16
    weights = [n for n in nodes if n.role not in ("embedding",)]
    assert len(weights) == 2 * 6 + 1  # q, k, v, out, up, down per layer, and the projection (a Gemm)
    assert [n.layer for n in weights[:12]] == [0] * 6 + [1] * 6
    assert weights[-1].role == "projection" and weights[-1].layer is None
    down = graph.ffn_down_projections(nodes)
    assert [n.layer for n in down] == [0, 1] and all(n.shape == (64, 16) for n in down)
    assert len(groups_of(nodes, "layer")) == 4 and len(groups_of(nodes, "role")) == 8
    assert len(groups_of(nodes, "auto", node_limit=5)) == 8


# -- graph rewrites ---------------------------------------------------------------------------------------------
def test_gemm_rewrite_is_exact(tmp_path: Path, bundle: Path) -> None:
    model = onnx.load(str(bundle / "model.onnx"))
    assert gemm_to_matmul(model) == 1 and "Gemm" not in {n.op_type for n in model.graph.node}
    prepared = tmp_path / "b"
    prepared.mkdir()
    for f in bundle.iterdir():
        (prepared / f.name).write_bytes(f.read_bytes())
    prepare(bundle / "model.onnx", prepared / "model.onnx")
    sentences = make_sentences(20)
    a, b = OnnxEncoder(bundle).encode(sentences), OnnxEncoder(prepared).encode(sentences)
    assert np.abs(a - b).max() < 1e-5


def test_per_row_int8_embedding(tmp_path: Path, bundle: Path) -> None:
    table = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    table[3] *= 100  # an outlier row does not hurt the others
    q, scale = embedding.quantize_rows(table)
    assert q.dtype == np.int8 and scale.shape == (50, 1)
    assert np.all(np.abs(q * scale - table) <= scale / 2 + 1e-6)

    model = onnx.load(str(bundle / "model.onnx"))
    word = graph.word_embedding_gather(model)[0].name
    assert embedding.quantize_embedding_gather(model, word)
    out = tmp_path / "b"
    out.mkdir()
    for f in bundle.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    onnx.save(model, str(out / "model.onnx"))
    inits = {i.name: i for i in model.graph.initializer}
    assert inits["transformer.embeddings.word_embeddings.weight_int8"].data_type == onnx.TensorProto.INT8
    assert "transformer.embeddings.word_embeddings.weight" not in inits
    sentences = make_sentences(30)
    cos = (OnnxEncoder(bundle).encode(sentences) * OnnxEncoder(out).encode(sentences)).sum(axis=1)
    assert cos.min() > 0.999
    assert not embedding.quantize_embedding_gather(model, "no_such_node")


# -- real onnxruntime quantization ----------------------------------------------------------------------------
def _quantized(tmp_path: Path, bundle: Path, settings: QuantSettings, exclude: list[str]) -> Path:
    out = tmp_path / settings.method
    out.mkdir()
    for f in bundle.iterdir():
        if f.name != "model.onnx":
            (out / f.name).write_bytes(f.read_bytes())
    prepared = tmp_path / "prepared.onnx"
    prepare(bundle / "model.onnx", prepared)
    reader = calibration.FeedsReader(calibration.feeds(bundle, make_sentences(24, seed=9)))
    word = graph.quantizable_nodes(prepared)[0].name
    quantize_file(prepared, out / "model.onnx", settings, exclude, embedding_node=word,
                  calibration=reader if settings.method == "static" else None,
                  calibration_cache=tmp_path / "calib.json")
    return out


@pytest.mark.parametrize("calib", ["minmax", "percentile", "entropy"])
def test_static_qdq_calibrates_on_sentences_of_any_length(tmp_path: Path, bundle: Path, calib: str) -> None:
    settings = QuantSettings(method="static", calibration=calib, per_channel=True, reduce_range=True)
    down = [n.name for n in graph.ffn_down_projections(graph.quantizable_nodes(bundle / "model.onnx"))]
    out = _quantized(tmp_path, bundle, settings, down)
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops(out / "model.onnx")
    assert (tmp_path / "calib.json").is_file()  # ranges cached for the next trial
    assert fp32_weight_nodes(out / "model.onnx") == set(down)  # everything else (and the table) is INT8
    sentences = make_sentences(30, seed=4)
    cos = (OnnxEncoder(bundle).encode(sentences) * OnnxEncoder(out).encode(sentences)).sum(axis=1)
    assert cos.mean() > 0.9


def test_static_qdq_quantizes_weight_matmuls_only(tmp_path: Path, bundle: Path) -> None:
    """Attention-score MatMuls (both inputs activations) stay fp32, and no MatMul output is re-quantized:
    onnxruntime's QDQ quantizer ignores MatMulConstBOnly, so the stage names the weight MatMuls itself."""
    import onnx

    out = _quantized(tmp_path, bundle, QuantSettings(method="static", calibration="minmax"), [])
    model = onnx.load(str(out / "model.onnx"))
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name for i in model.graph.initializer}
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
    dequantized = [n for n in matmuls if producers.get(n.input[0]) is not None
                   and producers[n.input[0]].op_type == "DequantizeLinear"]
    weights = {n.name for n in graph.quantizable_nodes(bundle / "model.onnx", embeddings=False)}
    assert dequantized and {n.name for n in dequantized} <= weights
    assert len([n for n in matmuls if n.name not in weights]) > 0  # the attention MatMuls are there, in fp32
    for node in dequantized:  # the weight arrives through a DequantizeLinear of an INT8 initializer
        assert producers[node.input[1]].input[0] in inits
    consumers = {i for n in model.graph.node if n.op_type == "QuantizeLinear" for i in n.input[:1]}
    assert not consumers & {o for n in matmuls for o in n.output}


def test_dynamic_int8_with_the_table(tmp_path: Path, bundle: Path) -> None:
    out = _quantized(tmp_path, bundle, QuantSettings(method="dynamic"), [])
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops(out / "model.onnx")
    assert fp32_weight_nodes(out / "model.onnx") == set()
    assert (out / "model.onnx").stat().st_size < 0.85 * (bundle / "model.onnx").stat().st_size


# -- the search (scripted quality, proxy and latency on real quantized tiny models) ---------------------------
class World:
    """A fake model of quantization damage: each INT8 FFN down-projection costs 3% of STS-b and 1e-2 of proxy
    cosine, every other INT8 node 0.05% and 1e-4; static trials lose another 5%. Each fp32 node adds 0.1 ms."""

    def __init__(self, bundle: Path) -> None:
        nodes = graph.quantizable_nodes(bundle / "model.onnx")
        self.names = {n.name for n in nodes}
        self.down = {n.name for n in graph.ffn_down_projections(nodes)}
        self.evaluated: list[set[str]] = []

    def _int8(self, bundle: Path) -> tuple[set[str], bool]:
        model = bundle / "model.onnx"
        return self.names - fp32_weight_nodes(model), "QuantizeLinear" in ops(model)

    def quality(self, bundle: Path) -> dict[str, float]:
        int8, static = self._int8(bundle)
        self.evaluated.append(self.names - int8)
        loss = 0.03 * len(int8 & self.down) + 0.0005 * len(int8 - self.down) + (0.05 if static else 0)
        return {"sts_spearman": 80 * (1 - loss), "retrieval_ndcg10": 60.0}

    def cosine(self, bundle: Path) -> float:
        int8, static = self._int8(bundle)
        return 1 - 1e-2 * len(int8 & self.down) - 1e-4 * len(int8 - self.down) - (0.05 if static else 0)

    def latency(self, bundle: Path) -> dict[str, float]:
        int8, static = self._int8(bundle)
        fp32 = len(self.names - int8)
        return {"latency_ms_p50": 1.0 + 0.1 * fp32 - (0.2 if static else 0), "latency_ms_per_sentence_b32": 0.5}


def _search(tmp_path: Path, bundle: Path, world: World, candidates: list[QuantSettings], max_drop: float = 0.01,
            **config) -> Search:
    feeds = calibration.feeds(bundle, make_sentences(16, seed=2))
    budget = Budget({"sts_spearman": 80.0, "retrieval_ndcg10": 60.0}, ["sts_spearman", "retrieval_ndcg10"], max_drop)
    return Search(bundle, tmp_path / "search", candidates, budget=budget, evaluate=world.quality, proxy=world,
                  calibration_feeds=feeds, latency_fn=world.latency, config=SearchConfig(**config))


def test_search_keeps_the_most_sensitive_nodes_in_fp32(tmp_path: Path, bundle: Path) -> None:
    world = World(bundle)
    result = _search(tmp_path, bundle, world, [QuantSettings(method="dynamic")]).run()
    assert result.within_budget
    assert set(result.chosen.excluded) == world.down  # exactly the two FFN down-projections
    scan = result.sensitivity[QuantSettings(method="dynamic").label()]
    assert {g["nodes"][0] for g in scan[:2]} == world.down
    # all INT8 (fails), then 1 group (fails), then 2 (passes): three full evaluations
    assert [len(t.excluded) for t in result.trials] == [0, 1, 2] and result.evaluations == 3
    assert [t.within_budget for t in result.trials] == [False, False, True]
    records = [t.record() for t in result.trials]
    assert records[2]["excluded_groups"] == [g["group"] for g in scan[:2]]
    assert {"proxy_cosine", "sts_spearman", "relative_drop", "latency_ms_p50", "size_mb", "config"} <= set(records[0])


def test_search_returns_the_fastest_trial_within_budget(tmp_path: Path, bundle: Path) -> None:
    world = World(bundle)
    static = QuantSettings(method="static", calibration="minmax")
    dynamic = QuantSettings(method="dynamic")
    # With a 6% budget static all-INT8 (-0.2 ms) fails (5% + 6 x 3%...), dynamic needs its FFN downs in fp32.
    result = _search(tmp_path, bundle, world, [dynamic, static], max_drop=0.06).run()
    passing = [t for t in result.trials if t.within_budget]
    assert result.chosen is min(passing, key=lambda t: t.latency["latency_ms_p50"])
    assert result.chosen.settings.method == "static"  # static with both downs in fp32 beats dynamic with one
    assert any("not evaluated" in t.note for t in result.trials)  # slower or hopeless trials are skipped


def test_final_side_by_side_timing_decides_between_close_trials(tmp_path: Path, bundle: Path) -> None:
    world = World(bundle)

    def latency(b: Path) -> dict[str, float]:  # one noisy timing each: static looks 5% faster
        return {"latency_ms_p50": 1.0 if world._int8(b)[1] else 1.05}

    def side_by_side(bundles: dict[str, Path]) -> dict[str, dict[str, float]]:  # timed together: dynamic wins
        return {name: {"latency_ms_p50": 1.0 if "QuantizeLinear" in ops(path / "model.onnx") else 0.9}
                for name, path in bundles.items()}

    search = _search(tmp_path, bundle, world, [QuantSettings(method="dynamic"),
                                               QuantSettings(method="static", calibration="minmax")], max_drop=0.5)
    search.latency_fn, search.final_timing = latency, side_by_side
    result = search.run()
    assert [t.within_budget for t in result.trials] == [True, True]  # within the 10% margin: both evaluated
    assert result.chosen.settings.method == "dynamic" and result.chosen.latency["search_latency_ms_p50"] == 1.05
    assert result.fp32_latency == {"latency_ms_p50": 0.9}


def test_search_keeps_the_best_when_nothing_fits(tmp_path: Path, bundle: Path) -> None:
    world = World(bundle)
    result = _search(tmp_path, bundle, world, [QuantSettings(method="dynamic")], max_drop=0.0,
                     max_evaluations=4).run()
    assert not result.within_budget and result.evaluations == 4
    evaluated = [t for t in result.trials if t.drop is not None]
    assert result.chosen is min(evaluated, key=lambda t: t.drop)


def test_size_cap_disqualifies_big_trials(tmp_path: Path, bundle: Path) -> None:
    world = World(bundle)
    search = _search(tmp_path, bundle, world, [QuantSettings(method="dynamic", embedding="fp32")], max_drop=0.5)
    search.budget.max_size_mb = 0.001
    result = search.run()
    assert not result.within_budget and all(t.within_budget is False for t in result.trials if t.drop is not None)


def test_latency_and_proxy_measure_real_bundles(bundle: Path) -> None:
    sentences = make_sentences(6)
    lat = measure.latency(bundle, sentences, repeats=2, batch_size=4, warmup=1)
    assert 0 < lat["latency_ms_p50"] <= lat["latency_ms_p90"] and lat["latency_ms_per_sentence_b4"] > 0
    assert measure.Proxy(bundle, sentences).cosine(bundle) == pytest.approx(1.0, abs=1e-5)


# -- the stage ---------------------------------------------------------------------------------------------------
class ScriptedEvaluator:
    """Returns scripted STS scores, one per call."""

    def __init__(self, scores: list[float]) -> None:
        self.scores = list(scores)
        self.data = EvalSet(sts=None, heldout=make_sentences(40, seed=3), latency_sentences=make_sentences(5))

    def quality(self, encoder) -> dict[str, float]:
        return {"sts_spearman": self.scores.pop(0)}


def _ctx(tmp_path: Path, bundle: Path, evaluator, input_eval: dict) -> StageContext:
    work = tmp_path / "work"
    work.mkdir(parents=True)
    return StageContext(index=0, teacher=Path("."), input=Artifact("onnx", bundle, "k"), work_dir=work,
                        device="cpu", input_evaluation=input_eval, _evaluator=lambda: evaluator)


FAST = {"proxy_sentences": 16, "latency_sentences": 4, "latency_repeats": 1}


def test_stage_writes_the_chosen_config_beside_the_model(tmp_path: Path, bundle: Path) -> None:
    ctx = _ctx(tmp_path, bundle, ScriptedEvaluator([70.0, 70.0, 79.5]), {"sts_spearman": 80.0})
    cfg = QuantizeStage(type="quantize", search={"sensitivity": "role", **FAST})
    result = quantize.run(cfg, ctx)
    m = result.metrics
    assert m["within_budget"] and m["chosen_trial"] == 2 and m["evaluations"] == 3
    config = json.loads((ctx.artifact_dir / quantize.CONFIG_FILE).read_text())
    assert config["method"] == "dynamic" and config["target"] == "portable" and config["reduce_range"]
    assert len(config["excluded_groups"]) == 2 and config["measured"]["relative_drop"] == pytest.approx(0.00625)
    manifest = json.loads((ctx.artifact_dir / "manifest.json").read_text())
    assert manifest["quantization"]["config"] == quantize.CONFIG_FILE and quantize.CONFIG_FILE in manifest["sha256"]
    assert not (ctx.work_dir / "search").exists()
    section = quantize.report_section(m)
    assert "| 2 |" in section and "**chosen**" in section and "Most sensitive" in section


def test_stage_gate_fails_or_warns(tmp_path: Path, bundle: Path) -> None:
    cfg = QuantizeStage(type="quantize", search={"sensitivity": "off", **FAST})
    ctx = _ctx(tmp_path, bundle, ScriptedEvaluator([60.0]), {"sts_spearman": 80.0})
    with pytest.raises(GateError, match=r"no configuration stayed within max_drop 1.00%"):
        quantize.run(cfg, ctx)
    assert (ctx.work_dir / "trials.json").is_file()
    ctx2 = _ctx(tmp_path / "b", bundle, ScriptedEvaluator([60.0]), {"sts_spearman": 80.0})
    result = quantize.run(cfg.model_copy(update={"on_fail": "warn"}), ctx2)
    assert result.metrics["chosen_trial"] == 0 and not result.metrics["within_budget"]
    assert (ctx2.artifact_dir / "model.onnx").is_file()


# -- the Intel Neural Compressor backend (real worker script, a stand-in for the INC package) -----------------
FAKE_INC = {
    "__init__.py": "",
    "data_reader.py": "class CalibrationDataReader:\n    pass\n",
    "quantization/__init__.py": (
        "import enum\n"
        "class QuantType(enum.Enum):\n    QInt8 = 0\n    QUInt8 = 1\n"
        "class QuantFormat(enum.Enum):\n    QOperator = 0\n    QDQ = 1\n"
    ),
    "quantization/config.py": (
        "class _Config:\n"
        "    name = 'base'\n"
        "    def __init__(self, **kw):\n        self.kw = kw\n"
        "    def to_dict(self):\n        return {k: v for k, v in self.kw.items() if k != 'calibration_data_reader'}\n"
        "class DynamicQuantConfig(_Config):\n    name = 'dynamic_quant'\n"
        "class StaticQuantConfig(_Config):\n    name = 'static_quant'\n"
        "class SmoothQuantConfig(_Config):\n    name = 'smooth_quant'\n"
    ),
    # Like INC 1.0: evaluates each config, keeps the last model, and calls exit() when nothing met the goal.
    "quantization/tuning.py": (
        "import shutil, tempfile, os\n"
        "def _quantize(model_input, quant_config, calibration_data_reader=None):\n"
        "    calibration_data_reader.rewind()\n"
        "    assert calibration_data_reader.get_next()['input_ids'].ndim == 2\n"
        "    out = os.path.join(tempfile.mkdtemp(), 'model.onnx')\n"
        "    shutil.copy(model_input, out)\n"
        "    return out\n"
        "class TuningConfig:\n"
        "    def __init__(self, config_set, tolerable_loss, max_trials):\n"
        "        self.config_set, self.tolerable_loss, self.max_trials = config_set, tolerable_loss, max_trials\n"
        "def autotune(model_input, tune_config, eval_fn, calibration_data_reader=None):\n"
        "    baseline = eval_fn(model_input)\n"
        "    for config in tune_config.config_set[:tune_config.max_trials]:\n"
        "        if eval_fn(_quantize(model_input, config, calibration_data_reader)) >= baseline * (1 - tune_config.tolerable_loss):\n"
        "            return 'model'\n"
        "    print('no config meets the goal')\n"
        "    exit(0)\n"
    ),
}


def _fake_inc_python(tmp_path: Path, tuning: str | None = None) -> Path:
    """A 'python' that runs the real worker script with the stand-in INC package (``tuning`` replaces its
    tuning module). Needs neither the INC virtualenv nor the network."""
    import sys

    root = tmp_path / "fake-inc"
    files = {**FAKE_INC, **({"quantization/tuning.py": tuning} if tuning else {})}
    for name, text in files.items():
        path = root / "onnx_neural_compressor" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\nPYTHONPATH={root} exec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    return python


def test_inc_backend_survives_exit_and_returns_the_best_trial(tmp_path: Path, bundle: Path) -> None:
    from edgedistill.quant.inc import IncSearch

    scores = iter([79.0, 76.0, 77.0, 75.0])  # best (trial 0) first; INC would hand back the last
    budget = Budget({"sts_spearman": 80.0}, ["sts_spearman"], 0.001)
    search = IncSearch(bundle, tmp_path / "s", presets.avx2(), calibration_sentences=make_sentences(8),
                       budget=budget, evaluate=lambda b: {"sts_spearman": next(scores)},
                       proxy=measure.Proxy(bundle, make_sentences(6)),
                       latency_fn=lambda b: {"latency_ms_p50": 1.0}, python=_fake_inc_python(tmp_path),
                       config=SearchConfig(max_evaluations=4))
    result = search.run()
    assert search.inc_status["status"] == "exit"  # exit() ended the worker's autotune, not this process
    assert len(result.trials) == 4 and not result.within_budget
    assert result.chosen.id == 0 and result.chosen.drop == pytest.approx(0.0125)
    names = [t.record()["inc_config"]["name"] for t in result.trials]
    assert names == ["dynamic_quant", "static_quant", "static_quant", "static_quant"]
    record = result.trials[1].record()
    assert record["backend"] == "inc" and record["setting"].startswith("INC static_quant: static percentile")
    assert {"proxy_cosine", "latency_ms_p50", "size_mb", "sts_spearman", "relative_drop"} <= set(record)


def test_inc_trial_labels_tell_its_tuning_axes_apart(tmp_path: Path) -> None:
    from edgedistill.quant.search import Trial

    def label(params: dict) -> str:
        trial = Trial(0, QuantSettings(), [], [], tmp_path, backend="inc")
        trial.extra["inc_config"] = {"name": "dynamic_quant", "params": params}
        return trial.label

    assert label({"quant_last_matmul": True}) == "INC dynamic_quant: dynamic U8S8 per-channel emb-int8"
    assert label({"quant_last_matmul": False}).endswith("emb-int8, last MatMul fp32")


def test_inc_worker_failing_before_any_trial_is_an_error_with_its_log(tmp_path: Path, bundle: Path) -> None:
    from edgedistill.quant.inc import IncError, IncSearch

    tuning = ("class TuningConfig:\n    def __init__(self, **kw):\n        pass\n"
              "def _quantize(*a, **k):\n    pass\n"
              "def autotune(*a, **k):\n    print('INC log line')\n    raise RuntimeError('unsupported model')\n")
    search = IncSearch(bundle, tmp_path / "s", presets.portable(), calibration_sentences=make_sentences(4),
                       budget=Budget({"sts_spearman": 80.0}, ["sts_spearman"], 0.01),
                       evaluate=lambda b: pytest.fail("nothing to evaluate"),
                       proxy=measure.Proxy(bundle, make_sentences(4)),
                       latency_fn=lambda b: {"latency_ms_p50": 1.0}, python=_fake_inc_python(tmp_path, tuning))
    with pytest.raises(IncError, match=r"failed before any trial: RuntimeError: unsupported model.*INC log line"):
        search.run()


def test_inc_worker_killed_mid_search_keeps_the_trials_so_far(tmp_path: Path, bundle: Path) -> None:
    from edgedistill.quant.inc import IncSearch

    tuning = FAKE_INC["quantization/tuning.py"].replace(
        "    print('no config meets the goal')\n", "    os._exit(3)\n")  # a hard crash: no exit(), no report
    scores = iter([79.0, 76.0])
    search = IncSearch(bundle, tmp_path / "s", presets.avx2(), calibration_sentences=make_sentences(4),
                       budget=Budget({"sts_spearman": 80.0}, ["sts_spearman"], 0.001),
                       evaluate=lambda b: {"sts_spearman": next(scores)},
                       proxy=measure.Proxy(bundle, make_sentences(4)), latency_fn=lambda b: {"latency_ms_p50": 1.0},
                       python=_fake_inc_python(tmp_path, tuning), config=SearchConfig(max_evaluations=2))
    result = search.run()
    assert search.inc_status == {} and len(result.trials) == 2 and result.chosen.id == 0


def test_stage_with_the_inc_backend_saves_and_reports_like_onnxruntime(tmp_path: Path, bundle: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from edgedistill.quant import inc

    monkeypatch.setattr(inc, "ensure_venv", lambda: _fake_inc_python(tmp_path))
    ctx = _ctx(tmp_path, bundle, ScriptedEvaluator([79.9]), {"sts_spearman": 80.0})
    result = quantize.run(QuantizeStage(type="quantize", backend="inc", search=FAST), ctx)
    m = result.metrics
    assert m["backend"] == "inc" and m["within_budget"] and m["chosen_trial"] == 0 and m["evaluations"] == 1
    assert m["trials"][0]["inc_config"]["name"] == "dynamic_quant"
    assert m["trials"][0]["latency_ms_p50"] > 0 and "search_latency_ms_p50" in m["trials"][0]  # timed side by side
    config = json.loads((ctx.artifact_dir / quantize.CONFIG_FILE).read_text())
    assert config["backend"] == "inc" and config["method"] == "dynamic"
    assert config["measured"]["relative_drop"] == pytest.approx(0.00125)
    assert json.loads((ctx.artifact_dir / "manifest.json").read_text())["quantization"]["backend"] == "inc"
    section = quantize.report_section(m)
    assert m["inc_status"] == {"status": "returned"} and "INC's autotune ended: returned" in section
    assert section.startswith("Backend inc, target portable") and "| 0 | INC dynamic_quant: dynamic" in section
    assert "**chosen**" in section


def test_inc_requirements_come_from_the_extra() -> None:
    from edgedistill.quant.inc import requirements

    reqs = requirements()
    assert "onnx-neural-compressor==1.0" in reqs and any(r.startswith("numpy==1.") for r in reqs)


@pytest.mark.slow
def test_real_inc_autotune_on_a_tiny_bundle(tmp_path: Path, bundle: Path) -> None:
    """The real onnx-neural-compressor in its own virtualenv (created from PyPI on first use)."""
    from edgedistill.quant.inc import IncSearch

    world = World(bundle)
    search = IncSearch(bundle, tmp_path / "s", presets.avx2(), calibration_sentences=make_sentences(16),
                       budget=Budget({"sts_spearman": 80.0}, ["sts_spearman"], 0.5), evaluate=world.quality,
                       proxy=measure.Proxy(bundle, make_sentences(8)), latency_fn=world.latency,
                       config=SearchConfig(max_evaluations=2))
    result = search.run()
    assert search.inc_status["status"] in ("returned", "exhausted", "exit") and result.trials
    assert "MatMulInteger" in ops(result.trials[0].bundle / "model.onnx")
    assert result.chosen.within_budget
