"""Sequence-classification bundles (classifiers, cross-encoder rerankers) load as shipped in their clients.

A tiny transformers ``BertForSequenceClassification`` built in code is saved as a torch folder, exported with
torch.onnx (logits out) and quantized (dynamic INT8); ``client_layout.write_client_layout(kind=
"sequence-classification")`` writes config.json and the tokenizer files. Then: transformers.js's
``text-classification`` pipeline and ``AutoModelForSequenceClassification`` (texts and text pairs) in Node, and
sentence-transformers' ``CrossEncoder`` on the torch folder, each against onnxruntime on the same graph.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgedistill.client_layout import FP32_FILE, INT8_FILE, write_client_layout
from tests.tiny import make_sentences, write_vocab

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / "examples" / "web" / "node_modules"
NODE = shutil.which("node")
TEXTS = make_sentences(7, seed=41)
PAIRS = [[TEXTS[i], TEXTS[(i * 3 + 1) % len(TEXTS)]] for i in range(len(TEXTS))]
COLUMNS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}


def build(root: Path, labels: list[str]) -> dict:
    """Torch folder + bundle (onnx/model.onnx, onnx/model_quantized.onnx, tokenizer.json, client files)."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    torch.manual_seed(len(labels))
    torch_dir, bundle = root / "torch", root / "bundle"
    vocab = write_vocab(root / "vocab.txt").read_text().split()
    tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=len(labels),
                        attn_implementation="eager")
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(torch_dir)
    tokenizer.save_pretrained(torch_dir)
    (bundle / "onnx").mkdir(parents=True)
    example = tokenizer(PAIRS[0][0], PAIRS[0][1], return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    with torch.no_grad():
        torch.onnx.export(model, tuple(example[n] for n in names), str(bundle / FP32_FILE), input_names=names,
                          output_names=["logits"], opset_version=17, dynamo=False,
                          dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names} | {"logits": {0: "batch"}})
    quantize_dynamic(str(bundle / FP32_FILE), str(bundle / INT8_FILE), weight_type=QuantType.QInt8,
                     per_channel=True, reduce_range=True)
    shutil.copy2(torch_dir / "tokenizer.json", bundle / "tokenizer.json")
    manifest = {"inputs": names, "output": "logits", "max_seq_length": 64, "pad_token": "[PAD]", "family": "bert"}
    saved = json.loads((torch_dir / "config.json").read_text())
    clients = write_client_layout(bundle, manifest, kind="sequence-classification", labels=labels, config=saved,
                                  tokenizer_config=json.loads((torch_dir / "tokenizer_config.json").read_text()))
    return {"torch": torch_dir, "bundle": bundle, "labels": labels, "clients": clients}


@pytest.fixture(scope="module", params=[["negative", "neutral", "positive"], ["relevant"]],
                ids=["classifier", "reranker"])
