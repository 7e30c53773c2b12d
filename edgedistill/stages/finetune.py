"""Fine-tune: the teacher itself, from a pretrained encoder and labelled data (a cross-encoder from scored pairs,
a classifier from labelled texts). What that means is the task's: ``Task.finetune``. The runner uses the folder
this stage writes as the teacher of every later stage and of the report's retention."""

from __future__ import annotations

from typing import Any

from edgedistill.contract import StageContext, StageResult
from edgedistill.errors import RecipeError


def run(cfg: Any, ctx: StageContext) -> StageResult:
    finetune = getattr(ctx.task, "finetune", None)
    if finetune is None:
        raise RecipeError(f"stages.{ctx.index}: the {getattr(ctx.task, 'name', '?')} task has no finetune stage; "
                          "remove it and name a ready teacher")
    return finetune(cfg, ctx)
