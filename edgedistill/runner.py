"""Run a recipe's stages in order: content-keyed atomic stage folders, resume, evaluation of every artifact.

The runner knows stages only through the registry (``edgedistill.stages``) and models only through the recipe's
task (``edgedistill.tasks``); the report and the deploy bundle are written by ``edgedistill.pipeline``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill import stages
from edgedistill.assets import cache_dir, resolve, source_fingerprint
from edgedistill.contract import (
    TEACHER,
    Artifact,
    StageContext,
    StageInputs,
    StageRecord,
    artifact_size_mb,
    content_key,
)
from edgedistill.integrity import (
    STORAGE_ERRNOS,
    check_folder,
    check_model_folder,
    start_kill_watch,
    storage_error,
    write_json_atomic,
    write_manifest,
)
from edgedistill.locks import key_lock, run_lock
from edgedistill.recipe import Recipe
from edgedistill.records import TEACHER_RECORD, read_record
from edgedistill.stages.configs import source_fields
from edgedistill.tasks import get_task
from edgedistill.trust import allow_remote_code

log = logging.getLogger(__name__)

# Evaluation settings that change neither the teacher's cached quality metrics nor its reference arrays.
NOT_TEACHER_EVAL = frozenset({"latency_sentences"})

def pick_device(requested: str = "auto") -> str:
    """CUDA when asked for or available (auto), else CPU."""
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Runner:
    """Runs one recipe into ``runs_dir/<recipe name>/``.

    A finished stage folder is reused only if every file still matches the manifest (``files.json``) written
    when it finished: by size and mtime, or by sha256 for every file when ``full_check`` is set.
    """

    def __init__(self, recipe: Recipe, runs_dir: Path | str = "runs", full_check: bool = False,
                 wait: bool = False) -> None:
        self.recipe = recipe
        self.wait = wait  # for the run folder's lock, held by another run
        self.run_dir = Path(runs_dir).resolve() / recipe.name
        self.full_check = full_check
        self.task = get_task(recipe.task)
        self._evaluator: object | None = None
        self._eval_set: object | None = None
        self.teacher_metrics: dict[str, float] = {}
        self.teacher_path: Path | None = None

    # -- keys -------------------------------------------------------------------------------
    def root_key(self) -> str:
        """The teacher by content (a local folder retrained in place gives a new key) and the task."""
        return content_key("root", self.recipe.task, source_fingerprint(self.teacher_path or self.recipe.teacher))

    def eval_key(self, teacher: bool = False) -> str:
        """The evaluation settings, with the sets they name by content. ``teacher``: only those the teacher's
        cached quality and reference arrays depend on (not the latency sample)."""
        ev = self.recipe.evaluation
        settings = ev.model_dump(exclude=NOT_TEACHER_EVAL if teacher else None)
        return content_key("eval", self.recipe.task, settings,
                           {name: source_fingerprint(spec) for name, spec in source_fields(ev).items()})

    def stage_inputs(self, stage_type: str) -> tuple[StageInputs, dict[str, object]]:
        """What a stage may read beyond its config and input (its registry row's ``reads``), and the part of its
        key those inputs make: local files by content, everything else by value."""
        # the registry's reads, plus those a task's version of the stage needs (Task.stage_reads)
        extra = getattr(self.task, "stage_reads", {}).get(stage_type, ())
        reads = stages.REGISTRY[stage_type].reads + tuple(r for r in extra if r not in stages.REGISTRY[stage_type].reads)
        r = self.recipe
        train = getattr(r.data, "train", None)  # unlabelled text (embedding); other tasks read their whole data
        values = {"train": train, "seed": r.data.seed, "selection": getattr(r.evaluation, "sts", None),
                  "threads": r.threads, "data": r.data, "evaluation": r.evaluation}
        inputs = StageInputs(**{k: v for k, v in values.items() if k in reads})
        key: dict[str, object] = {}
        for name in reads:
            if name == "train":
                key[name] = [source_fingerprint(s) for s in ([train] if isinstance(train, str) else train or [])]
            elif name == "selection":
                key[name] = source_fingerprint(values["selection"]) if values["selection"] else None
            elif name == "exclusions":  # held-out sentences kept out of training
                ev = r.evaluation
                heldout = getattr(ev, "heldout", None)
                key[name] = [source_fingerprint(heldout), ev.heldout_sentences] if heldout else None
            elif name == "evaluation":
                key[name] = self.eval_key()
            elif name == "data":
                key[name] = [r.data.model_dump(),
                             {field: source_fingerprint(spec) for field, spec in source_fields(r.data).items()}]
            else:
                key[name] = values[name]
        return inputs, key

    # -- evaluation ---------------------------------------------------------------------------
    def eval_set(self) -> object:
        if self._eval_set is None:
            self._eval_set = self.task.eval_set(self.recipe.evaluation)
        return self._eval_set

    def teacher_evaluation(self) -> tuple[dict[str, float], dict[str, np.ndarray | None]]:
        """Teacher quality metrics and reference arrays, cached across runs under a content key."""
        data = self.eval_set()
        key = content_key("teacher-eval", self.root_key(), self.eval_key(teacher=True), pick_device())
        with key_lock(cache_dir() / "teacher-eval", key, "teacher evaluation"):
            return self._teacher_evaluation(key, data)

    def _teacher_evaluation(self, key: str, data: object) -> tuple[dict[str, float], dict[str, np.ndarray | None]]:
        folder = cache_dir() / "teacher-eval" / key
        if (folder / "metrics.json").is_file():
            problems = check_folder(folder, self.full_check) or []
            if not problems:
                try:
                    metrics = json.loads((folder / "metrics.json").read_text())
                    reference = {p.stem: np.load(p) for p in folder.glob("*.npy")}
                    log.info("teacher evaluation: cached (%s)", folder)
                    return metrics, reference
                except (OSError, ValueError) as e:
                    problems = [str(e)]
            log.warning("teacher evaluation: the cached copy in %s is damaged (%s); evaluating again", folder,
                        "; ".join(problems))
        log.info("evaluating the teacher's quality once (cached afterwards)")
        metrics, reference = self.task.evaluate_teacher(self.teacher_path, data, pick_device())
        metrics["size_mb"] = artifact_size_mb(self.teacher_path)
        tmp = folder.with_name(folder.name + f".{os.getpid()}.tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        for name, array in reference.items():
            if array is not None:
                np.save(tmp / f"{name}.npy", array)
        write_json_atomic(tmp / "metrics.json", metrics)
        write_manifest(tmp, skip=frozenset())
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
        return metrics, reference

    def evaluator(self) -> object:
        if self._evaluator is None:
            _, reference = self.teacher_evaluation()
            self._evaluator = self.task.evaluator(self.eval_set(), reference)
        return self._evaluator

    def evaluate_artifact(self, artifact: Artifact) -> dict[str, float]:
        encoder = self.task.load(artifact.kind, artifact.path, device=pick_device())
        metrics = self.evaluator().evaluate(encoder, label=f"evaluating the {artifact.kind} artifact")
        metrics["size_mb"] = artifact_size_mb(artifact.path)
        metrics["params"] = float(count_parameters(encoder))
        return metrics

    # -- the loop -------------------------------------------------------------------------------
    def stage_dir(self, index: int, stage_type: str, key: str) -> Path:
        return self.run_dir / f"{index:02d}-{stage_type}-{key}"

    def run(self, hold_lock: bool = True) -> list[StageRecord]:
        """Run every unfinished stage. Returns one record per stage (``pipeline.run_recipe`` then writes the
        report and the bundle, holding the run folder's lock itself: ``hold_lock=False``).

        A full disk, a read-only folder or a missing permission raises StorageError; finished stages stay.
        """
        try:
            if not hold_lock:
                return self._run()
            with run_lock(self.run_dir, wait=self.wait):
                return self._run()
        except OSError as e:
            if e.errno not in STORAGE_ERRNOS:
                raise
            raise storage_error(e, f"run {self.recipe.name}") from e

    def _run(self) -> list[StageRecord]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        start_kill_watch(self.run_dir)
        self._set_threads()
        self.teacher_path = resolve(self.recipe.teacher)
        allow_remote_code(self.recipe.trust.remote_code)
        check_model_folder(self.teacher_path, "teacher", self.recipe.trust.pickle_weights,
                           self.recipe.trust.remote_code)
        current = Artifact(TEACHER, self.teacher_path, self.root_key())
        finetunes = next((i for i, cfg in enumerate(self.recipe.stages)
                          if stages.output_kind(cfg.type) != TEACHER), len(self.recipe.stages))
        # a recipe whose first stages make the teacher (finetune) evaluates the teacher they make, not the
        # pretrained encoder it starts from (an untrained head would be meaningless)
        teacher_metrics = self.teacher_evaluation()[0] if finetunes == 0 else {}
        current_eval = teacher_metrics
        records: list[StageRecord] = []
        for index, cfg in enumerate(self.recipe.stages):
            record = self._run_stage(index, cfg, current, current_eval)
            if index < finetunes:
                record = self._adopt_teacher(record)
                teacher_metrics = record.evaluation
            records.append(record)
            current, current_eval = record.artifact, record.evaluation
        self.teacher_metrics = self._teacher_record(teacher_metrics, measure=not all(r.reused for r in records))
        self._link_final(records)
        return records

    def _adopt_teacher(self, record: StageRecord) -> StageRecord:
        """A stage made the teacher (finetune): later stages, the evaluator and the report's retention use it."""
        self.teacher_path = record.artifact.path
        self._evaluator = None
        check_model_folder(self.teacher_path, f"stages.{record.index} ({record.type}) output",
                           self.recipe.trust.pickle_weights, self.recipe.trust.remote_code)
        record.evaluation = self.teacher_evaluation()[0]
        if record.metrics.get("evaluation") != record.evaluation:
            record.metrics.update(evaluation=record.evaluation, eval_key=self.eval_key())
            write_json_atomic(record.dir / "metrics.json", record.metrics)
        return record

    def _teacher_record(self, quality: dict[str, float], measure: bool) -> dict[str, float]:
        """Teacher metrics for the report. Its latency is measured in the run that ran stages, on the same
        sentences and host as the artifacts, so speed-ups are side-by-side ratios (never a cached number)."""
        path = self.run_dir / TEACHER_RECORD
        previous = json.loads(path.read_text())["evaluation"] if path.is_file() else {}
        metrics = {**quality, "params": quality.get("params"), "size_mb": quality.get("size_mb")}
        if measure or "latency_ms_p50" not in previous:
            encoder = self.task.load(TEACHER, self.teacher_path, device=pick_device())
            metrics.update(self.evaluator().latency(encoder))
        else:
            metrics.update({k: previous[k] for k in ("latency_ms_p50", "latency_ms_p90")})
        write_json_atomic(path, {"teacher": self.recipe.teacher, "path": str(self.teacher_path),
                                 "task": self.recipe.task, "evaluation": metrics})
        return metrics

    def _set_threads(self) -> None:
        import torch

        threads = self.recipe.threads or os.cpu_count() or 1
        torch.set_num_threads(threads)

    def _run_stage(self, index: int, cfg: Any, input_: Artifact, input_eval: dict[str, float]) -> StageRecord:
        config = cfg.model_dump()
        inputs, inputs_key = self.stage_inputs(cfg.type)
        sources = {name: source_fingerprint(spec) for name, spec in source_fields(cfg).items()}
        key = content_key(config, input_.key, inputs_key, *([sources] if sources else []))
        log.debug("stage %d %s: key %s from input %s and inputs %s", index, cfg.type, key, input_.key, inputs_key)
        final = self.stage_dir(index, cfg.type, key)
        record = self._finished(index, cfg.type, final, input_)
        if record is not None:
            log.info("stage %d %s: finished earlier, reusing %s", index, cfg.type, final.name)
            stale = record.metrics.get("eval_key") != self.eval_key()
            if stale and not record.metrics.get("passthrough") and record.artifact.kind != TEACHER:
                record.evaluation = self.evaluate_artifact(record.artifact)
                record.metrics.update(evaluation=record.evaluation, eval_key=self.eval_key())
                write_json_atomic(final / "metrics.json", record.metrics)
            record.reused = True
            return record

        init = getattr(getattr(cfg, "student", None), "init", None)
        if init and init != "teacher":
            check_model_folder(resolve(init), f"stages.{cfg.type}.student.init",
                               self.recipe.trust.pickle_weights, self.recipe.trust.remote_code)
        work = self.run_dir / f".tmp-{final.name}"
        if work.exists():
            log.info("stage %d %s: discarding an unfinished attempt", index, cfg.type)
            shutil.rmtree(work)
        work.mkdir(parents=True)
        try:
            return self._execute(index, cfg, config, key, final, work, input_, input_eval, inputs)
        except OSError as e:
            shutil.rmtree(work, ignore_errors=True)  # give the space back; checkpoints (.ckpt-*) are kept
            if e.errno not in STORAGE_ERRNOS:
                raise
            raise storage_error(e, f"stage {index} {cfg.type}") from e

    def _finished(self, index: int, stage_type: str, final: Path, input_: Artifact) -> StageRecord | None:
        """The record of a finished, intact stage folder; None if there is none. A damaged one is removed."""
        if not (final / "metrics.json").is_file():
            return None
        problems = check_folder(final, self.full_check)
        try:
            record = read_record(final, input_)
        except (OSError, ValueError, KeyError) as e:
            problems = [*(problems or []), f"unreadable record: {e}"]
        if problems is None:  # finished by a version that wrote no manifest: record the files as they are now
            log.info("stage %d %s: recording the sha256 of its files (files.json)", index, stage_type)
            write_manifest(final)
            problems = []
        if not problems:
            return record
        log.warning("stage %d %s: %s is damaged (%s); running the stage again", index, stage_type, final.name,
                    "; ".join(problems))
        shutil.rmtree(final)
        return None

    def _execute(self, index: int, cfg: Any, config: dict[str, Any], key: str, final: Path, work: Path,
                 input_: Artifact, input_eval: dict[str, float], inputs: StageInputs) -> StageRecord:
        makes_teacher = stages.output_kind(cfg.type) == TEACHER  # evaluated as the teacher once it is final
        ctx = StageContext(
            index=index, teacher=self.teacher_path, input=input_, work_dir=work,
            device=pick_device(getattr(cfg, "device", "auto")), input_evaluation=input_eval,
            _evaluator=None if makes_teacher else self.evaluator, inputs=inputs, task=self.task,
        )
        log.info("stage %d %s: running (key %s)", index, cfg.type, key)
        t0 = time.perf_counter()
        result = stages.get(cfg.type)(cfg, ctx)
        stage_s = time.perf_counter() - t0
        if result.passthrough:
            artifact = input_
            evaluation = dict(input_eval)
        elif makes_teacher:
            artifact = Artifact(TEACHER, final / "artifact", key)
            evaluation = {}
        else:
            artifact = Artifact(stages.output_kind(cfg.type), final / "artifact", key)
            t1 = time.perf_counter()
            evaluation = self.evaluate_artifact(Artifact(artifact.kind, ctx.artifact_dir, key))
            eval_s = time.perf_counter() - t1
        timings = {"stage_s": round(stage_s, 2)}
        if not result.passthrough and not makes_teacher:
            timings["eval_s"] = round(eval_s, 2)
        metrics = {"stage": cfg.type, **result.metrics, "evaluation": evaluation, "eval_key": self.eval_key(),
                   "passthrough": result.passthrough}
        write_json_atomic(work / "config.json", {"type": cfg.type, "config": config, "key": key,
                                                 "input_key": input_.key, "input_kind": input_.kind,
                                                 "input_path": str(input_.path)})
        write_json_atomic(work / "timings.json", timings)
        write_json_atomic(work / "metrics.json", metrics)
        if cfg.type == "distill" and self.recipe.task == "embedding":  # other tasks write their card themselves
            from edgedistill.model_card import write_model_card

            write_model_card(ctx.artifact_dir, self.recipe, config, metrics)
        write_manifest(work)  # every file's sha256, checked before the stage is reused
        if final.exists():  # a folder without metrics.json is not a finished stage: replace it
            shutil.rmtree(final)
        os.replace(work, final)
        log.info("stage %d %s: done in %.1fs -> %s", index, cfg.type, stage_s, final)
        return StageRecord(index, cfg.type, key, final, artifact, config, metrics, evaluation, timings)

    def _link_final(self, records: list[StageRecord]) -> None:
        """``runs/<name>/final`` points at the last artifact: what an app developer ships."""
        link = self.run_dir / "final"
        target = os.path.relpath(records[-1].artifact.path, self.run_dir)
        tmp = self.run_dir / f".final.{os.getpid()}"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        tmp.symlink_to(target)
        os.replace(tmp, link)


def count_parameters(encoder: Any) -> int:
    """Weights of a torch model, or elements of an ONNX graph's float/int8 initialisers."""
    if hasattr(encoder, "model"):
        return sum(p.numel() for p in encoder.model.parameters())
    import onnx

    graph = onnx.load(str(encoder.model_path), load_external_data=False).graph
    return sum(int(np.prod(t.dims)) for t in graph.initializer if len(t.dims) >= 1)
