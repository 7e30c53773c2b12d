"""Task kinds: what differs between an embedding model, a reranker and a classifier lives behind ``Task``.

Stages, the runner, the report and the bundle are task-agnostic: they ask the recipe's task how to load a model,
label with the teacher, train, build the graph to export, predict without torch, evaluate, score a quantization
trial, feed the profiler and name the report's columns. Adding a kind is adding a package under ``tasks/`` and a
row in ``TASKS`` (docs/architecture.md).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from edgedistill.errors import RecipeError

if TYPE_CHECKING:
    from pathlib import Path

    from edgedistill.contract import StageContext, StageResult


@dataclass(frozen=True)
class Metric:
    """A quality metric a task's evaluator produces: its key, report header and digits. ``reference`` names
    the teacher metric retention is computed against when the teacher has no value under ``key`` itself."""

    key: str
    label: str
    digits: int = 2
    reference: str | None = None
    description: str = ""


class Task(Protocol):
    """What one kind of model needs from the chain. ``edgedistill.tasks.embedding.EmbeddingTask`` is the
    reference implementation."""

    name: ClassVar[str]
    primary_metric: ClassVar[str]
    metrics: ClassVar[tuple[Metric, ...]]

    def load(self, kind: str, path: Path, device: str = "cpu", threads: int = 0) -> Any:
        """A predictor over an artifact of the given kind (teacher, torch student or ONNX bundle)."""

    def eval_set(self, evaluation: Any) -> Any:
        """The fixed held-out inputs every artifact is measured on, from the recipe's evaluation section."""

    def evaluate_teacher(self, teacher: Path, data: Any, device: str) -> tuple[dict[str, float], dict[str, Any]]:
        """The teacher's quality and the reference arrays students are compared with (cached by the runner)."""

    def evaluator(self, data: Any, reference: dict[str, Any]) -> Any:
        """An object with ``quality(predictor)`` and ``evaluate(predictor)`` (quality plus batch-1 latency)."""

    def distill(self, cfg: Any, ctx: StageContext) -> StageResult:
        """Build the student, label with the teacher, train; write the student into ``ctx.artifact_dir``."""

    def export(self, cfg: Any, ctx: StageContext) -> StageResult:
        """Export the torch student to one ONNX graph plus tokenizer and manifest, numerically gated."""

    def quality_proxy(self, reference_bundle: Path, texts: list[str], threads: int = 0) -> Any:
        """A cheap ``score(bundle) -> float`` (1 = identical to the reference) ranking quantization trials."""

    def bundle_variants(self, bundle: Path, manifest: dict, texts: list[str]) -> dict[str, Any]:
        """Extra files the deploy bundle ships (written into ``bundle``, checked), by variant name."""

    def bundle_card(self, manifest: dict) -> str:
        """The bundle's README.md: what the model is, its figures and how to call it."""

    def sample_texts(self, data: Any) -> list[str]:
        """Real held-out inputs (from the evaluation set) for checks of the shipped bundle."""

    # Optional (read with getattr; the embedding task uses the defaults):
    #   data_config: type[BaseModel]         the recipe's ``data:`` section (default: recipe.DataConfig)
    #   evaluation_config: type[BaseModel]   the recipe's ``evaluation:`` section (default: recipe.EvaluationConfig)
    #   stage_configs: dict[str, type]       config class per stage type, overriding the registry's default; a
    #                                        stage type whose registry default is None exists only where a task
    #                                        names a config for it (``finetune``)
    #   finetune(cfg, ctx) -> StageResult    the ``finetune`` stage: a teacher from a pretrained encoder and labels
    #   stage_reads: dict[str, tuple[str, ...]]  recipe inputs a stage reads in this task beyond its registry row's
    #                                        (e.g. {"distill": ("data", "evaluation")}); they enter the stage's key
    #   calibration_inputs(data, n_cal, n_proxy, seed) -> (list, list)
    #                                        quantize's calibration and proxy inputs (texts or (text, text) pairs)
    #                                        from the task's data section, disjoint
    #   profile(cfg, ctx) -> StageResult     the ``profile`` stage, for a workload that is not one text per call
    #                                        (a reranker: 1 query x N candidates)
    # A task's version of any stage may put its report section, as Markdown, in its metrics (``report_markdown``).
    #   latency_note: str                    the report's note on what its latency column measures
    #   latency_label: str                   the report summary's name for that latency (default 'Batch-1 p50')


# name -> module holding a ``TASK`` instance, or the issue that will bring it
TASKS: dict[str, str] = {
    "embedding": "edgedistill.tasks.embedding",
    "classifier": "edgedistill.tasks.classifier",
    "reranker": "edgedistill.tasks.reranker",
}
PLANNED: dict[str, str] = {}
TASK_NAMES = (*TASKS, *PLANNED)


def check_available(name: str) -> None:
    """Raise RecipeError naming the field when a task kind is known but not built yet."""
    if name in PLANNED:
        raise RecipeError(f"task: '{name}' ({PLANNED[name]}) is not yet available in this version of edgedistill; "
                          f"available: {', '.join(TASKS)}. Use task: embedding or upgrade edgedistill.")
    if name not in TASKS:
        raise RecipeError(f"task: unknown task {name!r}; expected one of {', '.join(TASK_NAMES)}")


def get_task(name: str = "embedding") -> Task:
    """The task object for a recipe's ``task`` field (its module is imported on first use)."""
    check_available(name)
    return importlib.import_module(TASKS[name]).TASK
