"""The reranker task's recipe sections and stage configs (typed, strict; validated when the recipe loads)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from edgedistill.stages.configs import CPU_BF16, SOURCE, KeyStable, Strict


class RerankerData(Strict):
    """``data:``: labelled pairs for the finetune stage and the pairs/triplets the teacher scores for distill."""

    pairs: str = Field(default="snli", description="Labelled (query, passage) pairs: an SNLI-format folder or "
                       "catalog name (its train subset: premise = query, entailment = relevant, neutral and "
                       "contradiction = not), or a .jsonl file with query/passage/label.", json_schema_extra=SOURCE)
    sts: str | None = Field(default=None, description="STS-benchmark folder or catalog name whose *train* split "
                            "gives scored pairs (objective: regression).", json_schema_extra=SOURCE)
    seed: int = 0


class RerankerEvaluation(Strict):
    """``evaluation:``: held-out reranking (first stage -> top-k -> the cross-encoder reorders)."""

    retrieval: str = Field(default="snli-retrieval", description="Held-out retrieval set (queries/corpus/qrels "
                           ".jsonl; snli-retrieval: SNLI test premises -> their entailed hypotheses).",
                           json_schema_extra=SOURCE)
    queries: int = Field(default=200, gt=0, description="Held-out queries reranked.")
    corpus: int | None = Field(default=None, gt=0, description="Documents searched (null: the whole corpus, so "
                               "each query's neutral and contradicted hypotheses are there to be ranked too).")
    first_stage: str = Field(default="bm25", description="The retriever whose top-k is reranked: 'bm25', or a "
                             "sentence-transformers bi-encoder (catalog name, path, hub id).",
                             json_schema_extra=SOURCE)
    top_k: int = Field(default=20, gt=1, le=1000, description="Candidates per query handed to the reranker.")
    sts: str | None = Field(default=None, description="STS-benchmark folder or catalog name: Spearman of the "
                            "cross-encoder's scores on sts_split (for regression cross-encoders).",
                            json_schema_extra=SOURCE)
    sts_split: Literal["dev", "test"] = "test"
    latency_queries: int = Field(default=20, gt=0, description="Queries timed per artifact (per-query latency).")
    latency_candidates: int = Field(default=10, gt=0, description="Candidates per timed query.")
    batch_size: int = Field(default=32, gt=0)

    @field_validator("first_stage")
    @classmethod
    def _not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("give 'bm25' or a sentence-transformers bi-encoder, e.g. all-MiniLM-L6-v2")
        return v


class Training(KeyStable):
    """The training loop's settings, shared by finetune and distill."""

    quiet_defaults: ClassVar[dict[str, Any]] = {"cpu_bf16": False}

    epochs: float = Field(default=1.0, gt=0)
    batch_size: int = Field(default=16, gt=0)
    learning_rate: float = Field(default=3e-5, gt=0)
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    weight_decay: float = Field(default=0.01, ge=0)
    max_seq_length: int = Field(default=128, gt=8)
    eval_steps: int = Field(default=0, ge=0, description="Score the dev set every N steps (0: only at the end); "
                            "the best step is kept.")
    checkpoint_steps: int = Field(default=50, ge=0, description="A resumable checkpoint every N steps.")
    seed: int | None = Field(default=None, description="Training seed; null uses data.seed.")
    cpu_bf16: bool = Field(default=False, description=CPU_BF16)
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto: CUDA when present (bf16).")


