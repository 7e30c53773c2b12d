"""What the embedding task adds to a deploy bundle: the strings-in variant (checked) and the bundle's README."""

from __future__ import annotations

from pathlib import Path
from typing import Any

IN_GRAPH_CHECK_SENTENCES = 64


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
