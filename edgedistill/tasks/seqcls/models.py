"""Sequence-classification models: what a folder is, building one with a new head, loading one as is, and
running it (tokenised texts or pairs in, logits out; hidden states and attentions on request)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgedistill.errors import RecipeError
from edgedistill.tasks.seqcls import TEXT, TEXT_PAIR, Texts, input_kind, split_pairs

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

SEQCLS = "sequence-classification"  # config.json with a *ForSequenceClassification architecture
SENTENCE_TRANSFORMERS = "sentence-transformers"  # modules.json: an embedding model (take its transformer)
ENCODER = "encoder"  # a plain transformers encoder folder (config.json, no head)
SIDECAR = "edgedistill_seqcls.json"  # max_seq_length and input kind of a folder we wrote
DEFAULT_MAX_SEQ_LENGTH = 128
OFFSET_POSITIONS = ("mpnet", "roberta", "xlm-roberta", "camembert")


def _config(path: Path) -> dict[str, Any]:
    file = Path(path) / "config.json"
    if not file.is_file():
        return {}
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise RecipeError(f"{file}: not valid JSON ({e})") from None


def folder_kind(path: Path) -> str:
    """What a model folder holds: a sequence classifier, a sentence-transformers embedding model or a bare
    encoder. Raises RecipeError when it is none of these."""
    path = Path(path)
    if not path.is_dir():
        raise RecipeError(f"{path}: no such model folder")
    archs = _config(path).get("architectures") or []
    if any(str(a).endswith("ForSequenceClassification") for a in archs):
        return SEQCLS
    if (path / "modules.json").is_file():
        return SENTENCE_TRANSFORMERS
    if (path / "config.json").is_file():
        return ENCODER
    raise RecipeError(f"{path}: not a transformers model folder (no config.json or modules.json)")


def transformer_dir(path: Path) -> Path:
    """The folder of a sentence-transformers model's Transformer module (the folder itself for others)."""
    path = Path(path)
    modules = path / "modules.json"
    if not modules.is_file():
        return path
    for module in json.loads(modules.read_text()):
        if str(module.get("type", "")).endswith("Transformer"):
            return path / module.get("path", "")
    raise RecipeError(f"{path}: a sentence-transformers folder without a Transformer module")


def num_labels_of(path: Path) -> int:
    """The head size a sequence-classification folder declares."""
    config = _config(path)
    if config.get("id2label"):
        return len(config["id2label"])
    return int(config.get("num_labels", 2))


def labels_of(model: Any) -> list[str]:
    """The label names of a loaded model, in logit order."""
    id2label = model.config.id2label or {}
    return [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(model.config.num_labels)]


def read_sidecar(path: Path) -> dict[str, Any]:
    file = Path(path) / SIDECAR
    return json.loads(file.read_text()) if file.is_file() else {}


def max_seq_length_of(path: Path, tokenizer: Any = None) -> int:
    """Our sidecar's max_seq_length, else a sentence-transformers folder's, else the tokenizer's (capped)."""
    path = Path(path)
    if read_sidecar(path).get("max_seq_length"):
        return int(read_sidecar(path)["max_seq_length"])
    st = path / "sentence_bert_config.json"
    if st.is_file() and json.loads(st.read_text()).get("max_seq_length"):
        return int(json.loads(st.read_text())["max_seq_length"])
    limit = int(getattr(tokenizer, "model_max_length", DEFAULT_MAX_SEQ_LENGTH) or DEFAULT_MAX_SEQ_LENGTH)
    return min(limit, 512, position_limit(path))


def position_limit(path: Path) -> int:
    """The most tokens the encoder's position table takes."""
    config = _config(transformer_dir(Path(path)))
    positions = int(config.get("max_position_embeddings", 512))
    if config.get("model_type") in OFFSET_POSITIONS:  # position ids start after the padding index
        positions -= 2
    return positions


def require_seqcls(path: Path, field: str, num_labels: int | None = None, what: str = "a sequence classifier") -> None:
    """Refuse, naming the field, a folder that is not a sequence classifier or whose head has the wrong size."""
    kind = folder_kind(path)
    if kind == SENTENCE_TRANSFORMERS:
        raise RecipeError(f"{field}: {path} is a sentence-transformers embedding model (modules.json), not "
                          f"{what}. Give a sequence-classification folder (config.json architectures "
                          "*ForSequenceClassification), or add a finetune stage that trains one from this encoder.")
    if kind != SEQCLS:
        raise RecipeError(f"{field}: {path} is a bare encoder (no classification head), not {what}; add a finetune "
                          "stage that trains a head on it, or give a *ForSequenceClassification folder.")
    have = num_labels_of(path)
    if num_labels is not None and have != num_labels:
        raise RecipeError(f"{field}: {path} has {have} output label(s) but {num_labels} are expected; give a model "
                          f"with a {num_labels}-way head, or fix the label set.")


def _auto_model(source: Path, num_labels: int, labels: list[str] | None, device: str, keep_head: bool) -> Any:
    from transformers import AutoModelForSequenceClassification

    from edgedistill.trust import remote_code_allowed

    kwargs: dict[str, Any] = {"trust_remote_code": remote_code_allowed()}
    if not keep_head:
        kwargs["num_labels"] = num_labels
        if labels:
            kwargs["id2label"] = dict(enumerate(labels))
            kwargs["label2id"] = {name: i for i, name in enumerate(labels)}
    model = AutoModelForSequenceClassification.from_pretrained(str(source), **kwargs)
    if keep_head and labels:
        model.config.id2label = dict(enumerate(labels))
        model.config.label2id = {name: i for i, name in enumerate(labels)}
    model.config.problem_type = "regression" if num_labels == 1 else "single_label_classification"
    return model.to(device)


