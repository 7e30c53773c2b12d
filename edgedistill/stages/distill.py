"""Distil: a small student learns from the teacher. What that means (data, labels, losses, the student's
architecture) is the task's: see ``Task.distill`` (the embedding task's is ``tasks/embedding/distill.py``)."""

from __future__ import annotations

from edgedistill.contract import StageContext, StageResult
from edgedistill.stages.configs import DistillStage
from edgedistill.tasks import get_task


def run(cfg: DistillStage, ctx: StageContext) -> StageResult:
    return (ctx.task or get_task()).distill(cfg, ctx)
