"""What ships: the deploy bundle of a run (runs/<name>/bundle/) and the distilled student's model card."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from edgedistill.evaluate import PRIMARY_METRIC

if TYPE_CHECKING:
    from edgedistill.recipe import Recipe
    from edgedistill.runner import StageRecord

log = logging.getLogger(__name__)

BUNDLE_DIR = "bundle"
IN_GRAPH_CHECK_SENTENCES = 64


# -- deploy bundle -----------------------------------------------------------------------------------
def figures(records: list[StageRecord], teacher: dict[str, Any]) -> dict[str, Any]:
    """The final model's quality and latency, as in the report (the profile row when there is one)."""
    from edgedistill.report import build_rows

    rows = build_rows(teacher, records)
    final = rows[-1]
    evaluation = next((r.evaluation for r in reversed(records) if not r.metrics.get("passthrough")), {})
    profile = next((r.metrics for r in reversed(records) if r.type == "profile"), None)
    quality = {k: v for k, v in evaluation.items()
               if not k.startswith("latency") and k not in ("size_mb", "params", "dimension")}
    quality.update(retention_pct=final["retention_pct"], teacher_sts_spearman=teacher.get(PRIMARY_METRIC))
    if profile:
        latency = {k: profile.get(k) for k in ("latency_ms_p50", "latency_ms_p90", "latency_ms_p99",
                                               "throughput_per_s", "throughput_batch_size", "cold_start_ms",
                                               "threads", "host")}
        latency["measured_by"] = "profile stage (batch 1, text in, embedding out)"
    else:
        latency = {k: evaluation.get(k) for k in ("latency_ms_p50", "latency_ms_p90")}
        latency["measured_by"] = "evaluation (batch 1, text in, embedding out)"
    teacher_p50 = teacher.get("latency_ms_p50")
    if teacher_p50 and latency.get("latency_ms_p50"):
        latency["speedup_vs_teacher"] = teacher_p50 / latency["latency_ms_p50"]
    return {"quality": quality, "latency": latency, "size_mb": final["size_mb"], "params_m": final["params_m"],
            "teacher": {k: teacher.get(k) for k in (PRIMARY_METRIC, "latency_ms_p50", "size_mb", "params")}}


def add_tokenizer_in_graph(bundle: Path, manifest: dict, sentences: list[str]) -> dict[str, Any]:
    """Rebuild the strings-in model from the bundle's (final) graph and check it against the two-file path."""
    from edgedistill.errors import GateError
    from edgedistill.optimize import IN_GRAPH_MODEL, build_tokenizer_in_graph, compare, extensions_library
    from edgedistill.runtime import InGraphEncoder, OnnxEncoder

    tolerance = float(manifest.get("tokenizer_in_graph_tolerance", 1e-4))
    extensions_library()
    build_tokenizer_in_graph(bundle / manifest["model"], bundle / manifest["tokenizer"], manifest,
                             bundle / IN_GRAPH_MODEL)
    two_file = OnnxEncoder(bundle)
    check = compare(lambda s: two_file.encode(s, batch_size=1), InGraphEncoder(bundle).encode,
                    sentences[:IN_GRAPH_CHECK_SENTENCES])
    if check["max_abs_diff"] > tolerance:
        raise GateError(f"bundle: the tokenizer-in-graph model differs from the two-file path by "
                        f"{check['max_abs_diff']:.3e} (tolerance {tolerance:g}); set tokenizer_in_graph: false")
    return {"file": IN_GRAPH_MODEL, "input": "text (1-D string tensor)", "output": manifest["output"],
            "needs": "onnxruntime-extensions (custom op library)", "tolerance": tolerance,
            "check_vs_two_file": check}


def write_bundle(run_dir: Path, records: list[StageRecord], teacher: dict[str, Any],
                 sentences: list[str]) -> Path | None:
    """Copy the run's final ONNX model into ``run_dir/bundle`` with a complete manifest and a README.

    Written to a temporary folder and swapped in, so the bundle folder is never half-written.
    Returns None when the final artifact is not an ONNX bundle (e.g. a distill-only recipe).
    """
    from edgedistill.client_layout import write_layout
    from edgedistill.stages.export import update_manifest_hashes

    source = records[-1].artifact.path
    if not (source / "manifest.json").is_file():
        log.info("bundle: the final artifact (%s) is not an ONNX bundle; nothing to ship", source)
        return None
    manifest = json.loads((source / "manifest.json").read_text())
    for leftover in run_dir.glob(f".{BUNDLE_DIR}.*"):  # from a run killed while writing its bundle
        shutil.rmtree(leftover, ignore_errors=True)
    tmp = run_dir / f".{BUNDLE_DIR}.{os.getpid()}.tmp"
    tmp.mkdir()
    shutil.copy2(source / manifest["tokenizer"], tmp / manifest["tokenizer"])
    sources = [r.artifact.path for r in records if (r.artifact.path / "manifest.json").is_file()]
    manifest.update(write_layout(tmp, manifest, sources))
    manifest.pop("sha256", None)
    manifest["source"] = {"recipe": run_dir.name, "artifact": str(source.relative_to(run_dir))
                          if source.is_relative_to(run_dir) else str(source),
                          "chain": [f"{r.index:02d}-{r.type}" for r in records]}
    manifest.update(figures(records, teacher))
    if manifest.get("tokenizer_in_graph"):
        update_manifest_hashes(tmp, manifest)  # the encoders read manifest.json
        manifest["variants"] = {"tokenizer_in_graph": add_tokenizer_in_graph(tmp, manifest, sentences)}
    (tmp / "README.md").write_text(bundle_card(manifest))
    update_manifest_hashes(tmp, manifest)
    final = run_dir / BUNDLE_DIR
    old = run_dir / f".{BUNDLE_DIR}.{os.getpid()}.old"
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    log.info("bundle: %s (%s)", final, ", ".join(sorted(manifest["sha256"]) + ["manifest.json"]))
    return final


