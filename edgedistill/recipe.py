"""Typed recipes: YAML validated into pydantic models, with clear errors and ``--set`` overrides."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, Field, ValidationError, create_model, field_validator, model_validator

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
                      "reranker (cross-encoders) or classifier (planned).")
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
                    f"order stages as [finetune ->] distill -> export -> quantize -> profile"
                )
            current = makes
        return self


def stage_configs(task: str) -> dict[str, type[BaseModel]]:
    """Stage type -> config class in a task's recipes: the registry's defaults with the task's own
    ``stage_configs`` on top (a stage type without a default, e.g. ``finetune``, exists only where a task names
    a config for it)."""
    from edgedistill.tasks import TASKS, get_task

    merged = {stage: spec.config for stage, spec in REGISTRY.items()}
    if task in TASKS:
        merged.update(getattr(get_task(task), "stage_configs", {}))
    return {stage: config for stage, config in merged.items() if config is not None}


_RECIPE_MODELS: dict[str, type[Recipe]] = {}


def recipe_model(task: str) -> type[Recipe]:
    """The recipe schema of a task: ``Recipe`` with the task's own ``data`` and ``evaluation`` sections and stage
    configs (``Task.data_config``, ``Task.evaluation_config``, ``Task.stage_configs``). Unknown or planned task
    names get ``Recipe`` itself, whose ``task`` check then says what is available."""
    from edgedistill.tasks import TASKS, get_task

    if task not in TASKS:
        return Recipe
    if task not in _RECIPE_MODELS:
        spec = get_task(task)
        data = getattr(spec, "data_config", DataConfig)
        evaluation = getattr(spec, "evaluation_config", EvaluationConfig)
        configs = tuple(stage_configs(task).values())
        if data is DataConfig and evaluation is EvaluationConfig and set(configs) == set(_DEFAULT_CONFIGS):
            _RECIPE_MODELS[task] = Recipe
        else:
            union = Annotated[Union[configs], Field(discriminator="type")] if len(configs) > 1 else configs[0]  # noqa: UP007
            try:
                evaluation_default: Any = evaluation()
            except ValidationError:
                evaluation_default = ...
            _RECIPE_MODELS[task] = create_model(
                f"{task.title()}Recipe", __base__=Recipe, __doc__=f"A {task} recipe.",
                data=(data, ...), evaluation=(evaluation, evaluation_default),
                stages=(list[union], Field(min_length=1)))
    return _RECIPE_MODELS[task]


def _format_validation_error(err: ValidationError, source: str, model: type[Recipe] = Recipe,
                             task: str = "embedding") -> str:
    lines = [f"{source}: invalid recipe ({err.error_count()} problem{'s' if err.error_count() > 1 else ''})"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not (isinstance(p, str) and p in _STAGE_TYPES))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            field = str(e["loc"][-1])
            allowed = _allowed_fields(e["loc"][:-1], model, task)
            close = difflib.get_close_matches(field, allowed, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            msg = f"unknown key '{field}'{hint} Allowed here: {', '.join(sorted(allowed))}"
        elif e["type"] == "missing":
            msg = "required field is missing"
        elif e["type"] == "union_tag_invalid":
            msg = (f"unknown stage type {e.get('input', {}).get('type')!r} for task {task}; expected one of "
                   f"{sorted(stage_configs(task))}")
        elif e["type"] != "value_error" and not isinstance(e.get("input"), (dict, list)):
            msg = f"{msg} (got {e.get('input')!r})"
        lines.append(f"  - {loc}: {msg}" if loc else f"  - {msg}")
    lines.append("Fix the recipe (or the --set override) and run `edgedistill validate RECIPE` to check it.")
    return "\n".join(lines)


_STAGE_TYPES = set(REGISTRY)
_DEFAULT_CONFIGS = tuple(spec.config for spec in REGISTRY.values() if spec.config is not None)


def _allowed_fields(loc: tuple, recipe: type[Recipe] = Recipe, task: str = "embedding") -> list[str]:
    """Field names allowed at a location, for 'did you mean' hints."""
    stage_models = stage_configs(task)
    model: type[BaseModel] | None = recipe
    for part in loc:
        if isinstance(part, int):
            continue
        if part in stage_models:
            model = stage_models[part]
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
    task = data.get("task", "embedding")
    model = recipe_model(task) if isinstance(task, str) else Recipe
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise RecipeError(_format_validation_error(e, str(path), model, task if isinstance(task, str) else "?")) \
            from None


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
