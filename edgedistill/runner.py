"""Run a recipe's stages in order: content-keyed atomic stage folders, resume, evaluation of every artifact."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgedistill import stages
from edgedistill.assets import cache_dir, resolve
from edgedistill.data import fingerprint, load_retrieval, load_sentences, load_sts, sample
from edgedistill.encoders import load_encoder
from edgedistill.evaluate import EvalSet, Evaluator, TeacherReference
from edgedistill.integrity import (
    STORAGE_ERRNOS,
    check_folder,
    check_model_folder,
    start_kill_watch,
    storage_error,
    write_json_atomic,
    write_manifest,
)
from edgedistill.recipe import Recipe
from edgedistill.trust import allow_remote_code

log = logging.getLogger(__name__)

TEACHER_RECORD = "teacher.json"


def content_key(*parts: Any) -> str:
    """Short stable hash of JSON-serialisable parts."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


@dataclass(frozen=True)
class Artifact:
    """What a stage hands to the next: a kind, a folder and the content key that produced it."""

    kind: str
    path: Path
    key: str


@dataclass
class StageContext:
    """Everything a stage may use besides its own config."""

    recipe: Recipe
    index: int
    teacher: Path
    input: Artifact
    work_dir: Path
    device: str
    input_evaluation: dict[str, float]
    _evaluator: Callable[[], Evaluator]

    @property
    def artifact_dir(self) -> Path:
        """Where the stage writes its output artifact."""
        return self.work_dir / "artifact"

    @property
    def evaluator(self) -> Evaluator:
        return self._evaluator()


@dataclass
class StageResult:
    """A stage's own metrics; ``passthrough`` stages (profile) hand their input on unchanged."""

    metrics: dict[str, Any] = field(default_factory=dict)
    passthrough: bool = False


