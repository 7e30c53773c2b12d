"""The stage registry: each stage module has ``run(cfg, ctx) -> StageResult``, imported only when used."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Callable

from edgedistill.recipe import STAGE_IO

if TYPE_CHECKING:
    from edgedistill.runner import StageContext, StageResult

REGISTRY: dict[str, str] = {
    "distill": "edgedistill.stages.distill",
    "export": "edgedistill.stages.export",
    "quantize": "edgedistill.stages.quantize",
    "profile": "edgedistill.stages.profile",
}


def get(stage_type: str) -> Callable[[Any, StageContext], StageResult]:
    """The ``run`` function of a stage type (its heavy imports happen here, not at start-up)."""
    return importlib.import_module(REGISTRY[stage_type]).run


def report_section(stage_type: str, metrics: dict[str, Any]) -> str | None:
    """Extra Markdown a stage contributes to the report (its module's optional ``report_section``)."""
    section = getattr(importlib.import_module(REGISTRY[stage_type]), "report_section", None)
    return section(metrics) if section else None


def output_kind(stage_type: str) -> str:
    """The artifact kind a stage produces."""
    return STAGE_IO[stage_type][1]
