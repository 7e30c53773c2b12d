"""The deploy bundle loads as shipped in other clients and gives the project's own embeddings.

Clients: plain onnxruntime + tokenizers, sentence-transformers (the torch student folder), transformers.js in Node
(AutoModel, local files only), fastembed (add_custom_model over the bundle folder, offline; in its own virtualenv,
.venv-clients, because it pins huggingface_hub<2, which would downgrade the project's 2.x) and the browser demo
(onnxruntime-web + transformers.js's tokenizer in headless Chromium). Each embeds sentences one at a time and in one
batch; fp32 must match the runtime to 1e-5, INT8 to cosine 0.9999.

Two tiny bundles: ``arm64-static`` (portable graph, static INT8: batch-invariant as is) and ``fused-dynamic``
(onnxruntime fusions, dynamic INT8: the manifest asks for one sentence per run, which the clients here follow;
``batched_raw``, one call for the whole batch against that advice, is recorded but not held to the bar).
Set EDGEDISTILL_CLIENT_TABLE=path.json to keep the measured differences.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from edgedistill.contract import artifact_size_mb
from edgedistill.pipeline import run_recipe
from edgedistill.portable import contrib_ops
from edgedistill.recipe import load_recipe
from edgedistill.runtime import load
from tests.conftest import tiny_recipe, write_recipe
from tests.tiny import WORDS, make_sentences

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "examples" / "web"
NODE_MODULES = WEB / "node_modules"
CLIENTS = Path(__file__).resolve().parent / "clients"
CLIENT_PYTHON = ROOT / ".venv-clients" / "bin" / "python"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NODE = shutil.which("node")
NPM_HINT = "needs node and examples/web/node_modules: bash scripts/test.sh (npm ci --ignore-scripts there)"
FP32_MAX_DIFF, INT8_MIN_COSINE = 1e-5, 0.9999
SENTENCES = make_sentences(10, seed=31) + [" ".join(WORDS * 3)]  # the last one is truncated to max_seq_length
RESULTS: list[dict] = []


@pytest.fixture(scope="module", params=["arm64-static", "fused-dynamic"])
def bundle(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tiny_world: dict) -> dict:
    root = tmp_path_factory.mktemp(f"clients-{request.param}")
    recipe = tiny_recipe(tiny_world)
    recipe["stages"] = recipe["stages"][:3]
    recipe["stages"][1].update(optimize="always", timing_sentences=4, timing_rounds=3)
    if request.param == "arm64-static":
        recipe["stages"][2].update(target="arm64", method="static", calibration_sentences=50)
    records = run_recipe(load_recipe(write_recipe(root / "r.yaml", recipe)), root / "runs")
    path = root / "runs" / "tiny" / "bundle"
    sentences = root / "sentences.json"
    sentences.write_text(json.dumps(SENTENCES))
    reference = {p: load(path, precision=p).encode(SENTENCES, batch_size=1) for p in ("fp32", "int8")}
    return {"name": request.param, "path": path, "student": records[0].artifact.path, "sentences": sentences,
            "quantize_metrics": records[2].metrics, "export": records[1].artifact.path, "report": (root / "runs" / "tiny" / "report.md").read_text(),
            "reference": reference, "manifest": json.loads((path / "manifest.json").read_text())}


@pytest.fixture(scope="module", autouse=True)
def keep_table() -> None:
    yield
    if os.environ.get("EDGEDISTILL_CLIENT_TABLE") and RESULTS:
        Path(os.environ["EDGEDISTILL_CLIENT_TABLE"]).write_text(json.dumps(RESULTS, indent=1))


def check(bundle: dict, client: str, precision: str, runs: dict[str, object], rows: np.ndarray | None = None) -> None:
    """Compare a client's vectors (per way of running: alone, batched, ...) with the runtime's, one at a time;
    ``rows`` selects the sentences the client embedded (all by default)."""
    reference = bundle["reference"][precision] if rows is None else bundle["reference"][precision][rows]
    for way, vectors in runs.items():
        got = np.asarray(vectors, dtype=np.float32)
        assert got.shape == reference.shape, (client, precision, way, got.shape)
        diff = float(np.abs(got - reference).max())
        cosine = float(((got * reference).sum(axis=1) / np.linalg.norm(got, axis=1)
                        / np.linalg.norm(reference, axis=1)).min())
        RESULTS.append({"bundle": bundle["name"], "client": client, "precision": precision, "way": way,
                        "max_abs_diff": diff, "min_cosine": cosine})
        if way == "batched_raw" and precision == "int8" and not bundle["manifest"]["batch_invariance"]["graph_invariant"]:
            continue  # a dynamic graph run batched against the manifest's advice: recorded, not held to the bar
        if precision == "fp32":
            assert diff <= FP32_MAX_DIFF, (client, precision, way, diff)
        else:
            assert cosine >= INT8_MIN_COSINE, (client, precision, way, cosine)


def test_layout_and_graphs(bundle: dict) -> None:
    path, manifest = bundle["path"], bundle["manifest"]
    for name in ("onnx/model.onnx", "onnx/model_quantized.onnx", "config.json", "tokenizer.json",
                 "tokenizer_config.json", "special_tokens_map.json", "manifest.json"):
        assert (path / name).is_file(), name
    invariance = manifest["batch_invariance"]
    if bundle["name"] == "arm64-static":  # the portable graph: standard ONNX ops only, fp32 and INT8
        assert manifest["graph"]["portable"] and manifest["graph"]["contrib_ops"] == []
        assert contrib_ops(path / "onnx/model.onnx") == [] == contrib_ops(path / "onnx/model_quantized.onnx")
        assert invariance == {"run_rows_separately": False, "graph_invariant": True, "dynamic_ops": [],
                              "graph_min_cosine": pytest.approx(1.0, abs=1e-6)}
    # The export keeps its plain graph beside the fused one; the artifact's size counts the graph it serves.
    export = bundle["export"]
    assert contrib_ops(export / "model.onnx") and not contrib_ops(export / "model.plain.onnx")
    assert artifact_size_mb(export) == round((export / "model.onnx").stat().st_size / 1e6, 3)
    if bundle["name"] == "fused-dynamic":
        assert contrib_ops(path / "onnx/model_quantized.onnx") and not manifest["graph"]["portable"]
        assert invariance["run_rows_separately"] and "DynamicQuantizeLinear" in invariance["dynamic_ops"]
        assert json.loads((path / "config.json").read_text())["edgedistill"]["run_rows_separately"]


def test_runtime_is_batch_invariant(bundle: dict) -> None:
    """The runtime's INT8 vectors do not depend on batch mates; the quantize stage measured and reported it."""
    from edgedistill.runtime import OnnxEncoder

    model = load(bundle["path"])
    alone, batched = model.encode(SENTENCES, batch_size=1), model.encode(SENTENCES, batch_size=len(SENTENCES))
    assert np.abs(alone - batched).max() <= 1e-6
    measured = bundle["quantize_metrics"]["batch_invariance"]
    assert measured["served"]["min_cosine"] >= INT8_MIN_COSINE and "Batch invariance" in bundle["report"]
    raw = OnnxEncoder(bundle["path"])
    raw.rows_separately = False  # the graph as is, one call for the whole batch
    drift = np.abs(alone - raw.encode(SENTENCES, batch_size=len(SENTENCES))).max()
    if bundle["name"] == "fused-dynamic":  # per-batch activation scales: the vectors move
        assert model.rows_separately and drift > 1e-4 and measured["graph"]["max_abs_diff"] > 1e-4
    else:  # static scales: invariant as is
        assert not model.rows_separately and drift <= 1e-6 and measured["graph_invariant"]


