"""A whole run: the runner executes the stages, then the report and the deploy bundle are written from its
records. The one place that knows all three, so none of them imports another."""

from __future__ import annotations

from pathlib import Path

from edgedistill.bundle import write_bundle
from edgedistill.contract import StageRecord
from edgedistill.integrity import STORAGE_ERRNOS, storage_error
from edgedistill.locks import run_lock
from edgedistill.recipe import Recipe
from edgedistill.report import write_report
from edgedistill.runner import Runner


def run_recipe(recipe: Recipe, runs_dir: Path | str = "runs", full_check: bool = False,
               wait: bool = False) -> list[StageRecord]:
    """Run (or resume) every stage of ``recipe``, then write ``report.{md,json,html}`` and ``bundle/``, all under
    the run folder's lock (another run of it waits with ``wait``, else fails naming the holder)."""
    runner = Runner(recipe, runs_dir, full_check=full_check, wait=wait)
    try:
        with run_lock(runner.run_dir, wait=wait):
            records = runner.run(hold_lock=False)
            write_report(runner.run_dir, recipe.name, runner.teacher_metrics, records, recipe.task)
            write_bundle(runner.run_dir, records, runner.teacher_metrics,
                         runner.task.sample_texts(runner.eval_set()), recipe.task)
    except OSError as e:  # a full disk, a read-only folder, a missing permission: one clear line
        if e.errno not in STORAGE_ERRNOS:
            raise
        raise storage_error(e, f"run {recipe.name}") from e
    return records
