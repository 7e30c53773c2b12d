"""The bench bundle: an ONNX model, its tokenizer, real sentences, settings and bench.py in one folder.

Copy the folder to any device with python3, onnxruntime, numpy and tokenizers and run ``python3 bench.py``;
its result.json can be merged into the run with ``edgedistill report RUN_DIR --merge result.json``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from edgedistill.errors import EdgedistillError

log = logging.getLogger(__name__)

BENCH_SCRIPT = Path(__file__).with_name("bench.py")
README = """edgedistill bench bundle
========================

model/          the ONNX model, its tokenizer and manifest.json
sentences.json  {n} real held-out sentences (batch-1 latency and throughput inputs)
settings.json   warm-ups, repeats, thread counts, batch sizes, sequence lengths
bench.py        the profiler: needs only python3 (3.8+), onnxruntime, numpy and tokenizers

On the device:
    python3 -m pip install onnxruntime numpy tokenizers
    python3 bench.py --label my-device --out result.json

Back on the machine that holds the run:
    edgedistill report {run_dir} --merge result.json
"""


def model_files(model_dir: Path) -> list[Path]:
    """What a bundle needs from an artifact: manifest, model (with external data) and tokenizer."""
    model_dir = Path(model_dir)
    manifest_path = model_dir / "manifest.json"
    if not manifest_path.is_file():
        raise EdgedistillError(f"{model_dir}: no manifest.json; the profile stage needs an exported ONNX bundle "
                               "(put it after export or quantize)")
    manifest = json.loads(manifest_path.read_text())
    model = model_dir / manifest.get("model", "model.onnx")
    files = [manifest_path, model, model_dir / manifest.get("tokenizer", "tokenizer.json")]
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    graph = onnx.load(str(model), load_external_data=False).graph
    external = {ExternalDataInfo(t).location for t in graph.initializer if uses_external_data(t)}
    files += [model_dir / name for name in sorted(external)]
    for path in files:
        if not path.is_file():
            raise EdgedistillError(f"{model_dir}: bundle file {path.name} is missing; re-run the stage that made it")
    return files


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link (artifacts are never modified after their stage finishes), else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def make_bench_bundle(model_dir: Path, sentences: list[str], settings: dict[str, Any], out: Path,
                      run_dir: str = "runs/<recipe>") -> Path:
    """Write a self-contained bench bundle for ``model_dir`` into ``out`` and return it."""
    out = Path(out)
    (out / "model").mkdir(parents=True, exist_ok=True)
    for path in model_files(model_dir):
        _link_or_copy(path, out / "model" / path.name)
    shutil.copy2(BENCH_SCRIPT, out / "bench.py")
    (out / "sentences.json").write_text(json.dumps(sentences, ensure_ascii=False, indent=0) + "\n")
    (out / "settings.json").write_text(json.dumps(settings, indent=1) + "\n")
    (out / "README.txt").write_text(README.format(n=len(sentences), run_dir=run_dir))
    return out


def load_result(source: Path | dict[str, Any], where: str | None = None) -> dict[str, Any]:
    """Read and check a bench result (the JSON bench.py writes); raise a clear error when it is not one."""
    from edgedistill.profiling.bench import FORMAT, VERSION

    where = where or str(source)
    if isinstance(source, dict):
        data = source
    else:
        try:
            data = json.loads(Path(source).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise EdgedistillError(f"{where}: not a readable JSON file ({e}); pass the result.json bench.py wrote") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise EdgedistillError(f"{where}: not an edgedistill bench result (no \"format\": \"{FORMAT}\"); "
                               "pass the result.json written by bench.py from a bench bundle")
    if data.get("version") != VERSION:
        raise EdgedistillError(f"{where}: bench result version {data.get('version')}, this edgedistill reads "
                               f"version {VERSION}; re-run the bench.py shipped with this version")
    missing = [k for k in ("label", "host", "latency_ms", "headline_threads", "throughput", "model") if k not in data]
    if missing:
        raise EdgedistillError(f"{where}: bench result lacks {', '.join(missing)}; it is truncated or edited")
    return data
