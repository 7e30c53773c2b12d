"""The model card (README.md) written beside a distilled torch student."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from edgedistill.recipe import Recipe


def _num(value: Any, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "–"


def write_model_card(folder: Path, recipe: Recipe, stage_config: dict[str, Any], metrics: dict[str, Any]) -> Path:
    """README.md of a sentence-transformers student folder: teacher, data, recipe and metrics."""
    evaluation = metrics.get("evaluation", {})
    before = metrics.get("before_training", {})
    student = stage_config.get("student", {})
    rows = [(k, evaluation.get(k), before.get(k)) for k in sorted(set(evaluation) | set(before))
            if isinstance(evaluation.get(k, before.get(k)), (int, float))]
    lines = [
        f"# {recipe.name}: distilled sentence-embedding student", "",
        "A sentence-transformers model distilled by edgedistill. Load it with:", "",
        "```python", "from sentence_transformers import SentenceTransformer",
        f"model = SentenceTransformer('{folder.name if folder.name != 'artifact' else 'path/to/this/folder'}')",
        "```", "",
        "## Teacher and data", "",
        f"- teacher: `{recipe.teacher}`",
        (f"- student initialised from `{student.get('init')}`, layers {student.get('layers')}, "
        f"projection {student.get('projection')}"),
        f"- training data: `{recipe.data.train}` ({metrics.get('train_sentences', '?')} sentences, seed {recipe.data.seed})",
        (f"- evaluation: STS-b `{recipe.evaluation.sts}` ({recipe.evaluation.sts_split}), held-out "
        f"`{recipe.evaluation.heldout}`, retrieval `{recipe.evaluation.retrieval}`"), "",
        "## Metrics", "",
        "| metric | after training | before training |", "|---|---|---|",
        *[f"| {k} | {_num(a, 4)} | {_num(b, 4)} |" for k, a, b in rows], "",
        "## Recipe (distill stage)", "",
        "```yaml", yaml.safe_dump(stage_config, sort_keys=False).rstrip(), "```", "",
    ]
    path = Path(folder) / "README.md"
    path.write_text("\n".join(lines))
    return path
