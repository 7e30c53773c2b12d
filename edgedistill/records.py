"""Reading finished stage folders back as records (for resume, ``edgedistill report`` and benchmarks)."""

from __future__ import annotations

import json
from pathlib import Path

from edgedistill import stages
from edgedistill.contract import Artifact, StageRecord

TEACHER_RECORD = "teacher.json"


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