def keep_layers(model: Any, layers: list[int], field: str = "student.layers") -> None:
    """Layer cut: keep only the chosen transformer layers (BERT and MPNet families)."""
    import torch

    encoder_layers = model.base_model.encoder.layer
    if layers[-1] >= len(encoder_layers):
        raise RecipeError(f"{field}: {layers} asks for layer {layers[-1]} but the model has {len(encoder_layers)} "
                          f"(0..{len(encoder_layers) - 1})")
    model.base_model.encoder.layer = torch.nn.ModuleList([encoder_layers[i] for i in layers])
    model.config.num_hidden_layers = len(layers)


def build_classifier(source: Path, num_labels: int, *, labels: list[str] | None = None, layers: list[int] | None = None,
                     max_seq_length: int | None = None, device: str = "cpu",
                     field: str = "student.init") -> SequenceClassifier:
    """A classifier to train: a sentence-transformers folder's transformer or a bare encoder gets a new
    ``num_labels`` head; a sequence-classification folder (a teacher, a user's model) keeps its head, which must
    then have ``num_labels`` outputs. ``layers`` cuts the encoder to those layers."""
    from transformers import AutoTokenizer

    source = Path(source)
    kind = folder_kind(source)
    keep_head = kind == SEQCLS
    if keep_head:
        have = num_labels_of(source)
        if have != num_labels:
            raise RecipeError(f"{field}: {source} has a {have}-way head but the data has {num_labels} labels; "
                              f"give a model with {num_labels} outputs, or an encoder (a new head is then made).")
    folder = transformer_dir(source)
    model = _auto_model(folder, num_labels, labels, device, keep_head)
    if layers is not None:
        keep_layers(model, layers, field.rsplit(".", 1)[0] + ".layers")
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    length = min(max_seq_length, position_limit(source)) if max_seq_length else max_seq_length_of(source, tokenizer)
    log.info("%s: %s from %s (%s, %d layers, %s head)", field, type(model).__name__, source, kind,
             model.config.num_hidden_layers, "its own" if keep_head else f"a new {num_labels}-way")
    return SequenceClassifier(model, tokenizer, length, device)


def load_classifier(path: Path, *, num_labels: int | None = None, device: str = "cpu", field: str = "teacher",
                    max_seq_length: int | None = None) -> SequenceClassifier:
    """A sequence-classification folder as is (refusing embedding models, bare encoders, wrong head sizes)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from edgedistill.trust import remote_code_allowed

    path = Path(path)
    require_seqcls(path, field, num_labels)
    model = AutoModelForSequenceClassification.from_pretrained(str(path), trust_remote_code=remote_code_allowed())
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    length = min(max_seq_length, position_limit(path)) if max_seq_length else max_seq_length_of(path, tokenizer)
    return SequenceClassifier(model.to(device), tokenizer, length, device)


class SequenceClassifier:
    """A transformers sequence-classification model with its tokenizer, run with PyTorch."""

    def __init__(self, model: Any, tokenizer: Any, max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH,
                 device: str = "cpu") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_seq_length = int(max_seq_length)
        self.device = device

    @property
    def num_labels(self) -> int:
        return int(self.model.config.num_labels)

    @property
    def labels(self) -> list[str]:
        return labels_of(self.model)

    def features(self, texts: Texts) -> dict[str, torch.Tensor]:
        """Token ids, mask (and token types) for texts or pairs, padded to the batch's longest."""
        first, second = split_pairs(texts)
        enc = self.tokenizer(first, second, padding=True, truncation="longest_first" if second else True,
                             max_length=self.max_seq_length, return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items()}

    def forward(self, texts: Texts, hidden_states: bool = False, attentions: bool = False) -> Any:
        """The model's output for one batch (with gradients when the model is training). Attention maps need
        the eager attention implementation, switched to on first request."""
        if attentions and getattr(self.model.config, "_attn_implementation", "eager") != "eager":
            self.model.set_attn_implementation("eager")
        return self.model(**self.features(texts), output_hidden_states=hidden_states, output_attentions=attentions)

    def logits(self, texts: Texts, batch_size: int = 32) -> np.ndarray:
        """Logits [n, num_labels] as float32, in the caller's order (batches sorted by length: little padding)."""
        import torch

        items = list(texts)
        if not items:
            return np.zeros((0, self.num_labels), dtype=np.float32)
        order = np.argsort([-len(t if isinstance(t, str) else t[0] + t[1]) for t in items], kind="stable")
        out = np.zeros((len(items), self.num_labels), dtype=np.float32)
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            for start in range(0, len(items), batch_size):
                idx = order[start:start + batch_size]
                out[idx] = self.forward([items[i] for i in idx]).logits.float().cpu().numpy()
        self.model.train(was_training)
        return out

    def save(self, out: Path, text_inputs: str | None = None, extra: dict[str, Any] | None = None) -> None:
        """Save model, tokenizer and our sidecar (max_seq_length, input kind) into ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(out))
        self.tokenizer.save_pretrained(str(out))
        sidecar = {"max_seq_length": self.max_seq_length, **({"text_inputs": text_inputs} if text_inputs else {}),
                   **(extra or {})}
        (out / SIDECAR).write_text(json.dumps(sidecar, indent=2) + "\n")


def text_inputs_of(path: Path, default: str = TEXT) -> str:
    """Whether a folder we wrote takes single texts or pairs (our sidecar; ``default`` otherwise)."""
    value = read_sidecar(path).get("text_inputs", default)
    return value if value in (TEXT, TEXT_PAIR) else default


__all__ = ["SequenceClassifier", "build_classifier", "folder_kind", "input_kind", "load_classifier",
           "require_seqcls", "transformer_dir"]
