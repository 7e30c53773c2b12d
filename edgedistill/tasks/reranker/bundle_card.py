"""The README.md of a reranker deploy bundle."""

from __future__ import annotations

from typing import Any


def _num(value: Any, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "–"


def bundle_card(manifest: dict) -> str:
    q, lat = manifest.get("quality", {}), manifest.get("latency", {})
    inputs = ", ".join(f"`{n}`" for n in manifest["inputs"])
    return "\n".join([
        f"# {manifest.get('source', {}).get('recipe', 'reranker')}: cross-encoder reranker for edge apps", "",
        (f"Scores (query, passage) pairs jointly: one relevance logit per pair ({manifest['family']} encoder, max "
         f"{manifest['max_seq_length']} tokens per pair, ONNX opset {manifest['opset']}"
         + (", INT8" if manifest.get("quantization") else ", fp32") + f"). Activation: {manifest.get('activation')} "
         "(turns a logit into a score; the ranking is the logits')."), "",
        "| file | what |", "|---|---|",
        (f"| `{manifest['model']}` | {inputs} (int64, [pairs, sequence]; query and passage encoded as one pair) -> "
         f"`{manifest['output']}` (float32, [pairs, 1]) |"),
        f"| `{manifest['tokenizer']}` | the tokenizer (Hugging Face tokenizers format; encode (query, passage) pairs) |",
        "| `manifest.json` | task, inputs, output, activation, sha256 of every file, quality and latency |", "",
        "## Quality and speed", "",
        (f"- held-out reranking nDCG@10 {_num(q.get('rerank_ndcg10'))} ({_num(q.get('retention_pct'), 1)}% of the "
         f"teacher's {_num(q.get('teacher_rerank_ndcg10'))}); the first stage alone {_num(q.get('first_stage_ndcg10'))}"),
        f"- MRR@10 {_num(q.get('rerank_mrr10'))}; size {_num(manifest.get('size_mb'), 1)} MB",
        f"- per-query latency p50 {_num(lat.get('latency_ms_p50'))} ms ({lat.get('measured_by', '')})", "",
        "## Use it", "",
        "```bash",
        "# onnxruntime, tokenizers and numpy only (no torch):",
        'edgedistill rank path/to/bundle "A man plays a guitar." "A person makes music." "A woman sleeps."',
        "```", "",
        "```python",
        "from edgedistill.runtime import load",
        "result = load('path/to/bundle').rank('A man plays a guitar.', ['A person makes music.', 'A woman sleeps.'])",
        "result.scores   # in the documents' order",
        "result.ranking  # document indices, most relevant first",
        "```", "",
    ])
