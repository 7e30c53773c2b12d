"""Sequence classification, shared by the tasks whose model is a transformer with a head on top of it.

A classifier is K logits per text (or per text pair); a cross-encoder reranker is one logit per (query,
passage) pair. Both are ``AutoModelForSequenceClassification`` models, and what they share lives here:

- ``models``: build a classifier from a pretrained encoder (a sentence-transformers folder's transformer, or a
  layer cut of a teacher) with a new head, or load a sequence-classification folder as is; refuse a folder
  of the wrong kind; tokenise texts or pairs; batched torch logits (hidden states, attentions on request).
- ``teacher_cache``: teacher logits computed once per (teacher content, inputs) and cached on disk.
- ``training``: a generic loop (AdamW, warmup, seed, CUDA bf16 autocast, resume, checkpoint selection on a
  dev metric) around a loss callable.
- ``export``: one ONNX graph (token ids -> logits [batch, num_labels]) gated numerically against PyTorch.
- ``runtime``: a torch-free onnxruntime predictor (logits for texts or pairs) and the quantize proxy.

Nothing in this package is specific to one task: the tasks pass their labels, activation and task name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

# A batch of inputs: single texts, or (first, second) pairs (premise/hypothesis, query/passage).
Texts = Union[Sequence[str], Sequence[tuple[str, str]]]  # noqa: UP007  (a runtime alias, not an annotation)

TEXT = "text"
TEXT_PAIR = "text_pair"
ACTIVATIONS = ("softmax", "sigmoid", "none")


def input_kind(texts: Texts) -> str:
    """'text_pair' when the items are (first, second) pairs, else 'text'."""
    first = next(iter(texts), "")
    return TEXT_PAIR if isinstance(first, (tuple, list)) else TEXT


def split_pairs(texts: Texts) -> tuple[list[str], list[str] | None]:
    """The first texts, and the second ones when the items are pairs (None for single texts)."""
    items = list(texts)
    if input_kind(items) == TEXT_PAIR:
        return [str(a) for a, _ in items], [str(b) for _, b in items]
    return [str(t) for t in items], None
