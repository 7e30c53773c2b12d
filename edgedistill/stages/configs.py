"""Stage configs: one typed, strict pydantic model per stage type (the registry in ``edgedistill.stages`` maps
each to its module and artifact kinds)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

# Marks a field that names a model or data source (local path, catalog name or hub id): stage keys take a local
# source by its content, so a folder retrained or a file rewritten in place reruns what read it.
SOURCE = {"source": True}


def source_fields(model: BaseModel, prefix: str = "") -> dict[str, str]:
    """Every field of a config (nested configs included) that names a source, with its value: {dotted name: spec}."""
    found: dict[str, str] = {}
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if (field.json_schema_extra or {}).get("source"):
            if value:
                found[prefix + name] = value
        elif isinstance(value, BaseModel):
            found.update(source_fields(value, f"{prefix}{name}."))
    return found


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class KeyStable(Strict):
    """A config whose fields added after recipes were cached (``quiet_defaults``) are left out of the dumped config,
    which stage keys hash, while they hold their defaults: earlier runs keep their keys, a changed value reruns."""

    quiet_defaults: ClassVar[dict[str, Any]] = {}

    @model_serializer(mode="wrap")
    def _quiet_defaults_not_dumped(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        if isinstance(data, dict):
            for name, default in self.quiet_defaults.items():
                if name in data and data[name] == default:
                    data.pop(name)
        return data


CPU_BF16 = ("bf16 autocast for training (and for the teacher scores a classifier or reranker distill stage "
            "learns) on a CPU that computes bf16 natively (AVX512-BF16, AMX, Arm BF16; edgedistill.precision): "
            "~1.9x faster steps on this project's 2-core Zen 4; off keeps fp32 (CUDA trains under bf16 autocast "
            "either way).")


class StudentConfig(KeyStable):
    """How the student is built before training."""

    quiet_defaults: ClassVar[dict[str, Any]] = {"projection_fit_epochs": 0, "projection_fit_learning_rate": 1e-3,
                                                "dropout": None}

    init: str = Field(description="Model to initialise from: local path, catalog name or hub id, or 'teacher' "
                      "(layer reduction of the teacher itself).", json_schema_extra=SOURCE)
    layers: list[int] | None = Field(
        default=None, description="Transformer layers to keep (0-based); null keeps all. Keep the last layer."
    )
    projection: Literal["procrustes", "ridge", "random", "pca", "none"] = Field(
        default="procrustes",
        description="When student and teacher dimensions differ: a Dense layer into the teacher's space, fitted on "
        "teacher embeddings as a rotation that keeps the student's cosines (procrustes) or by ridge regression, "
        "a random one, 'pca' (reduce the teacher's embeddings to the student's dimension instead), or none "
        "(then the dimensions must match).",
    )
    trim_vocab: bool = Field(default=False, description="Keep only the tokens the training sentences use "
                             "(plus every single character), shrinking the embedding table.")
    ridge_lambda: float = Field(default=1e-2, gt=0)
    projection_sentences: int = Field(default=4000, gt=0, description="Training sentences used to fit the projection "
                                 "(procrustes or ridge).")
    projection_fit_epochs: int = Field(
        default=0, ge=0, description="Then fit the projection alone, on the frozen student's pooled embeddings of "
        "every training sentence (computed once), with the stage's embedding losses (mse, cosine, kl, cross_kl) "
        "for this many epochs before the whole student trains: seconds of CPU, and where most of the cross-space "
        "retrieval gain of a CPU run comes from (benchmarks/results/distill.md). 0: no fit.")
    projection_fit_learning_rate: float = Field(default=1e-3, gt=0, description="Adam learning rate of that fit.")
    dropout: float | None = Field(
        default=None, ge=0, lt=1, description="Dropout probability of every dropout layer while the student trains "
        "(0: none, so training sees the features evaluation and the fitted projection see); null keeps the "
        "checkpoint's own.")

    @model_validator(mode="after")
    def _fit_needs_a_projection(self) -> StudentConfig:
        if self.projection_fit_epochs and self.projection not in ("procrustes", "ridge", "random"):
            raise ValueError(f"projection_fit_epochs fits a projection into the teacher's space; projection "
                             f"{self.projection} has none: use procrustes (or ridge), or set projection_fit_epochs: 0")
        return self

    @field_validator("layers")
    @classmethod
    def _layers_sorted_unique(cls, v: list[int] | None) -> list[int] | None:
        if v is not None:
            if not v:
                raise ValueError("keep at least one layer, e.g. [0, 3, 5]")
            if sorted(set(v)) != v or min(v) < 0:
                raise ValueError(f"layers must be distinct, ascending and >= 0, e.g. [0, 3, 5]; got {v}")
        return v


class LossSpec(KeyStable):
    """One term of the training loss."""

    quiet_defaults: ClassVar[dict[str, Any]] = {"bank": 0}

    type: Literal["mse", "cosine", "kl", "cross_kl", "margin_mse", "mnrl", "hidden", "attention"]
    weight: float = Field(default=1.0, gt=0)
    temperature: float = Field(default=0.05, gt=0, description="kl, cross_kl: softmax temperature (at the start).")
    temperature_end: float | None = Field(default=None, gt=0, description="kl, cross_kl: temperature at the end.")
    scale: float = Field(default=20.0, gt=0, description="mnrl: similarity scale.")
    bank: int = Field(default=0, ge=0, description="cross_kl: also rank this many teacher embeddings of other "
                      "training sentences, drawn afresh each step from the cached labels (a teacher-built index "
                      "in miniature, with its hard negatives; no extra teacher passes). 0: the batch's own.")
    layer_map: dict[int, int] = Field(default_factory=dict,
                                      description="hidden/attention: student layer -> teacher layer (0-based).")

    @model_validator(mode="after")
    def _layer_map_needed(self) -> LossSpec:
        if self.type in ("hidden", "attention") and not self.layer_map:
            raise ValueError(f"loss '{self.type}' needs layer_map, e.g. {{0: 3, 2: 11}} (student -> teacher layer)")
        if self.bank and self.type != "cross_kl":
            raise ValueError(f"bank: only cross_kl ranks a bank of teacher embeddings, not '{self.type}'; remove bank")
        return self


PAIR_LOSSES = ("margin_mse", "mnrl")
EMBEDDING_LOSSES = ("mse", "cosine", "kl", "cross_kl")  # losses on sentence embeddings alone (a projection fit's)


class DevConfig(Strict):
    """The declared dev objective that selects the checkpoint to keep (never the held-out test sets).

    The dev retrieval set is built from SNLI *training* pairs (premise -> entailed hypotheses, corpus of
    hypotheses); its sentences are removed from the training sentences, so it is neither trained on nor part of
    any evaluation set.
    """

    objective: Literal["sts_dev", "cross_ndcg", "teacher_cosine", "asymmetric"] = Field(
        default="sts_dev", description="What selection maximises: STS-b dev Spearman (sts_dev); nDCG@10 of student "
        "queries against the teacher-built dev index (cross_ndcg); mean cosine to the teacher on the dev sentences "
        "(teacher_cosine); or asymmetric = cross_ndcg/100 + teacher_cosine (both matter when an on-device model "
        "queries a server-built index).")
    sts_floor: float | None = Field(
        default=None, ge=0, description="With an objective other than sts_dev: a checkpoint qualifies only when its "
        "STS-b dev Spearman is at most this many points below the starting checkpoint's (null: no floor).")
    source: str = Field(default="snli", description="SNLI-format folder or catalog name whose training file "
                        "(snli_1.0_train_subset.jsonl) gives the dev retrieval set.", json_schema_extra=SOURCE)
    queries: int = Field(default=0, ge=0, description="Dev queries (premises), e.g. 500; 0: no dev retrieval set.")
    corpus: int = Field(default=2000, ge=0, description="Dev corpus size (relevant hypotheses plus distractors).")


class DistillStage(KeyStable):
    """Train a student to reproduce the teacher's embeddings."""

    quiet_defaults: ClassVar[dict[str, Any]] = {"margin_teacher": None, "cpu_bf16": False}

    type: Literal["distill"]
    student: StudentConfig
    train_sentences: int = Field(default=20000, gt=0, description="Sentences drawn from data.train.")
    losses: list[LossSpec] = Field(default_factory=lambda: [LossSpec(type="mse")], min_length=1)
    triplets: int = Field(default=0, ge=0, description="(anchor, entailed, contradicted) SNLI triplets for "
                          "pair losses (margin_mse, mnrl); their sentences are labelled by the teacher too.")
    triplet_source: str = Field(default="snli", description="SNLI-format folder (snli_1.0_train_subset.jsonl) "
                                "or catalog name that triplets come from.", json_schema_extra=SOURCE)
    triplet_batch_size: int = Field(default=32, gt=0)
    margin_teacher: str | None = Field(
        default=None, description="margin_mse: a cross-encoder (sequence-classification folder with one logit, e.g. "
        "a reranker recipe's finetune artifact) whose margin score(a, pos) - score(a, neg) the student's cosine "
        "margin learns, instead of the bi-encoder teacher's; rescaled to the teacher's margin spread.",
        json_schema_extra=SOURCE)
    epochs: float = Field(default=1.0, gt=0)
    batch_size: int = Field(default=64, gt=0, description="Global batch (split across processes).")
    gradient_accumulation: int = Field(default=1, ge=1)
    learning_rate: float = Field(default=1e-4, gt=0)
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    weight_decay: float = Field(default=0.01, ge=0)
    max_seq_length: int = Field(default=128, gt=0)
    teacher_batch_size: int = Field(default=64, gt=0)
    eval_steps: int = Field(default=100, ge=0, description="Evaluate on dev every N steps (0: only at the end).")
    select_best: bool = Field(default=True, description="Keep the checkpoint with the best dev objective "
                              "(dev.objective; STS-b dev by default).")
    dev: DevConfig = DevConfig()
    projection_learning_rate: float | None = Field(
        default=None, gt=0, description="Learning rate of the projection into the teacher's space (trained jointly "
        "with the body); null: learning_rate.")
    validation_sentences: int = Field(default=500, ge=0, description="Training sentences held out to track "
                                      "cosine agreement with the teacher during training.")
    checkpoint_steps: int = Field(default=200, ge=0, description="Save a resumable checkpoint every N steps.")
    processes: int = Field(default=1, ge=1, description="Data-parallel processes (torchrun, DDP).")
    label_processes: int = Field(default=1, ge=1, description="Processes that share the teacher labelling.")
    label_backend: Literal["auto", "torch", "onnx"] = Field(
        default="auto", description="Teacher labelling: onnx (the teacher as an ONNX Runtime fp32 graph, built once; "
        "faster on CPU, embeddings only), torch (sentence-transformers; CUDA, hidden states), auto (onnx on CPU "
        "unless a loss needs hidden states, else torch).")
    seed: int | None = Field(default=None, description="Training seed; null uses data.seed.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool = Field(default=True, description="bf16 autocast for PyTorch teacher labels where the device computes "
                       "bf16 natively (CUDA; CPUs with AVX512-BF16/AMX, where label_backend auto then labels with "
                       "PyTorch bf16: 2.2x the fp32 rate here, cosine >= 0.99995), and for training on CUDA; bf16 "
                       "labels have their own cache store.")
    cpu_bf16: bool = Field(default=False, description=CPU_BF16)

    @model_validator(mode="after")
    def _pairs_need_triplets(self) -> DistillStage:
        if self.dev.objective in ("cross_ndcg", "asymmetric") and not self.dev.queries:
            raise ValueError(f"dev.objective {self.dev.objective} needs a dev retrieval set: set dev.queries "
                             "(e.g. 500)")
        if self.student.projection_fit_epochs and not any(loss.type in EMBEDDING_LOSSES for loss in self.losses):
            raise ValueError("student.projection_fit_epochs fits the projection with the embedding losses (mse, "
                                 "cosine, kl, cross_kl) and losses has none: add one (e.g. {type: cross_kl}) or set "
                                 "projection_fit_epochs: 0")
        if self.dev.objective != "sts_dev" and self.student.projection == "pca":
            raise ValueError(f"dev.objective {self.dev.objective} compares with the teacher's space, which a pca "
                             "student does not share: use dev.objective sts_dev or another projection")
        pair = [loss.type for loss in self.losses if loss.type in PAIR_LOSSES]
        if pair and not self.triplets:
            raise ValueError(f"losses {pair} train on triplets: set triplets (e.g. 5000)")
        if self.label_backend == "onnx" and any(loss.type == "hidden" for loss in self.losses):
            raise ValueError("label_backend onnx gives embeddings only; the hidden loss needs torch (or auto)")
        if self.margin_teacher and "margin_mse" not in pair:
            raise ValueError("margin_teacher gives the margins of the margin_mse loss: add {type: margin_mse} to "
                             "losses (and set triplets), or remove margin_teacher")
        if len({loss.type for loss in self.losses}) != len(self.losses):
            raise ValueError("each loss type may appear once; combine them with weights")
        return self