class RerankerFinetune(Training):
    """Fine-tune the teacher cross-encoder: a pretrained encoder (or a cross-encoder) with a one-logit head on
    labelled pairs: listwise (each query's relevant passage against its negatives, softmax cross-entropy), binary
    cross-entropy, or STS-b scores / 5 as soft targets (``regression``)."""

    type: Literal["finetune"]
    objective: Literal["binary", "listwise", "regression"] = Field(
        default="binary", description="binary: data.pairs, relevant 1 / not 0 (binary cross-entropy); listwise: "
        "data.pairs grouped by query, the relevant passage ranked first among the query's own non-relevant and "
        "mined passages (softmax cross-entropy, the reranking task itself); regression: data.sts train scores.")
    pairs: int = Field(default=3000, gt=0, description="Labelled training pairs (query by query, every label; "
                       "listwise: query groups of 1 + negatives pairs until this many pairs).")
    hard_negatives: int = Field(default=2, ge=0, description="binary/listwise: per training query, this many "
                                "passages of other queries mined with BM25 (the first stage's kind of candidate), "
                                "labelled not relevant: without them a cross-encoder learns entailment, not which "
                                "passage belongs to the query.")
    negatives: int = Field(default=2, ge=0, description="listwise: the query's own non-relevant passages per group "
                           "(SNLI: its neutral and contradicted hypotheses), before the mined ones.")
    dev_queries: int = Field(default=150, ge=0, description="Queries of the training data held apart to pick the "
                             "best step (binary/listwise: their BM25 top-k reranked, nDCG@10; regression: Spearman).")
    dev_corpus: int = Field(default=3000, ge=0, description="binary/listwise: held-apart training queries whose "
                            "passages form the dev corpus BM25 searches (the dev queries' own included), so the "
                            "dev candidates look like the held-out set's: its relevant passage among other "
                            "queries' passages that share its words.")
    dev_top_k: int = Field(default=20, gt=1, description="binary/listwise: BM25 candidates per dev query.")
    teacher_batch_size: int = Field(default=32, gt=0)


class RerankerLoss(Strict):
    """One term of the distillation loss."""

    type: Literal["mse", "margin_mse"] = Field(description="mse: the teacher's logit of each pair; margin_mse: "
                                               "the teacher's margin score(q, pos) - score(q, neg) on triplets.")
    weight: float = Field(default=1.0, gt=0)


class RerankerStudent(Strict):
    init: str = Field(description="A pretrained encoder (catalog name, path, hub id) that gets a new one-logit head, "
                      "or 'teacher' (a layer cut of the teacher, head kept).", json_schema_extra=SOURCE)
    layers: list[int] | None = Field(default=None, description="Transformer layers to keep (0-based).")

    @field_validator("layers")
    @classmethod
    def _sorted(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or sorted(set(v)) != v or min(v) < 0):
            raise ValueError(f"layers must be distinct, ascending and >= 0, e.g. [0, 5, 11]; got {v}")
        return v


class RerankerDistill(Training):
    """Distil the teacher cross-encoder into a small one: teacher logits over pairs (mse) and teacher margins over
    triplets (margin_mse), both computed once and cached."""

    type: Literal["distill"]
    student: RerankerStudent
    losses: list[RerankerLoss] = Field(default_factory=lambda: [RerankerLoss(type="mse")], min_length=1)
    pairs: int = Field(default=4000, ge=0, description="(query, passage) pairs of data.pairs for mse.")
    triplets: int = Field(default=0, ge=0, description="(query, relevant, contradicted) triplets for margin_mse.")
    hard_negatives: int = Field(default=1, ge=0, description="Extra negatives per query mined with BM25 from the "
                                "training passages (a pair each for mse, a triplet each for margin_mse).")
    dev_queries: int = Field(default=100, ge=0, description="Training queries held apart: agreement with the "
                             "teacher picks the best step.")
    learning_rate: float = Field(default=5e-5, gt=0)
    batch_size: int = Field(default=32, gt=0)
    teacher_batch_size: int = Field(default=32, gt=0)

    @model_validator(mode="after")
    def _data_for_losses(self) -> RerankerDistill:
        kinds = [loss.type for loss in self.losses]
        if len(set(kinds)) != len(kinds):
            raise ValueError("each loss type may appear once; combine them with weights")
        if "mse" in kinds and not self.pairs:
            raise ValueError("loss mse trains on pairs: set pairs (e.g. 4000)")
        if "margin_mse" in kinds and not self.triplets:
            raise ValueError("loss margin_mse trains on triplets: set triplets (e.g. 2000)")
        return self
