"""The torch-free runtime: Python API, `edgedistill embed`, checksums, and a fresh virtualenv without torch."""

from __future__ import annotations

import ast
import importlib.metadata as md
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from packaging.requirements import Requirement

import edgedistill
from edgedistill.cli import main
from edgedistill.contract import Artifact, StageContext
from edgedistill.recipe import ExportStage
from edgedistill.runtime import BundleError, OnnxEncoder, load
from edgedistill.stages import export
from edgedistill.tasks.embedding.evaluate import EvalSet
from tests.tiny import build_st_model, make_sentences

RUNTIME_PACKAGES = ["onnxruntime", "numpy", "tokenizers", "click"]
FORBIDDEN = {"torch", "transformers", "sentence-transformers", "sentence_transformers"}
TEXTS = ["A man is playing a guitar.", "Two dogs run in the park.", "Zebrafish"]


class _Sentences:
    data = EvalSet(sts=None, heldout=make_sentences(20, seed=3), latency_sentences=make_sentences(5))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A bundle of a tiny BERT (with a Dense layer) and the sentence-transformers embeddings of TEXTS."""
    from sentence_transformers import SentenceTransformer

    root = tmp_path_factory.mktemp("runtime")
    model = build_st_model(root / "st", family="bert", hidden=16, layers=2, dense_out=12)
    work = root / "work"
    work.mkdir()
    ctx = StageContext(index=1, teacher=Path("."), input=Artifact("sentence-transformer", model, "k"),
                       work_dir=work, device="cpu", input_evaluation={}, _evaluator=lambda: _Sentences())
    export.run(ExportStage(type="export", exporter="torchscript", optimize="never"), ctx)
    reference = SentenceTransformer(str(model), device="cpu").encode(TEXTS, normalize_embeddings=True)
    return ctx.artifact_dir, reference


RUNTIME_MODULES = [Path(edgedistill.__file__).with_name("runtime.py"),
                   *sorted(Path(edgedistill.__file__).parent.glob("tasks/*/runtime.py"))]


@pytest.mark.parametrize("module", RUNTIME_MODULES, ids=lambda p: str(p.relative_to(p.parents[2])))
def test_runtime_modules_import_no_torch_or_transformers(module: Path) -> None:
    """The torch-free runtime, and each task's runtime it dispatches to."""
    tree = ast.parse(module.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported & FORBIDDEN == set()
    assert imported <= {"__future__", "hashlib", "json", "pathlib", "typing", "importlib", "numpy", "onnxruntime",
                        "tokenizers", "onnxruntime_extensions", "edgedistill"}


def test_load_encodes_like_sentence_transformers(exported: tuple[Path, np.ndarray]) -> None:
    bundle, reference = exported
    model = load(bundle)
    got = model.encode(TEXTS)
    assert got.shape == (3, 12) and got.dtype == np.float32
    assert np.abs(got - reference).max() < 1e-5
    assert model.input_names == ["input_ids", "attention_mask", "token_type_ids"]


def test_load_refuses_a_corrupt_or_incomplete_bundle(tmp_path: Path, exported: tuple[Path, np.ndarray]) -> None:
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(exported[0], bundle)
    data = bytearray((bundle / "tokenizer.json").read_bytes())
    data[-3] ^= 1
    (bundle / "tokenizer.json").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="tokenizer.json: sha256 mismatch"):
        load(bundle)
    (bundle / "model.onnx").unlink()
    with pytest.raises(BundleError, match="model.onnx is listed in manifest.json but missing"):
        load(bundle)
    with pytest.raises(BundleError, match="not a bundle"):
        load(tmp_path)
    manifest = json.loads((exported[0] / "manifest.json").read_text())
    (bundle / "manifest.json").write_text(json.dumps({**manifest, "inputs": ["input_ids", "pixel_values"], "sha256": {}}))
    with pytest.raises(BundleError, match="pixel_values"):
        OnnxEncoder(bundle)


def test_embed_command_formats(tmp_path: Path, exported: tuple[Path, np.ndarray]) -> None:
    bundle, reference = exported
    runner = CliRunner()
    result = runner.invoke(main, ["embed", str(bundle), *TEXTS])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["texts"] == TEXTS and payload["dimension"] == 12
    assert np.abs(np.array(payload["embeddings"]) - reference).max() < 1e-6
    lines = runner.invoke(main, ["embed", str(bundle), "--format", "jsonl", *TEXTS]).output.strip().splitlines()
    assert [json.loads(line)["text"] for line in lines] == TEXTS
    short = runner.invoke(main, ["embed", str(bundle), "--format", "short", "hello there"]).output
    assert short.startswith("hello there\t[") and "(12-d)" in short
    texts_file = tmp_path / "texts.txt"
    texts_file.write_text("\n".join(TEXTS) + "\n\n")
    result = runner.invoke(main, ["embed", str(bundle), "--file", str(texts_file), "-o", str(tmp_path / "v.npy")])
    assert result.exit_code == 0, result.output
    assert np.abs(np.load(tmp_path / "v.npy") - reference).max() < 1e-5
    empty = runner.invoke(main, ["embed", str(bundle)])
    assert empty.exit_code == 1 and "no texts" in empty.output
    not_bundle = runner.invoke(main, ["embed", str(tmp_path), "hi"])
    assert not_bundle.exit_code == 1 and "not a bundle" in not_bundle.output


def _closure(names: list[str]) -> set[str]:
    """The installed distributions ``names`` need at run time (extras not requested are skipped)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        dist = md.distribution(name)
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def torch_free_venv(root: Path) -> Path:
    """A new virtualenv holding only the runtime's packages (linked from this environment, no network)
    and the edgedistill source; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    needed = _closure(RUNTIME_PACKAGES)
    assert not needed & FORBIDDEN, needed & FORBIDDEN
    for name in needed:
        dist = md.distribution(name)
        source = Path(dist.locate_file(""))
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            target = source / top
            if target.exists() and not (site / top).exists() and top != "__pycache__":
                (site / top).symlink_to(target)
    (site / "edgedistill").symlink_to(Path(edgedistill.__file__).parent)
    return python


def test_runtime_in_a_fresh_virtualenv_without_torch(tmp_path: Path, exported: tuple[Path, np.ndarray]) -> None:
    bundle, reference = exported
    python = torch_free_venv(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    probe = (
        "import importlib.util, sys\n"
        "assert importlib.util.find_spec('torch') is None and importlib.util.find_spec('transformers') is None\n"
        "import numpy as np\n"
        "from edgedistill.runtime import load\n"
        f"v = load({str(bundle)!r}).encode({TEXTS!r})\n"
        f"np.save({str(tmp_path / 'api.npy')!r}, v)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')))\n"
    )
    api = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
    assert api.returncode == 0, api.stderr
    assert api.stdout.strip() == "[]"
    assert np.abs(np.load(tmp_path / "api.npy") - reference).max() < 1e-5
    cli = subprocess.run([str(python), "-m", "edgedistill.cli", "embed", str(bundle), *TEXTS], capture_output=True,
                         text=True, env=env, cwd=tmp_path, check=False)
    assert cli.returncode == 0, cli.stderr
    assert np.abs(np.array(json.loads(cli.stdout)["embeddings"]) - reference).max() < 1e-5
    # The venv really lacks torch: importing it fails there.
    no_torch = subprocess.run([str(python), "-c", "import torch"], capture_output=True, text=True, env=env, check=False)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