class ExportStage(Strict):
    """Export the student to one ONNX graph and check it numerically against PyTorch."""

    type: Literal["export"]
    opset: int = Field(default=18, ge=14, le=21)
    exporter: Literal["dynamo", "torchscript"] = "dynamo"
    max_abs_diff: float = Field(default=1e-4, gt=0, description="Gate: largest allowed |onnx - torch|.")
    min_cosine: float = Field(default=0.9999, gt=0, le=1, description="Gate: smallest allowed cosine(onnx, torch).")
    check_sentences: int = Field(default=64, gt=0)
    optimize: Literal["auto", "always", "never"] = Field(
        default="auto", description="onnxruntime transformer fusions: auto keeps them only when batch-1 latency "
        "improves by min_speedup (and they pass the same gate); always; never.")
    min_speedup: float = Field(
        default=1.05, ge=1.0, description="auto: plain p50 / optimised p50 needed to keep them (and a majority "
        "of rounds won). onnxruntime applies some fusions in memory anyway, so the offline gain is modest.")
    timing_sentences: int = Field(default=64, gt=0, description="Real sentences timed per round (batch 1).")
    timing_rounds: int = Field(default=5, gt=0, description="Interleaved timing rounds per variant.")
    timing_threads: int = Field(default=0, ge=0, description="onnxruntime intra-op threads while timing; "
                                "0 = all cores, as the runtime and the profile stage use.")
    tokenizer_in_graph: bool = Field(
        default=False, description="Also ship model_with_tokenizer.onnx (strings in, embeddings out; WordPiece "
        "tokenizers; needs the onnxruntime-extensions extra).")
    tokenizer_in_graph_tolerance: float = Field(
        default=1e-4, gt=0, description="Largest allowed |in-graph - two-file| embedding difference.")


