"""The classifier bundle's README.md: what the model is, its figures and how to call it."""

from __future__ import annotations

from typing import Any


def _num(value: Any, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "–"


def bundle_card(manifest: dict) -> str:
    q, lat = manifest.get("quality", {}), manifest.get("latency", {})
    pairs = manifest.get("text_inputs") == "text_pair"
    labels = ", ".join(f"`{x}`" for x in manifest.get("labels", []))
    inputs = ", ".join(f"`{n}`" for n in manifest["inputs"])
    example = ('clf.predict([("A man plays a guitar.", "Someone makes music.")])' if pairs
               else 'clf.predict(["Win a free cruise, reply now!"])')
    cli = ('edgedistill classify BUNDLE --pair "A man plays a guitar." "Someone makes music."' if pairs
           else 'edgedistill classify BUNDLE "Win a free cruise, reply now!"')
    lines = [
        f"# {manifest.get('source', {}).get('recipe', 'classifier')}: text classifier for edge apps", "",
        f"{manifest['num_labels']} classes ({labels}) over {'text pairs' if pairs else 'single texts'}; "
        f"{manifest['family']} encoder, max {manifest['max_seq_length']} tokens, ONNX opset {manifest['opset']}"
        + (", INT8" if manifest.get("quantization") else ", fp32") + ".", "",
        "| file | what |", "|---|---|",
        (f"| `{manifest['model']}` | the model: {inputs} (int64, [batch, sequence]) -> `{manifest['output']}` "
         f"(float32, [batch, {manifest['num_labels']}]); apply {manifest['activation']} for probabilities"
         + (" (already applied in the graph)" if manifest.get("output") == "probabilities" else "") + " |"),
        *[f"| `{f}` | the same model in {p} |" for p, f in manifest.get("models", {}).items() if f != manifest["model"]],
        f"| `{manifest['tokenizer']}` | the tokenizer (Hugging Face tokenizers format; pairs as text + text_pair) |",
        "| `manifest.json` | labels (logit order), inputs, activation, sha256 of every file |", "",
        "## Figures", "",
        f"Test accuracy {_num(q.get('accuracy'))}, macro-F1 {_num(q.get('macro_f1'))}, agreement with the teacher "
        f"{_num(q.get('agreement'))}%, batch-1 latency p50 {_num(lat.get('latency_ms_p50'))} ms.", "",
        "## Use", "", "```python", "from edgedistill.runtime import load", "clf = load('.')", example,
        "# -> [{'label': ..., 'score': ..., 'scores': {label: probability}}]", "```", "", "```sh", cli, "```", "",
    ]
    return "\n".join(lines)