@dataclass
class StageRecord:
    """A finished stage as read back from its folder."""

    index: int
    type: str
    key: str
    dir: Path
    artifact: Artifact
    config: dict[str, Any]
    metrics: dict[str, Any]
    evaluation: dict[str, float]
    timings: dict[str, float]
    reused: bool = False


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

    def __init__(self, recipe: Recipe, runs_dir: Path | str = "runs", full_check: bool = False) -> None:
        self.recipe = recipe
        self.run_dir = Path(runs_dir).resolve() / recipe.name
        self.full_check = full_check
        self._evaluator: Evaluator | None = None
        self._eval_set: EvalSet | None = None
        self.teacher_path: Path | None = None

    # -- keys -------------------------------------------------------------------------------
    def root_key(self) -> str:
        r = self.recipe
        return content_key("root", r.teacher, r.data.model_dump())

    def eval_key(self) -> str:
        return content_key("eval", self.recipe.evaluation.model_dump())

    # -- evaluation ---------------------------------------------------------------------------
    def eval_set(self) -> EvalSet:
        if self._eval_set is None:
            ev = self.recipe.evaluation
            sts = load_sts(ev.sts, ev.sts_split) if ev.sts else None
            heldout = sample(load_sentences(ev.heldout), ev.heldout_sentences, seed=0) if ev.heldout else []
            latency_pool = heldout or (sts.first if sts else [])
            retrieval = (load_retrieval(ev.retrieval, ev.retrieval_queries, ev.retrieval_corpus)
                         if ev.retrieval else None)
            self._eval_set = EvalSet(
                sts=sts,
                heldout=heldout,
                latency_sentences=sample(latency_pool, ev.latency_sentences, seed=1),
                batch_size=ev.batch_size,
                retrieval=retrieval,
            )
        return self._eval_set

    def teacher_evaluation(self) -> tuple[dict[str, float], TeacherReference]:
        """Teacher quality metrics and reference embeddings, cached across runs under a content key."""
        data = self.eval_set()
        key = content_key("teacher-eval", self.recipe.teacher, str(self.teacher_path), self.eval_key(),
                          fingerprint(data.heldout), pick_device())
        folder = cache_dir() / "teacher-eval" / key
        if (folder / "metrics.json").is_file():
            problems = check_folder(folder, self.full_check) or []
            if not problems:
                try:
                    metrics = json.loads((folder / "metrics.json").read_text())
                    arrays = {name: np.load(folder / f"{name}.npy") if (folder / f"{name}.npy").is_file() else None
                              for name in ("heldout", "corpus")}
                    log.info("teacher evaluation: cached (%s)", folder)
                    return metrics, TeacherReference(**arrays)
                except (OSError, ValueError) as e:
                    problems = [str(e)]
            log.warning("teacher evaluation: the cached copy in %s is damaged (%s); evaluating again", folder,
                        "; ".join(problems))
        log.info("evaluating the teacher's quality once (cached afterwards)")
        encoder = load_encoder("teacher", self.teacher_path, device=pick_device())
        reference = TeacherReference(
            heldout=encoder.encode(data.heldout, batch_size=data.batch_size) if data.heldout else None,
            corpus=encoder.encode(data.retrieval.corpus, batch_size=data.batch_size) if data.retrieval else None,
        )
        metrics = Evaluator(data, reference).quality(encoder)
        metrics["dimension"] = float(encoder.dimension)
        metrics["params"] = float(sum(p.numel() for p in encoder.model.parameters()))
        metrics["size_mb"] = artifact_size_mb(self.teacher_path)
        tmp = folder.with_name(folder.name + f".{os.getpid()}.tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        for name in ("heldout", "corpus"):
            if getattr(reference, name) is not None:
                np.save(tmp / f"{name}.npy", getattr(reference, name))
        write_json_atomic(tmp / "metrics.json", metrics)
        write_manifest(tmp, skip=frozenset())
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
        return metrics, reference

    def evaluator(self) -> Evaluator:
        if self._evaluator is None:
            _, reference = self.teacher_evaluation()
            self._evaluator = Evaluator(self.eval_set(), reference)
        return self._evaluator

    def evaluate_artifact(self, artifact: Artifact) -> dict[str, float]:
        encoder = load_encoder(artifact.kind, artifact.path, device=pick_device())
        metrics = self.evaluator().evaluate(encoder)
        metrics["size_mb"] = artifact_size_mb(artifact.path)
        metrics["params"] = float(count_parameters(encoder))
        return metrics

    # -- the loop -------------------------------------------------------------------------------
    def stage_dir(self, index: int, stage_type: str, key: str) -> Path:
        return self.run_dir / f"{index:02d}-{stage_type}-{key}"

    def run(self) -> list[StageRecord]:
        """Run every unfinished stage, then write the report. Returns one record per stage.

        A full disk, a read-only folder or a missing permission raises StorageError; finished stages stay.
        """
        try:
            return self._run()
        except OSError as e:
            if e.errno not in STORAGE_ERRNOS:
                raise
            raise storage_error(e, f"run {self.recipe.name}") from e

    def _run(self) -> list[StageRecord]:
        from edgedistill.report import write_report

        self.run_dir.mkdir(parents=True, exist_ok=True)
        start_kill_watch(self.run_dir)
        self._set_threads()
        self.teacher_path = resolve(self.recipe.teacher)
        allow_remote_code(self.recipe.trust.remote_code)
        check_model_folder(self.teacher_path, "teacher", self.recipe.trust.pickle_weights,
                           self.recipe.trust.remote_code)
        teacher_metrics, _ = self.teacher_evaluation()
        current = Artifact("teacher", self.teacher_path, self.root_key())
        current_eval = teacher_metrics
        records: list[StageRecord] = []
        for index, cfg in enumerate(self.recipe.stages):
            record = self._run_stage(index, cfg, current, current_eval)
            records.append(record)
            current, current_eval = record.artifact, record.evaluation
        teacher_metrics = self._teacher_record(teacher_metrics, measure=not all(r.reused for r in records))
        self._link_final(records)
        write_report(self.run_dir, self.recipe.name, teacher_metrics, records)
        from edgedistill.bundle import write_bundle

        data = self.eval_set()
        write_bundle(self.run_dir, records, teacher_metrics, data.heldout or data.latency_sentences)
        return records

    def _teacher_record(self, quality: dict[str, float], measure: bool) -> dict[str, float]:
        """Teacher metrics for the report. Its latency is measured in the run that ran stages, on the same
        sentences and host as the artifacts, so speed-ups are side-by-side ratios (never a cached number)."""
        path = self.run_dir / TEACHER_RECORD
        previous = json.loads(path.read_text())["evaluation"] if path.is_file() else {}
        metrics = {**quality, "params": quality.get("params"), "size_mb": quality.get("size_mb")}
        if measure or "latency_ms_p50" not in previous:
            from edgedistill.evaluate import batch1_latency_ms

            encoder = load_encoder("teacher", self.teacher_path, device=pick_device())
            metrics.update(batch1_latency_ms(encoder, self.eval_set().latency_sentences))
        else:
            metrics.update({k: previous[k] for k in ("latency_ms_p50", "latency_ms_p90")})
        write_json_atomic(path, {"teacher": self.recipe.teacher, "path": str(self.teacher_path),
                                 "evaluation": metrics})
        return metrics

    def _set_threads(self) -> None:
        import torch

        threads = self.recipe.threads or os.cpu_count() or 1
        torch.set_num_threads(threads)

    def _run_stage(self, index: int, cfg: Any, input_: Artifact, input_eval: dict[str, float]) -> StageRecord:
        config = cfg.model_dump()
        key = content_key(config, input_.key)
        final = self.stage_dir(index, cfg.type, key)
        record = self._finished(index, cfg.type, final, input_)
        if record is not None:
            log.info("stage %d %s: finished earlier, reusing %s", index, cfg.type, final.name)
            if record.metrics.get("eval_key") != self.eval_key() and not record.metrics.get("passthrough"):
                record.evaluation = self.evaluate_artifact(record.artifact)
                record.metrics.update(evaluation=record.evaluation, eval_key=self.eval_key())
                write_json_atomic(final / "metrics.json", record.metrics)
            record.reused = True
            return record

        if cfg.type == "distill" and cfg.student.init != "teacher":
            check_model_folder(resolve(cfg.student.init), "stages.distill.student.init",
                               self.recipe.trust.pickle_weights, self.recipe.trust.remote_code)
        work = self.run_dir / f".tmp-{final.name}"
        if work.exists():
            log.info("stage %d %s: discarding an unfinished attempt", index, cfg.type)
            shutil.rmtree(work)
        work.mkdir(parents=True)
        try:
            return self._execute(index, cfg, config, key, final, work, input_, input_eval)
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
                 input_: Artifact, input_eval: dict[str, float]) -> StageRecord:
        ctx = StageContext(
            recipe=self.recipe, index=index, teacher=self.teacher_path, input=input_, work_dir=work,
            device=pick_device(getattr(cfg, "device", "auto")), input_evaluation=input_eval,
            _evaluator=self.evaluator,
        )
        log.info("stage %d %s: running (key %s)", index, cfg.type, key)
        t0 = time.perf_counter()
        result = stages.get(cfg.type)(cfg, ctx)
        stage_s = time.perf_counter() - t0
        if result.passthrough:
            artifact = input_
            evaluation = dict(input_eval)
        else:
            artifact = Artifact(stages.output_kind(cfg.type), final / "artifact", key)
            t1 = time.perf_counter()
            evaluation = self.evaluate_artifact(Artifact(artifact.kind, ctx.artifact_dir, key))
            eval_s = time.perf_counter() - t1
        timings = {"stage_s": round(stage_s, 2)}
        if not result.passthrough:
            timings["eval_s"] = round(eval_s, 2)
        metrics = {"stage": cfg.type, **result.metrics, "evaluation": evaluation, "eval_key": self.eval_key(),
                   "passthrough": result.passthrough}
        write_json_atomic(work / "config.json", {"type": cfg.type, "config": config, "key": key,
                                                 "input_key": input_.key, "input_kind": input_.kind,
                                                 "input_path": str(input_.path)})
        write_json_atomic(work / "timings.json", timings)
        write_json_atomic(work / "metrics.json", metrics)
        if cfg.type == "distill":
            from edgedistill.bundle import write_model_card

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


