"""The stage registry: one row per stage type. Each stage module has ``run(cfg, ctx) -> StageResult`` (and may
have ``report_section(metrics)``), imported only when the stage runs."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from edgedistill.contract import ONNX, TEACHER, TORCH
from edgedistill.stages.configs import DistillStage, ExportStage, ProfileStage, QuantizeStage

if TYPE_CHECKING:
    from edgedistill.contract import StageContext, StageResult


@dataclass(frozen=True)
class StageSpec:
    """A stage type: its config class, the artifact kinds it consumes and produces, its module, and the
    recipe-level inputs (``StageInputs`` fields, plus ``evaluation`` for the evaluator) its result depends on.
    Every declared input is part of the stage's key; nothing else of the recipe reaches the stage."""

    config: type | None  # None: the stage exists only in tasks that name its config (Task.stage_configs)
    input_kind: str
    output_kind: str
    module: str
    reads: tuple[str, ...] = ()


REGISTRY: dict[str, StageSpec] = {
    # finetune makes the teacher itself (a pretrained encoder plus labelled data -> a task model), which the later
    # stages then use as the teacher; its config is the task's (Task.stage_configs["finetune"])
    "finetune": StageSpec(None, TEACHER, TEACHER, "edgedistill.stages.finetune", reads=("data", "seed", "evaluation")),
    # distill selects its checkpoint on the STS dev split, keeps held-out sentences out of training (exclusions)
    # and draws its training text from data.train
    "distill": StageSpec(DistillStage, TEACHER, TORCH, "edgedistill.stages.distill",
                         reads=("train", "seed", "selection", "exclusions")),
    # export checks and times on the evaluation's held-out sentences
    "export": StageSpec(ExportStage, TORCH, ONNX, "edgedistill.stages.export", reads=("evaluation",)),
    # quantize calibrates on data.train, keeps trials within budget by the evaluator, times with the threads
    "quantize": StageSpec(QuantizeStage, ONNX, ONNX, "edgedistill.stages.quantize",
                          reads=("train", "seed", "threads", "evaluation")),
    "profile": StageSpec(ProfileStage, ONNX, ONNX, "edgedistill.stages.profile", reads=("evaluation",)),
}

StageConfig = Annotated[DistillStage | ExportStage | QuantizeStage | ProfileStage, Field(discriminator="type")]


def get(stage_type: str) -> Callable[[Any, StageContext], StageResult]:
    """The ``run`` function of a stage type (its heavy imports happen here, not at start-up)."""
    return importlib.import_module(REGISTRY[stage_type].module).run


def report_section(stage_type: str, metrics: dict[str, Any]) -> str | None:
    """Extra Markdown a stage contributes to the report (its module's optional ``report_section``)."""
    section = getattr(importlib.import_module(REGISTRY[stage_type].module), "report_section", None)
    return section(metrics) if section else None


def output_kind(stage_type: str) -> str:
    """The artifact kind a stage produces."""
    return REGISTRY[stage_type].output_kind
