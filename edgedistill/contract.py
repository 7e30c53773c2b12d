"""The stage contract: what the runner hands a stage and what a stage hands back.

A leaf module: it imports nothing of the orchestration (runner, report, bundle, stages), so stages, tasks and the
runner can all depend on it without depending on each other.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Artifact kinds flowing between stages; what a torch model *is* (embedding model, reranker, classifier) is the
# recipe's task, not the kind.
TEACHER = "teacher"
TORCH = "sentence-transformer"  # a torch model folder the task can load (the name is kept: stage keys hash it)
ONNX = "onnx"


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


@dataclass(frozen=True)
class StageInputs:
    """What a stage may read besides its own config and input artifact. The runner fills in only the fields
    a stage's registry row declares, and those fields (with content fingerprints of the files they name) are
    part of the stage's key, so changing one reruns the stage."""

    train: str | list[str] | None = None  # data.train: unlabelled in-domain text
    seed: int = 0  # data.seed
    selection: str | None = None  # the STS set whose dev split selects checkpoints (evaluation.sts)
    threads: int = 0  # CPU threads where they change results (quantization trials' timing)
    data: Any = None  # the recipe's whole (task-specific) data section, e.g. labelled pairs for finetune
    evaluation: Any = None  # the recipe's (task-specific) evaluation section


@dataclass
class StageContext:
    """Everything a stage may use besides its own config: the input artifact, declared inputs, the task."""

    index: int
    teacher: Path
    input: Artifact
    work_dir: Path
    device: str = "cpu"
    input_evaluation: dict[str, float] = field(default_factory=dict)
    _evaluator: Callable[[], Any] | None = None
    inputs: StageInputs = field(default_factory=StageInputs)
    task: Any = None  # edgedistill.tasks.Task; stages take the embedding task when None (unit tests)

    @property
    def artifact_dir(self) -> Path:
        """Where the stage writes its output artifact."""
        return self.work_dir / "artifact"

    @property
    def evaluator(self) -> Any:
        """The task's evaluator over the recipe's evaluation sets (built lazily: the teacher is scored once)."""
        if self._evaluator is None:
            raise RuntimeError("this stage context has no evaluator")
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


def artifact_size_mb(path: Path) -> float:
    """Bytes of model weights in an artifact folder (weights and graphs, not tokenizer or docs)."""
    exts = {".onnx", ".data", ".safetensors", ".bin", ".pt"}
    spare = {"model.plain.onnx"}  # the export's plain graph kept beside the fused one (edgedistill.portable)
    files = [p for p in Path(path).rglob("*") if p.is_file() and p.suffix in exts and p.name not in spare]
    return round(sum(p.stat().st_size for p in files) / 1e6, 3)