def read_record(folder: Path, input_: Artifact | None = None) -> StageRecord:
    """Load a finished stage folder."""
    config = json.loads((folder / "config.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    timings = json.loads((folder / "timings.json").read_text())
    index = int(folder.name.split("-", 1)[0])
    if metrics.get("passthrough"):
        if input_ is None:
            input_ = Artifact(config["input_kind"], Path(config["input_path"]), config["input_key"])
        artifact = input_
    else:
        artifact = Artifact(stages.output_kind(config["type"]), folder / "artifact", config["key"])
    return StageRecord(index, config["type"], config["key"], folder, artifact, config["config"], metrics,
                       metrics.get("evaluation", {}), timings)


def count_parameters(encoder: Any) -> int:
    """Weights of a torch model, or elements of an ONNX graph's float/int8 initialisers."""
    if hasattr(encoder, "model"):
        return sum(p.numel() for p in encoder.model.parameters())
    import onnx

    graph = onnx.load(str(encoder.model_path), load_external_data=False).graph
    return sum(int(np.prod(t.dims)) for t in graph.initializer if len(t.dims) >= 1)


def artifact_size_mb(path: Path) -> float:
    """Bytes of model weights in an artifact folder (weights and graphs, not tokenizer or docs)."""
    exts = {".onnx", ".data", ".safetensors", ".bin", ".pt"}
    spare = {"model.plain.onnx"}  # the export's plain graph kept beside the fused one (edgedistill.portable)
    files = [p for p in Path(path).rglob("*") if p.is_file() and p.suffix in exts and p.name not in spare]
    return round(sum(p.stat().st_size for p in files) / 1e6, 3)