class QuantizeSearch(Strict):
    """How the accuracy-aware quantization search spends its time."""

    sensitivity: Literal["auto", "node", "layer", "role", "off"] = Field(
        default="auto", description="Groups scanned for sensitivity and kept in fp32 most sensitive first: each "
        "weight node, each layer, or each role across layers (auto: node up to 40 nodes, else role); off: no scan.")
    proxy_sentences: int = Field(default=256, gt=0, description="Training sentences (not the calibration ones) "
                                 "scored by cosine to the fp32 model to rank sensitivity.")
    max_evaluations: int = Field(default=10, ge=1, description="Trials confirmed with the full evaluator, at most.")
    latency_sentences: int = Field(default=64, gt=0, description="Sentences timed at batch 1 for every trial.")
    latency_repeats: int = Field(default=3, ge=1)


class QuantizeStage(Strict):
    """INT8 quantization: the fastest configuration for the target whose quality stays within the budget."""

    type: Literal["quantize"]
    backend: Literal["onnxruntime", "inc"] = Field(
        default="onnxruntime", description="onnxruntime's quantizer, or Intel Neural Compressor's "
        "(onnx-neural-compressor, run in its own virtualenv created on first use).")
    target: Literal["portable", "arm64", "avx2", "avx512_vnni"] = Field(
        default="portable", description="CPU preset choosing the candidate settings (see edgedistill.quant.presets).")
    method: Literal["auto", "dynamic", "static"] = Field(
        default="auto", description="auto: every method the target preset lists; or only dynamic / static QDQ.")
    calibration: Literal["minmax", "entropy", "percentile"] | None = Field(
        default=None, description="Static: how activation ranges are calibrated (null: the preset's).")
    calibration_sentences: int = Field(default=200, gt=0, description="Static: in-domain sentences from data.train.")
    per_channel: bool | None = None
    reduce_range: bool | None = Field(default=None, description="7-bit weights (x86 without VNNI); null: preset's.")
    activation_type: Literal["uint8", "int8"] | None = None
    weight_type: Literal["int8", "uint8"] | None = None
    op_types: list[Literal["MatMul", "Attention"]] = Field(
        default_factory=lambda: ["MatMul", "Attention"],
        description="Weight ops to quantize; Attention is the fused Q/K/V of an optimised graph (dynamic only).")
    embedding: Literal["fp32", "int8"] | None = Field(
        default=None, description="Word-embedding table: int8 (one scale per row, ~4x smaller) or fp32; null: preset's.")
    exclude_nodes: list[str] = Field(default_factory=list, description="Node names always kept in fp32.")
    max_drop: float = Field(
        default=0.01, ge=0, lt=1, description="Largest allowed relative drop of each budget metric vs the fp32 input."
    )
    budget_metrics: list[str] = Field(
        default_factory=lambda: ["sts_spearman", "retrieval_ndcg10"],
        description="Metrics held to max_drop (those the evaluation measures).")
    max_size_mb: float | None = Field(default=None, gt=0, description="Trials larger than this do not qualify.")
    on_fail: Literal["error", "warn"] = "error"
    search: QuantizeSearch = QuantizeSearch()


