"""The sentence-embedding bi-encoder task: texts in, one L2-normalised vector per text out.

Everything the chain needs to know about embedding models is reached through ``TASK``; the modules beside this
one hold the code (loading and encoding, labelling, losses, training, the exported graph, evaluation).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from edgedistill.tasks import Metric

if TYPE_CHECKING:
    from edgedistill.contract import StageContext, StageResult

PRIMARY_METRIC = "sts_spearman"


class EmbeddingTask:
    """Sentence embeddings: STS-b, retrieval (own and against a teacher-built index), cosine to the teacher."""

    name: ClassVar[str] = "embedding"
    primary_metric: ClassVar[str] = PRIMARY_METRIC
    metrics: ClassVar[tuple[Metric, ...]] = (
        Metric(PRIMARY_METRIC, "STS-b", 2,
               description="STS-b = Spearman x100 of cosine similarity on the recipe's STS-benchmark split"),
        Metric("retrieval_ndcg10", "nDCG@10", 2,
               description="nDCG@10 = retrieval on held-out SNLI premise -> entailed hypothesis"),
        Metric("retrieval_ndcg10_cross", "nDCG@10 vs teacher index", 2, reference="retrieval_ndcg10",
               description="vs teacher index = the artifact's queries against a corpus the teacher encoded"),
        Metric("teacher_cosine_mean", "cosine to teacher", 4,
               description="cosine to teacher = mean cosine to the teacher's embeddings of held-out sentences"),
    )
    budget_metrics: ClassVar[tuple[str, ...]] = (PRIMARY_METRIC, "retrieval_ndcg10")

    def load(self, kind: str, path: Path, device: str = "cpu", threads: int = 0) -> Any:
        from edgedistill.tasks.embedding.encoders import load_encoder

        return load_encoder(kind, Path(path), device=device, threads=threads)

    def eval_set(self, evaluation: Any) -> Any:
        from edgedistill.data import load_retrieval, load_sentences, load_sts, sample
        from edgedistill.tasks.embedding.evaluate import EvalSet

        ev = evaluation
        sts = load_sts(ev.sts, ev.sts_split) if ev.sts else None
        heldout = sample(load_sentences(ev.heldout), ev.heldout_sentences, seed=0) if ev.heldout else []
        retrieval = load_retrieval(ev.retrieval, ev.retrieval_queries, ev.retrieval_corpus) if ev.retrieval else None
        latency_pool = heldout or (sts.first if sts else []) or (retrieval.queries if retrieval else [])
        return EvalSet(sts=sts, heldout=heldout, latency_sentences=sample(latency_pool, ev.latency_sentences, seed=1),
                       batch_size=ev.batch_size, retrieval=retrieval)

    def evaluate_teacher(self, teacher: Path, data: Any, device: str) -> tuple[dict[str, float], dict[str, Any]]:
        from edgedistill.progress import Progress, TrackedEncoder
        from edgedistill.tasks.seqcls.models import SEQCLS, folder_kind

        if Path(teacher).is_dir() and folder_kind(teacher) == SEQCLS:
            from edgedistill.errors import RecipeError

            raise RecipeError(f"teacher: {teacher} is a cross-encoder / classifier (a *ForSequenceClassification "
                              "head), not a sentence-embedding model; use task: reranker for it, or keep a bi-encoder "
                              "teacher and name it as stages.distill.margin_teacher (margin_mse)")
        from edgedistill.tasks.embedding.evaluate import Evaluator, TeacherReference

        progress = Progress("evaluating the teacher", data.sentence_count(reference=True), "sentences")
        encoder = TrackedEncoder(self.load("teacher", teacher, device=device), progress)
        reference = {
            "heldout": encoder.encode(data.heldout, batch_size=data.batch_size) if data.heldout else None,
            "corpus": encoder.encode(data.retrieval.corpus, batch_size=data.batch_size) if data.retrieval else None,
        }
        metrics = Evaluator(data, TeacherReference(**reference)).quality(encoder)
        metrics["dimension"] = float(encoder.dimension)
        metrics["params"] = float(sum(p.numel() for p in encoder.model.parameters()))
        progress.close()
        return metrics, reference

    def evaluator(self, data: Any, reference: dict[str, Any]) -> Any:
        from edgedistill.tasks.embedding.evaluate import Evaluator, TeacherReference

        return Evaluator(data, TeacherReference(**{k: reference.get(k) for k in ("heldout", "corpus")}))

    def distill(self, cfg: Any, ctx: StageContext) -> StageResult:
        from edgedistill.tasks.embedding.distill import run

        return run(cfg, ctx)

    def export(self, cfg: Any, ctx: StageContext) -> StageResult:
        from edgedistill.tasks.embedding.export import run

        return run(cfg, ctx)

    def quality_proxy(self, reference_bundle: Path, texts: list[str], threads: int = 0) -> Any:
        from edgedistill.quant.measure import Proxy

        return Proxy(reference_bundle, texts, threads=threads)

    def bundle_variants(self, bundle: Path, manifest: dict, texts: list[str]) -> dict[str, Any]:
        """Extra files of the deploy bundle, each checked: the strings-in model when the export asked for it."""
        if not manifest.get("tokenizer_in_graph"):
            return {}
        from edgedistill.tasks.embedding.bundle_card import add_tokenizer_in_graph

        return {"tokenizer_in_graph": add_tokenizer_in_graph(bundle, manifest, texts)}

    def bundle_card(self, manifest: dict) -> str:
        from edgedistill.tasks.embedding.bundle_card import bundle_card

        return bundle_card(manifest)

    def sample_texts(self, data: Any) -> list[str]:
        return list(data.heldout or data.latency_sentences or (data.sts.first if data.sts else [])
                    or (data.retrieval.queries if data.retrieval else []))


TASK = EmbeddingTask()