def _num(value: Any, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "–"


def bundle_card(manifest: dict) -> str:
    """README.md of a deploy bundle: what it is, its figures and how to call it."""
    q, lat = manifest.get("quality", {}), manifest.get("latency", {})
    inputs = ", ".join(f"`{n}`" for n in manifest["inputs"])
    lines = [
        f"# {manifest['source']['recipe']}: sentence-embedding model for edge apps", "",
        f"{manifest['dimension']}-d, L2-normalised sentence embeddings ({manifest['pooling']} pooling, "
        f"{manifest['family']} encoder, max {manifest['max_seq_length']} tokens, ONNX opset {manifest['opset']}"
        + (", INT8" if manifest.get("quantization") else ", fp32") + ").", "",
        "| file | what |", "|---|---|",
        (f"| `{manifest['model']}` | the whole model: {inputs} (int64, [batch, sequence]) -> `{manifest['output']}` "
        f"(float32, [batch, {manifest['dimension']}]), pooled and L2-normalised inside the graph |"),
        *[f"| `{f}` | the same model in {p} |" for p, f in manifest.get("models", {}).items() if f != manifest["model"]],
        f"| `{manifest['tokenizer']}` | the tokenizer (Hugging Face tokenizers format) |",
        ("| `config.json`, `tokenizer_config.json`, `special_tokens_map.json` | for other clients (transformers.js, "
         "fastembed): the encoder's config, max length and special tokens |"),
    ]
    if manifest.get("variants", {}).get("tokenizer_in_graph"):
        v = manifest["variants"]["tokenizer_in_graph"]
        lines.append(f"| `{v['file']}` | strings in, embeddings out (needs onnxruntime-extensions); max abs diff "
                     f"{v['check_vs_two_file']['max_abs_diff']:.1e} vs the two-file path |")
    if manifest.get("batch_invariance", {}).get("run_rows_separately"):
        lines.append("| | the INT8 graph quantizes activations per batch: embed **one sentence per call** so a vector "
                     "does not depend on its batch mates (edgedistill's runtime does) |")
    lines += [
        "| `manifest.json` | inputs, outputs, settings, sha256 of every file, quality and latency |", "",
        "## Quality and speed", "",
        (f"- STS-benchmark Spearman {_num(q.get('sts_spearman'))} ({_num(q.get('retention_pct'), 1)}% of the teacher's "
        f"{_num(q.get('teacher_sts_spearman'))})"),
        (f"- batch-1 latency p50 {_num(lat.get('latency_ms_p50'))} ms, p90 {_num(lat.get('latency_ms_p90'))} ms "
        f"({lat.get('measured_by', '')}); size {_num(manifest.get('size_mb'), 1)} MB"), "",
        "## Use it", "",
        "```bash",
        "# the runtime needs only onnxruntime, tokenizers and numpy (no torch):",
        'edgedistill embed path/to/bundle "A man is playing a guitar."',
        "```", "",
        "```python",
        "from edgedistill.runtime import load",
        "model = load('path/to/bundle')",
        "vectors = model.encode(['A man is playing a guitar.'])   # float32, L2-normalised",
        "```", "",
        ("Without edgedistill: tokenize with `tokenizers.Tokenizer.from_file('tokenizer.json')` (truncate to "
        f"{manifest['max_seq_length']} tokens, pad with id {manifest['pad_token_id']}), feed {inputs} as int64 to "
        f"`{manifest['model']}` with onnxruntime, and read `{manifest['output']}`."), "",
    ]
    return "\n".join(lines)


# -- model card of the distilled student -----------------------------------------------------------------
def write_model_card(folder: Path, recipe: Recipe, stage_config: dict[str, Any], metrics: dict[str, Any]) -> Path:
    """README.md of a sentence-transformers student folder: teacher, data, recipe and metrics."""
    evaluation = metrics.get("evaluation", {})
    before = metrics.get("before_training", {})
    student = stage_config.get("student", {})
    rows = [(k, evaluation.get(k), before.get(k)) for k in sorted(set(evaluation) | set(before))
            if isinstance(evaluation.get(k, before.get(k)), (int, float))]
    lines = [
        f"# {recipe.name}: distilled sentence-embedding student", "",
        "A sentence-transformers model distilled by edgedistill. Load it with:", "",
        "```python", "from sentence_transformers import SentenceTransformer",
        f"model = SentenceTransformer('{folder.name if folder.name != 'artifact' else 'path/to/this/folder'}')",
        "```", "",
        "## Teacher and data", "",
        f"- teacher: `{recipe.teacher}`",
        (f"- student initialised from `{student.get('init')}`, layers {student.get('layers')}, "
        f"projection {student.get('projection')}"),
        f"- training data: `{recipe.data.train}` ({metrics.get('train_sentences', '?')} sentences, seed {recipe.data.seed})",
        (f"- evaluation: STS-b `{recipe.evaluation.sts}` ({recipe.evaluation.sts_split}), held-out "
        f"`{recipe.evaluation.heldout}`, retrieval `{recipe.evaluation.retrieval}`"), "",
        "## Metrics", "",
        "| metric | after training | before training |", "|---|---|---|",
        *[f"| {k} | {_num(a, 4)} | {_num(b, 4)} |" for k, a, b in rows], "",
        "## Recipe (distill stage)", "",
        "```yaml", yaml.safe_dump(stage_config, sort_keys=False).rstrip(), "```", "",
    ]
    path = Path(folder) / "README.md"
    path.write_text("\n".join(lines))
    return path
