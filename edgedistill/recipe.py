"""Typed recipes: YAML validated into pydantic models, with clear errors and ``--set`` overrides."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from edgedistill.errors import RecipeError
from edgedistill.stages import REGISTRY, StageConfig
from edgedistill.stages.configs import (  # noqa: F401  (re-exported: recipes and tests are written against these)
    SOURCE,
    DistillStage,
    ExportStage,
    LossSpec,
    ProfileStage,
    ProfileTarget,
    QuantizeSearch,
    QuantizeStage,
    Strict,
    StudentConfig,
)


class DataConfig(Strict):
    train: str | Annotated[list[str], Field(min_length=1)] = Field(
        description="Unlabelled sentences: a .txt file (one per line), a folder with sentences.txt, or a catalog "
        "name such as snli-sentences; or a list of them, drawn from in equal shares.")
    seed: int = 0


class EvaluationConfig(Strict):
    sts: str | None = Field(default="stsb", description="STS-benchmark folder or catalog name; null to skip.",
                            json_schema_extra=SOURCE)
    sts_split: Literal["train", "dev", "test"] = "test"
    heldout: str | None = Field(
        default="snli-heldout", description="Sentences never trained on, for agreement with the teacher.",
        json_schema_extra=SOURCE)
    heldout_sentences: int = Field(default=1000, gt=0)
    retrieval: str | None = Field(
        default="snli-retrieval", description="Retrieval set (queries/corpus/qrels .jsonl) for nDCG@10; null to skip.",
        json_schema_extra=SOURCE)
    retrieval_queries: int = Field(default=500, gt=0)
    retrieval_corpus: int = Field(default=2000, gt=0)
    latency_sentences: int = Field(default=100, gt=0, description="Batch-1 latency sample per artifact.")
    batch_size: int = Field(default=64, gt=0)

    @model_validator(mode="after")
    def _something_to_measure(self) -> EvaluationConfig:
        if not (self.sts or self.heldout or self.retrieval):
            raise ValueError("sts, heldout and retrieval are all null, so no artifact could be measured (quality "
                             "or batch-1 latency); set at least one, e.g. evaluation.heldout: snli-heldout")
        return self


class TrustConfig(Strict):
    """What a recipe allows model files to do. Both are off by default."""

    pickle_weights: bool = Field(
        default=False, description="Allow model folders whose weights are only in a pickle format (.bin, .pt): "
        "loading pickles can run code, so only for sources you trust. Safetensors are always preferred.")
    remote_code: bool = Field(
        default=False, description="Run code shipped with a model (transformers' trust_remote_code) for models "
        "whose config asks for it (auto_map); only after reading that code.")


class Recipe(Strict):
    """A whole run: teacher, data, evaluation and an ordered list of stages."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str = ""
    teacher: str
    data: DataConfig
    evaluation: EvaluationConfig = EvaluationConfig()
    task: str = Field(default="embedding", description="What kind of model the chain distils: embedding (built), "
                      "reranker or classifier (planned).")
    stages: list[StageConfig] = Field(min_length=1)
    threads: int = Field(default=0, ge=0, description="torch CPU threads; 0 = all cores.")
    trust: TrustConfig = TrustConfig()

    @field_validator("task")
    @classmethod
    def _task_available(cls, v: str) -> str:
        from edgedistill.tasks import check_available

        try:
            check_available(v)
        except RecipeError as e:
            raise ValueError(str(e).removeprefix("task: ")) from None
        return v

    @model_validator(mode="after")
    def _stage_order(self) -> Recipe:
        current = "teacher"
        for i, stage in enumerate(self.stages):
            needs, makes = REGISTRY[stage.type].input_kind, REGISTRY[stage.type].output_kind
            if needs != current:
                raise ValueError(
                    f"stages: stages.{i} ({stage.type}) needs a {needs} input but the previous stage gives a {current}; "
                    f"order stages as distill -> export -> quantize -> profile"
                )
            current = makes
        return self


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid recipe ({err.error_count()} problem{'s' if err.error_count() > 1 else ''})"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not (isinstance(p, str) and p in _STAGE_TYPES))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            field = str(e["loc"][-1])
            allowed = _allowed_fields(e["loc"][:-1])
            close = difflib.get_close_matches(field, allowed, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            msg = f"unknown key '{field}'{hint} Allowed here: {', '.join(sorted(allowed))}"
        elif e["type"] == "missing":
            msg = "required field is missing"
        elif e["type"] == "union_tag_invalid":
            msg = f"unknown stage type {e.get('input', {}).get('type')!r}; expected one of {sorted(REGISTRY)}"
        elif e["type"] != "value_error" and not isinstance(e.get("input"), (dict, list)):
            msg = f"{msg} (got {e.get('input')!r})"
        lines.append(f"  - {loc}: {msg}" if loc else f"  - {msg}")
    lines.append("Fix the recipe (or the --set override) and run `edgedistill validate RECIPE` to check it.")
    return "\n".join(lines)


_STAGE_TYPES = set(REGISTRY)
_STAGE_MODELS = {name: spec.config for name, spec in REGISTRY.items()}


def _allowed_fields(loc: tuple) -> list[str]:
    """Field names allowed at a location, for 'did you mean' hints."""
    model: type[BaseModel] | None = Recipe
    for part in loc:
        if isinstance(part, int):
            continue
        if part in _STAGE_MODELS:
            model = _STAGE_MODELS[part]
            continue
        if model is None:
            return []
        field = model.model_fields.get(part)
        if field is None:
            return []
        ann = field.annotation
        if getattr(ann, "__origin__", None) is list:  # list[Model], e.g. profile targets
            ann = ann.__args__[0]
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if part == "stages":
            model = None
    return list(model.model_fields) if model else []


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply ``a.b.0.c=value`` (value parsed as YAML) to a nested dict/list in place."""
    if "=" not in assignment:
        raise RecipeError(f"--set {assignment!r}: expected KEY=VALUE, e.g. --set stages.0.epochs=1")
    key, raw = assignment.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError as e:
        raise RecipeError(f"--set {key}: the value {raw!r} is not valid YAML ({_one_line(e)}); quote strings, "
                          "e.g. --set 'stages.0.student.init=\"my model\"'") from None
    parts = key.strip().split(".")
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise RecipeError(f"--set {key}: '{where}' is not an index of a list of {len(node)} items")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise RecipeError(f"--set {key}: '{'.'.join(parts[:i])}' is a value, not a section")


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, override and validate a recipe; raise RecipeError with a readable message on any problem."""
    path = find_recipe(path)
    if not path.is_file():
        raise RecipeError(f"{path}: no such recipe file. List the shipped ones with `edgedistill recipes`.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise RecipeError(f"{path}: not a UTF-8 text file (byte {e.start}); save the recipe as UTF-8") from None
    except OSError as e:
        raise RecipeError(f"{path}: cannot be read: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: expected a mapping with name, teacher, data and stages at the top level")
    for assignment in overrides:
        apply_override(data, assignment)
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        raise RecipeError(_format_validation_error(e, str(path))) from None


def shipped_recipes_dir() -> Path:
    """The shipped recipes, inside the package (``recipes/`` of a checkout links here)."""
    return Path(__file__).resolve().parent / "recipes"


def find_recipe(spec: str | Path) -> Path:
    """A recipe file: the path itself, or the name of a shipped recipe (``mpnet-to-tiny``)."""
    path = Path(spec)
    if not path.is_file():
        shipped = shipped_recipes_dir() / f"{path.name.removesuffix('.yaml')}.yaml"
        if path.parent == Path(".") and shipped.is_file():
            return shipped
    return path