class ProfileTarget(Strict):
    """Where to profile: 'local' (this machine) or a device over SSH (key-based login, python3 with
    onnxruntime, numpy and tokenizers). In a recipe, the string ``local`` stands for ``{name: local}``."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                      description="'local', or the device's name in the report.")
    ssh: str | None = Field(default=None,
                            description="Destination: user@host, or a Host alias from ~/.ssh/config.")
    port: int | None = Field(default=None, gt=0, lt=65536)
    identity_file: str | None = None
    ssh_options: list[str] = Field(default_factory=list, description="Extra `ssh -o` options, e.g. "
                                   "StrictHostKeyChecking=accept-new.")
    python: str = Field(default="python3", description="Python on the device (inserted into the remote command).")
    remote_dir: str = Field(default="/tmp/edgedistill-bench", description="Where the bundle is unpacked.")
    keep: bool = Field(default=False, description="Leave the bundle and result on the device.")
    connect_timeout_s: float = Field(default=15, gt=0)
    timeout_s: float = Field(default=3600, gt=0, description="Longest a copy or bench run may take.")

    @model_validator(mode="after")
    def _local_or_ssh(self) -> ProfileTarget:
        if self.name == "local" and self.ssh:
            raise ValueError("'local' is this machine and takes no ssh; name the device instead, e.g. name: pi5")
        if self.name != "local" and not self.ssh:
            raise ValueError(f"target '{self.name}' needs ssh: user@host (or use 'local' for this machine)")
        return self

    @property
    def is_local(self) -> bool:
        return self.name == "local"


class ProfileStage(Strict):
    """Measure batch-1 latency, throughput, threads, cold start, memory and size per target, side by side."""

    type: Literal["profile"]
    targets: list[ProfileTarget] = Field(
        default_factory=lambda: [ProfileTarget(name="local")], min_length=1,
        description="Where to measure: 'local' (this machine) and/or SSH devices ({name, ssh, ...}).")
    compare: list[Literal["teacher", "student", "onnx"]] = Field(
        default_factory=lambda: ["teacher", "student", "onnx"],
        description="Also measure, on 'local' with the same sentences: the teacher and PyTorch students (fp32) "
        "and earlier ONNX artifacts of the chain, so speed-ups are side-by-side ratios.")
    sentences: int = Field(default=200, gt=0, description="Real held-out sentences timed one by one (batch 1).")
    warmup: int = Field(default=20, ge=0, description="Batch-1 calls before timing, per thread count.")
    repeats: int = Field(default=5, gt=0, description="Rounds over all sentences (at most), each in a fresh "
                         "process that also measures cold start and memory.")
    min_repeats: int = Field(default=2, gt=0, description="Rounds at least, even past max_seconds.")
    max_seconds: float = Field(default=30, gt=0, description="Stop adding rounds after this long.")
    threads: list[int] = Field(default_factory=lambda: [1, 0], min_length=1,
                               description="Intra-op thread counts; 0 = all cores; the first is the headline "
                               "(1 thread: the most stable and portable batch-1 number).")
    batch_size: int = Field(default=32, gt=0, description="Batch size for throughput on the real sentences.")
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 8, 32], min_length=1)
    seq_lengths: list[int] = Field(default_factory=lambda: [16, 64, 128], min_length=1)
    cell_repeats: int = Field(default=5, gt=0, description="Timed calls per throughput cell (at most).")
    cell_seconds: float = Field(default=3, gt=0, description="Time budget per throughput cell.")

    @field_validator("threads", mode="before")
    @classmethod
    def _threads_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, int) else v

    @field_validator("threads")
    @classmethod
    def _threads_non_negative(cls, v: list[int]) -> list[int]:
        if any(x < 0 for x in v):
            raise ValueError(f"thread counts must be >= 0 (0 = all cores); got {v}")
        return v

    @field_validator("batch_sizes", "seq_lengths")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(x <= 0 for x in v):
            raise ValueError(f"values must be > 0, e.g. [1, 8, 32]; got {v}")
        return v

    @field_validator("targets", mode="before")
    @classmethod
    def _local_shorthand(cls, v: Any) -> Any:
        return [{"name": t} if isinstance(t, str) else t for t in v] if isinstance(v, list) else v

    @field_validator("targets")
    @classmethod
    def _unique_targets(cls, v: list[ProfileTarget]) -> list[ProfileTarget]:
        names = [t.name for t in v]
        if len(set(names)) != len(names):
            raise ValueError(f"target names must be unique; got {names}")
        return v
