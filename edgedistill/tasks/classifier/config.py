"""The classifier task's recipe sections and stage configs (typed, strict; errors name the field)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from edgedistill.stages.configs import CPU_BF16, SOURCE, KeyStable, Strict


class ClassifierData(Strict):
    """Labelled training data: a .jsonl/.csv/.tsv file, or a folder (or catalog name) holding ``train.jsonl``."""

    train: str = Field(description="Labelled examples: a .jsonl, .csv or .tsv file, or a folder / catalog name "
                       "with train.jsonl (e.g. snli-nli, spamassassin).", json_schema_extra=SOURCE)
    text_column: str = Field(default="text", description="The column holding the text (the first text of a pair).")
    text_pair_column: str | None = Field(default=None, description="The column holding the second text of a "
                                         "pair (premise/hypothesis); null for single texts.")
    label_column: str = Field(default="label", description="The column holding the class name.")
    labels: list[str] | None = Field(default=None, min_length=2, description="The declared classes, in logit "
                                     "order; a row with another label is an error. Null: the sorted labels seen.")
    examples: int = Field(default=20000, gt=0, description="Labelled training examples drawn (at most).")
    dev_examples: int = Field(default=500, ge=0, description="Drawn from the training file besides them, for "
                              "checkpoint selection (never from the test split).")
    unlabelled: str | None = Field(default=None, description="In-domain inputs without labels for teacher soft "
                                   "labels (same columns); null: the training file's rows not drawn above.",
                                   json_schema_extra=SOURCE)
    seed: int = 0

    @field_validator("labels")
    @classmethod
    def _unique(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"labels must be distinct; got {v}")
        return v


class ClassifierEvaluation(Strict):
    """The held-out test split every artifact is measured on (never trained on)."""

    test: str = Field(description="Held-out labelled examples: a file, or a folder / catalog name with "
                      "test.jsonl; same columns as data.", json_schema_extra=SOURCE)
    text_column: str = Field(default="text", description="As data.text_column, for the test file.")
    text_pair_column: str | None = Field(default=None, description="As data.text_pair_column, for the test file.")
    label_column: str = Field(default="label", description="As data.label_column, for the test file.")
    test_examples: int = Field(default=2000, gt=0)
    latency_examples: int = Field(default=100, gt=0, description="Batch-1 latency sample per artifact.")
    batch_size: int = Field(default=64, gt=0)
    ece_bins: int = Field(default=15, gt=1, description="Confidence bins of the expected calibration error.")


class TrainingFields(KeyStable):
    """How long and how fast to train (finetune and distill)."""

    quiet_defaults: ClassVar[dict[str, Any]] = {"cpu_bf16": False}

    epochs: float = Field(default=1.0, gt=0)
    batch_size: int = Field(default=32, gt=0)
    learning_rate: float = Field(default=5e-5, gt=0)
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    weight_decay: float = Field(default=0.01, ge=0)
    max_seq_length: int = Field(default=128, gt=0)
    eval_steps: int = Field(default=0, ge=0, description="Score the dev split every N steps (0: only at the end).")
    select_best: bool = Field(default=True, description="Keep the checkpoint with the best dev accuracy.")
    checkpoint_steps: int = Field(default=50, ge=0, description="Save a resumable checkpoint every N steps.")
    seed: int | None = Field(default=None, description="Training seed; null uses data.seed.")
    cpu_bf16: bool = Field(default=False, description=CPU_BF16)
    device: Literal["auto", "cpu", "cuda"] = "auto"


class ClassifierFinetuneStage(TrainingFields):
    """Fine-tune the teacher: the recipe's encoder (or classifier) with a head of the data's classes."""

    type: Literal["finetune"]
    learning_rate: float = Field(default=3e-5, gt=0)
    layers: list[int] | None = Field(default=None, description="Encoder layers to keep (0-based); null: all.")


class StudentSpec(Strict):
    """How the student is built before training."""

    init: str = Field(description="An encoder (catalog name, path, hub id; its transformer gets a new head), a "
                      "sequence-classification folder (its head must have the data's classes), or 'teacher' "
                      "(a layer cut of the fine-tuned teacher).", json_schema_extra=SOURCE)
    layers: list[int] | None = Field(default=None, description="Layers to keep (0-based); null keeps all.")

    @field_validator("layers")
    @classmethod
    def _layers_sorted(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or sorted(set(v)) != v or min(v) < 0):
            raise ValueError(f"layers must be distinct, ascending and >= 0, e.g. [0, 5, 11]; got {v}")
        return v


class ClassifierLoss(Strict):
    """One term of the distillation loss."""

    type: Literal["kl", "ce", "hidden", "attention", "embedding"]
    weight: float = Field(default=1.0, ge=0)
    temperature: float = Field(default=4.0, gt=0, description="kl: softmax temperature (at the start); the term "
                               "is scaled by T^2 so its gradients keep their size.")
    temperature_end: float | None = Field(default=None, gt=0, description="kl: temperature at the end (linear).")
    layer_map: dict[int, int] = Field(default_factory=dict, description="hidden/attention: student layer -> "
                                      "teacher layer (0-based transformer layers).")

    @model_validator(mode="after")
    def _layer_map_needed(self) -> ClassifierLoss:
        if self.type in ("hidden", "attention") and not self.layer_map:
            raise ValueError(f"loss '{self.type}' needs layer_map, e.g. {{0: 3, 2: 11}} (student -> teacher layer)")
        return self


class ClassifierDistillStage(TrainingFields):
    """Train a small student on the teacher's soft labels (and the hard labels, and layer targets)."""

    type: Literal["distill"]
    student: StudentSpec
    losses: list[ClassifierLoss] = Field(
        default_factory=lambda: [ClassifierLoss(type="kl", weight=0.5), ClassifierLoss(type="ce", weight=0.5)],
        min_length=1)
    alpha: float | None = Field(default=None, ge=0, le=1, description="Hinton's mix: kl weighs alpha and ce "
                                "1 - alpha (both losses must be listed; their own weights are then ignored).")
    unlabelled_examples: int = Field(default=0, ge=0, description="In-domain inputs without labels scored by "
                                     "the teacher (soft labels only) added to training.")
    select_on: Literal["agreement", "accuracy"] = Field(
        default="agreement", description="Dev score that picks the kept checkpoint (select_best): 'agreement', "
        "the share of dev inputs where the student's argmax equals the teacher's (what distillation promises; ties "
        "go to the higher dev accuracy), or 'accuracy' on the hard labels.")
    learning_rate: float = Field(default=1e-4, gt=0)
    teacher_batch_size: int = Field(default=64, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> ClassifierDistillStage:
        types = [loss.type for loss in self.losses]
        if len(set(types)) != len(types):
            raise ValueError("each loss type may appear once; combine them with weights")
        if self.alpha is not None and not {"kl", "ce"} <= set(types):
            raise ValueError(f"alpha mixes kl and ce; list both losses (have {types})")
        if self.unlabelled_examples and "kl" not in types and not {"hidden", "attention", "embedding"} & set(types):
            raise ValueError("unlabelled examples carry only teacher signal; add a kl (or layer) loss")
        return self

    def weight(self, loss: ClassifierLoss) -> float:
        if self.alpha is not None and loss.type in ("kl", "ce"):
            return self.alpha if loss.type == "kl" else 1.0 - self.alpha
        return loss.weight


class ClassifierExportStage(Strict):
    """Export the student to one ONNX graph (logits, or probabilities) checked against PyTorch."""

    type: Literal["export"]
    opset: int = Field(default=18, ge=14, le=21)
    exporter: Literal["dynamo", "torchscript"] = "dynamo"
    probabilities: bool = Field(default=False, description="Put the softmax into the graph: the output is then "
                                "probabilities instead of logits.")
    max_abs_diff: float = Field(default=1e-4, gt=0, description="Gate: largest allowed |onnx - torch|.")
    check_examples: int = Field(default=64, gt=0)


__all__ = ["SOURCE", "ClassifierData", "ClassifierDistillStage", "ClassifierEvaluation", "ClassifierExportStage",
           "ClassifierFinetuneStage", "ClassifierLoss", "StudentSpec"]
