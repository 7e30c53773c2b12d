"""The cross-encoder reranker task: (query, passage) pairs in, one relevance logit per pair out.

Teacher: a cross-encoder (a sequence-classification folder with one output), or one the ``finetune`` stage trains
from a pretrained encoder on labelled pairs. Student: a small cross-encoder trained on the teacher's logits (mse)
and margins (margin_mse). Evaluation: held-out reranking of a first stage's top-k (``evaluate.py``). The model
code (build, load, train, export, onnxruntime predictor) is the shared ``tasks/seqcls`` package.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from edgedistill.tasks import Metric
from edgedistill.tasks.reranker.config import RerankerData, RerankerDistill, RerankerEvaluation, RerankerFinetune
from edgedistill.tasks.reranker.export import RerankerExport
from edgedistill.tasks.reranker.profile import RerankerProfile

if TYPE_CHECKING:
    from edgedistill.contract import StageContext, StageResult

PRIMARY_METRIC = "rerank_ndcg10"
CROSS_ENCODER = "a cross-encoder (one relevance logit per pair)"


class TorchReranker:
    """A PyTorch cross-encoder folder scoring pairs (teacher or student)."""

    def __init__(self, classifier: Any) -> None:
        self.classifier = classifier
        self.model = classifier.model

    def logits(self, pairs: list[tuple[str, str]], batch_size: int = 32) -> np.ndarray:
        return self.classifier.logits(list(pairs), batch_size=batch_size)[:, 0]


def held_out_texts(evaluation: RerankerEvaluation) -> set[str]:
    """Every text of the evaluation sets (all queries and documents, all scored STS pairs but train's): kept out
    of every training set."""
    import json

    from edgedistill.assets import resolve

    root = resolve(evaluation.retrieval)
    texts: set[str] = set()
    for name in ("queries.jsonl", "corpus.jsonl"):
        file = root / name
        if file.is_file():
            texts |= {json.loads(line)["text"].strip() for line in file.read_text(encoding="utf-8").splitlines()
                      if line.strip()}
    if evaluation.sts:
        from edgedistill.data import load_sts

        for split in ("dev", "test"):
            sts = load_sts(evaluation.sts, split)
            texts |= {s.strip() for s in sts.first + sts.second}
    return texts


class RerankerTask:
    """Cross-encoder rerankers: nDCG@10 / MRR@10 of a first stage's top-k reordered, gain over the first stage."""

    name: ClassVar[str] = "reranker"
    primary_metric: ClassVar[str] = PRIMARY_METRIC
    metrics: ClassVar[tuple[Metric, ...]] = (
        Metric(PRIMARY_METRIC, "nDCG@10", 2, description="nDCG@10 = held-out queries' first-stage top-k reordered "
               "by the cross-encoder (x100); p50 ms here = one query with evaluation.latency_candidates candidates "
               "scored in one call"),
        Metric("rerank_mrr10", "MRR@10", 2, description="MRR@10 = reciprocal rank of the first relevant one"),
        Metric("ndcg10_gain", "gain vs first stage", 2,
               description="gain = nDCG@10 minus the first stage's own (points; retention: % of the teacher's gain)"),
        Metric("teacher_rank_spearman", "rank agreement", 4, description="rank agreement = mean per-query Spearman "
               "of the candidates' scores with the teacher's"),
        Metric("sts_spearman", "STS-b", 2, description="STS-b = Spearman x100 of the scores on STS-b pairs"),
    )
    budget_metrics: ClassVar[tuple[str, ...]] = (PRIMARY_METRIC,)
    latency_label: ClassVar[str] = "Per-query p50 (one query's candidates scored in one call)"
    latency_note: ClassVar[str] = (
        "p50 ms: per-query latency from the evaluator, one held-out query with evaluation.latency_candidates "
        "first-stage candidates scored in one call (tokenisation included); the profile stage's section below "
        "times 1 query x 10, 50 and 100 candidates for every model side by side.")
    data_config: ClassVar[type] = RerankerData
    evaluation_config: ClassVar[type] = RerankerEvaluation
    stage_configs: ClassVar[dict[str, type]] = {"finetune": RerankerFinetune, "distill": RerankerDistill,
                                                "export": RerankerExport, "profile": RerankerProfile}
    # distill reads the labelled pairs and keeps the evaluation's texts out; quantize calibrates on pairs
    stage_reads: ClassVar[dict[str, tuple[str, ...]]] = {"distill": ("data", "evaluation"), "quantize": ("data",)}

    def load(self, kind: str, path: Path, device: str = "cpu", threads: int = 0) -> Any:
        from edgedistill.contract import ONNX

        if kind == ONNX:
            from edgedistill.quant.invariance import dynamic_ops
            from edgedistill.tasks.reranker.runtime import OnnxReranker

            model = OnnxReranker(path, threads=threads)
            # A dynamically quantized graph is served one pair per call (the quantize stage records it after its
            # search): score quantization trials the same way, so the budget holds for what ships.
            if dynamic_ops(model.model_path):
                model.classifier.rows_separately = True
            return model
        from edgedistill.tasks.seqcls.models import load_classifier

        return TorchReranker(load_classifier(Path(path), num_labels=1, device=device,
                                             field="teacher" if kind == "teacher" else "student"))

    def eval_set(self, evaluation: RerankerEvaluation) -> Any:
        from edgedistill.data import load_retrieval, load_sts
        from edgedistill.tasks.reranker.evaluate import RerankSet

        ev = evaluation
        ret = load_retrieval(ev.retrieval, ev.queries, ev.corpus or 10**9)
        return RerankSet(queries=ret.queries, corpus=ret.corpus, relevant=ret.relevant, first_stage=ev.first_stage,
                         top_k=ev.top_k, batch_size=ev.batch_size, latency_queries=ev.latency_queries,
                         latency_candidates=ev.latency_candidates,
                         sts=load_sts(ev.sts, ev.sts_split) if ev.sts else None)

    def evaluate_teacher(self, teacher: Path, data: Any, device: str) -> tuple[dict[str, float], dict[str, Any]]:
        from edgedistill.tasks.reranker.evaluate import teacher_reference
        from edgedistill.tasks.seqcls.models import require_seqcls

        require_seqcls(Path(teacher), "teacher", 1, CROSS_ENCODER)
        model = self.load("teacher", teacher, device=device)
        metrics, reference = teacher_reference(model, data, device)
        metrics["params"] = float(sum(p.numel() for p in model.model.parameters()))
        return metrics, reference

    def evaluator(self, data: Any, reference: dict[str, Any]) -> Any:
        from edgedistill.tasks.reranker.evaluate import Evaluator, RerankReference

        return Evaluator(data, RerankReference(**{k: reference.get(k) for k in
                                                  ("candidates", "first_stage_scores", "teacher_scores")}))

    def finetune(self, cfg: RerankerFinetune, ctx: StageContext) -> StageResult:
        from edgedistill.tasks.reranker.finetune import run

        return run(cfg, ctx, ctx.inputs.data, held_out_texts(ctx.inputs.evaluation))

    def distill(self, cfg: RerankerDistill, ctx: StageContext) -> StageResult:
        from edgedistill.tasks.reranker.distill import run

        return run(cfg, ctx, ctx.inputs.data, held_out_texts(ctx.inputs.evaluation))

    def export(self, cfg: RerankerExport, ctx: StageContext) -> StageResult:
        from edgedistill.tasks.reranker.export import run

        return run(cfg, ctx)

    def profile(self, cfg: RerankerProfile, ctx: StageContext) -> StageResult:
        from edgedistill.tasks.reranker.profile import run

        return run(cfg, ctx, self)

    def calibration_inputs(self, data: RerankerData, calibration: int, proxy: int,
                           seed: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(query, passage) pairs of the training data (every label): calibration, and a disjoint proxy sample."""
        from edgedistill.tasks.reranker.data import labelled_pairs, load_groups

        pool = [(p.query, p.passage) for p in labelled_pairs(load_groups(data.pairs), calibration + proxy, seed + 5)]
        return pool[:calibration], pool[calibration:] or pool

    def quality_proxy(self, reference_bundle: Path, texts: list, threads: int = 0) -> Any:
        from edgedistill.tasks.seqcls.runtime import LogitsProxy

        # pairs from calibration_inputs; plain texts (unit tests) are paired with their neighbours
        pairs = [t for t in texts if not isinstance(t, str)] or list(zip(texts[0::2], texts[1::2], strict=False))
        return LogitsProxy(reference_bundle, pairs, threads=threads)

    def bundle_variants(self, bundle: Path, manifest: dict, texts: list[str]) -> dict[str, Any]:
        return {}

    def bundle_card(self, manifest: dict) -> str:
        from edgedistill.tasks.reranker.bundle_card import bundle_card

        return bundle_card(manifest)

    def sample_texts(self, data: Any) -> list[str]:
        return list(data.queries)


TASK = RerankerTask()