def bundle(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return build(tmp_path_factory.mktemp("seqcls"), request.param)


def ort_logits(bundle: Path, file: str, texts: list[str], pairs: list[str] | None = None,
               batched: bool = False) -> np.ndarray:
    """onnxruntime on the bundle's graph, the reference every client is held to: one call per input, or one
    padded batch (a dynamically quantized graph's logits depend on the batch, so each way has its reference)."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    session = ort.InferenceSession(str(bundle / file), providers=["CPUExecutionProvider"])
    items = list(zip(texts, pairs, strict=True)) if pairs else texts
    chunks = [items] if batched else [[item] for item in items]
    rows = []
    for chunk in chunks:
        encodings = tokenizer.encode_batch(chunk)
        feeds = {n: np.array([getattr(e, c) for e in encodings], dtype=np.int64) for n, c in COLUMNS.items()}
        rows.extend(session.run(["logits"], feeds)[0])
    return np.array(rows)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_config_follows_transformers(bundle: dict) -> None:
    config = json.loads((bundle["bundle"] / "config.json").read_text())
    labels = bundle["labels"]
    assert config["architectures"] == ["BertForSequenceClassification"] and config["model_type"] == "bert"
    assert config["num_labels"] == len(labels)
    assert config["id2label"] == {str(i): name for i, name in enumerate(labels)}
    assert config["label2id"] == {name: i for i, name in enumerate(labels)}
    expected = "single_label_classification" if len(labels) > 1 else "multi_label_classification"
    assert config["problem_type"] == expected == bundle["clients"]["clients"]["problem_type"]
    assert json.loads((bundle["bundle"] / "tokenizer_config.json").read_text())["model_max_length"] == 64
    assert json.loads((bundle["bundle"] / "special_tokens_map.json").read_text())["sep_token"] == "[SEP]"


def test_bad_input_names_the_field(tmp_path: Path) -> None:
    manifest = {"inputs": ["input_ids"], "output": "logits", "max_seq_length": 8, "pad_token": "[PAD]",
                "family": "bert"}
    with pytest.raises(ValueError, match="labels"):
        write_client_layout(tmp_path, manifest, kind="sequence-classification")
    with pytest.raises(ValueError, match="output"):
        write_client_layout(tmp_path, {**manifest, "output": "sentence_embedding"}, kind="sequence-classification",
                            labels=["a", "b"])
    with pytest.raises(ValueError, match="problem_type"):
        write_client_layout(tmp_path, manifest, kind="sequence-classification", labels=["a"], problem_type="x")
    with pytest.raises(ValueError, match="kind"):
        write_client_layout(tmp_path, manifest, kind="token-classification")  # type: ignore[arg-type]


def test_cross_encoder_on_the_torch_folder(bundle: dict) -> None:
    """sentence-transformers' CrossEncoder scores pairs from the torch folder like the exported graph: a sigmoid
    of the one logit (what the bundle's multi_label_classification tells transformers.js to apply), raw logits
    for several labels."""
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(bundle["torch"]), device="cpu")
    scores = np.asarray(model.predict([tuple(p) for p in PAIRS], batch_size=len(PAIRS)))
    logits = ort_logits(bundle["bundle"], FP32_FILE, [p[0] for p in PAIRS], [p[1] for p in PAIRS])
    expected = 1 / (1 + np.exp(-logits)) if len(bundle["labels"]) == 1 else logits
    assert np.abs(scores.reshape(expected.shape) - expected).max() <= 1e-5


@pytest.mark.skipif(not NODE or not NODE_MODULES.is_dir(),
                    reason="needs node and examples/web/node_modules: bash scripts/test.sh")
def test_transformers_js_text_classification(bundle: dict, tmp_path: Path) -> None:
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({"texts": TEXTS, "pairs": PAIRS}))
    proc = subprocess.run([NODE, str(ROOT / "tests" / "clients" / "text_classification.mjs"), str(bundle["bundle"]),
                           str(inputs)], capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "TRANSFORMERS_JS": (NODE_MODULES / "@huggingface/transformers/dist/"
                                                                 "transformers.node.mjs").as_uri()})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    labels = bundle["labels"]
    assert out["config"]["id2label"] == {str(i): name for i, name in enumerate(labels)}
    for dtype, file in (("fp32", FP32_FILE), ("q8", INT8_FILE)):
        alone, batched = (ort_logits(bundle["bundle"], file, TEXTS, batched=b) for b in (False, True))
        for way, logits in (("pipeline_alone", alone), ("pipeline", batched)):  # every label's score, by name
            probabilities = softmax(logits) if len(labels) > 1 else 1 / (1 + np.exp(-logits))
            got = np.array([[{d["label"]: d["score"] for d in row}[name] for name in labels] for row in out[dtype][way]])
            assert np.abs(got - probabilities).max() <= 1e-5, (dtype, way)
        assert np.abs(np.array(out[dtype]["logits"]) - batched).max() <= 1e-5, dtype
        pair_logits = ort_logits(bundle["bundle"], file, [p[0] for p in PAIRS], [p[1] for p in PAIRS], batched=True)
        assert np.abs(np.array(out[dtype]["pair_logits"]) - pair_logits).max() <= 1e-5, dtype


def test_bundle_writer_picks_the_layout_from_the_manifest(bundle: dict, tmp_path: Path) -> None:
    """A task's export that writes ``labels`` into its manifest gets this layout from bundle.write_bundle."""
    from edgedistill.client_layout import write_layout
    from edgedistill.manifest import write_manifest

    artifact = tmp_path / "artifact"
    artifact.mkdir()
    shutil.copy2(bundle["bundle"] / FP32_FILE, artifact / "model.onnx")
    shutil.copy2(bundle["torch"] / "config.json", artifact / "config.json")
    manifest = {"model": "model.onnx", "inputs": ["input_ids", "attention_mask", "token_type_ids"], "output": "logits",
                "max_seq_length": 64, "pad_token": "[PAD]", "family": "bert", "labels": bundle["labels"]}
    write_manifest(artifact, manifest)
    out = tmp_path / "bundle"
    out.mkdir()
    fields = write_layout(out, manifest, [artifact], sentences=TEXTS)
    config = json.loads((out / "config.json").read_text())
    assert fields["model"] == FP32_FILE and fields["clients"]["kind"] == "sequence-classification"
    assert config["id2label"] == {str(i): name for i, name in enumerate(bundle["labels"])}
    assert "token_embeddings" not in fields  # a per-token output is for embedding graphs only