def test_embed_cli_picks_a_graph(bundle: dict, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from edgedistill.cli import main

    for precision in ("fp32", "int8"):
        out = tmp_path / f"{precision}.npy"
        result = CliRunner().invoke(main, ["embed", str(bundle["path"]), *SENTENCES[:3], "--precision", precision,
                                           "-o", str(out)])
        assert result.exit_code == 0, result.output
        assert np.abs(np.load(out) - bundle["reference"][precision][:3]).max() <= 1e-6


def test_plain_onnxruntime(bundle: dict) -> None:
    """What the bundle README tells an app without edgedistill to do: tokenizers + onnxruntime."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    path, manifest = bundle["path"], bundle["manifest"]
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=manifest["max_seq_length"])
    tokenizer.enable_padding(pad_id=manifest["pad_token_id"], pad_token=manifest["pad_token"])
    columns = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
    for precision, file in manifest["models"].items():
        session = ort.InferenceSession(str(path / file), providers=["CPUExecutionProvider"])

        def run(texts: list[str], session: ort.InferenceSession = session) -> np.ndarray:
            encodings = tokenizer.encode_batch(texts)
            feeds = {n: np.array([getattr(e, columns[n]) for e in encodings], dtype=np.int64) for n in manifest["inputs"]}
            return session.run([manifest["output"]], feeds)[0]

        alone = np.concatenate([run([s]) for s in SENTENCES])
        raw = run(SENTENCES)
        rows = precision == "int8" and manifest["batch_invariance"]["run_rows_separately"]
        check(bundle, "onnxruntime", precision, {"alone": alone, "batched": alone if rows else raw, "batched_raw": raw})


def test_sentence_transformers_student(bundle: dict) -> None:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(bundle["student"]), device="cpu")
    alone = np.concatenate([model.encode([s], normalize_embeddings=True) for s in SENTENCES])
    batched = model.encode(SENTENCES, batch_size=len(SENTENCES), normalize_embeddings=True)
    check(bundle, "sentence-transformers (torch)", "fp32", {"alone": alone, "batched": batched})


def _node(script: str, *args: str, **env: str) -> dict:
    proc = subprocess.run([NODE, str(CLIENTS / script), *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env}, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.skipif(not NODE or not NODE_MODULES.is_dir(), reason=NPM_HINT)
def test_transformers_js_node(bundle: dict) -> None:
    out = _node("transformers_node.mjs", str(bundle["path"]), str(bundle["sentences"]),
                TRANSFORMERS_JS=(NODE_MODULES / "@huggingface/transformers/dist/transformers.node.mjs").as_uri())
    for dtype, precision in (("fp32", "fp32"), ("q8", "int8")):
        runs = {k: out[dtype][k] for k in ("alone", "batched", "batched_raw")}
        check(bundle, "transformers.js (Node)", precision, runs)
    # pipeline('feature-extraction', {pooling: 'mean', normalize: true}) over the graph's token_embeddings, where
    # the bundle has them (the fp32 graph always here: mean pooling, a linear projection); refused elsewhere.
    contract = json.loads((bundle["path"] / "config.json").read_text())["edgedistill"]
    assert contract["token_embeddings"]["fp32"]
    fits = np.array(out["fits"])
    assert fits[:-1].all() and not fits[-1]  # the over-long sentence is left out (docs/clients.md: truncation)
    for dtype, precision in (("fp32", "fp32"), ("q8", "int8")):
        run = out["pipeline"][dtype]
        assert run["ok"] == contract["token_embeddings"][precision], run.get("error")
        if run["ok"]:
            rows = precision == "int8" and bundle["manifest"]["batch_invariance"]["run_rows_separately"]
            runs = {"alone": run["alone"], "batched": run["alone"] if rows else run["batched_raw"]}
            check(bundle, "transformers.js pipeline (Node)", precision, runs, rows=fits)


@pytest.mark.skipif(not CLIENT_PYTHON.is_file(), reason="needs .venv-clients with fastembed: bash scripts/test.sh")
def test_fastembed(bundle: dict) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([str(CLIENT_PYTHON), str(CLIENTS / "fastembed_client.py"), str(bundle["path"]),
                           str(bundle["sentences"])], capture_output=True, text=True, timeout=300, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    for precision in ("fp32", "int8"):
        check(bundle, "fastembed", precision, {k: out[precision][k] for k in ("alone", "batched", "batched_raw")})


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def site(bundle: dict, tmp_path: Path):
    """examples/web served on 127.0.0.1 with the bundle beside the page (as the demo's README sets it up)."""
    root = tmp_path / "site"
    root.mkdir()
    for name in ("index.html", "edgedistill.js", "node_modules"):
        (root / name).symlink_to(WEB / name)
    (root / "bundle").symlink_to(bundle["path"])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    server.shutdown()


@pytest.mark.skipif(not NODE or not NODE_MODULES.is_dir(), reason=NPM_HINT)
@pytest.mark.skipif(not CHROMIUM, reason="needs Debian's chromium (apt-get install -y chromium; scripts/test.sh)")
def test_browser_demo(bundle: dict, site: str) -> None:
    out = _node("browser.mjs", site, str(bundle["sentences"]), CHROMIUM=CHROMIUM,
                PLAYWRIGHT_CORE=(NODE_MODULES / "playwright-core/index.mjs").as_uri())
    for precision in ("fp32", "int8"):
        page = out[precision]
        check(bundle, "onnxruntime-web (Chromium)", precision,
              {k: page[k] for k in ("alone", "batched", "batched_raw")})
        assert page["ranked"][0].endswith("A man is playing a guitar.")  # the query itself ranks first
        assert page["rows_separately"] == (precision == "int8" and bundle["name"] == "fused-dynamic")
