"""Property-based tests of the recipe loader through `edgedistill validate`: any malformed YAML, wrong type,
missing or unknown field, out-of-range value or bad --set gives exit code 2 and a message naming the field,
never a traceback."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgedistill.cli import main

EXAMPLES = 300  # per property; four properties -> 1,200 recipes per run of this file
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

BASE: dict[str, Any] = {
    "name": "fuzz",
    "teacher": "teacher-model",
    "data": {"train": "train.txt", "seed": 0},
    "evaluation": {"sts": "stsb", "heldout_sentences": 40, "latency_sentences": 5, "batch_size": 16},
    "stages": [
        {"type": "distill", "student": {"init": "student", "layers": [0, 2], "projection_sentences": 100},
         "train_sentences": 200, "epochs": 1, "batch_size": 32, "learning_rate": 1e-4, "warmup_ratio": 0.1,
         "losses": [{"type": "mse", "weight": 1.0}]},
        {"type": "export", "exporter": "torchscript", "opset": 18, "max_abs_diff": 1e-4},
        {"type": "quantize", "max_drop": 0.5, "on_fail": "warn", "search": {"sensitivity": "off"}},
        {"type": "profile", "sentences": 10, "warmup": 2, "threads": [1],
         "targets": [{"name": "pi", "ssh": "me@pi", "port": 22}]},
    ],
    "threads": 1,
}

# Out-of-range values for numeric fields: each must be refused.
OUT_OF_RANGE = {
    ("threads",): [-1],
    ("data", "seed"): ["x"],
    ("evaluation", "heldout_sentences"): [0, -5],
    ("evaluation", "batch_size"): [0],
    ("stages", 0, "train_sentences"): [0, -1],
    ("stages", 0, "epochs"): [0, -0.5, float("inf"), float("nan")],
    ("stages", 0, "learning_rate"): [0, float("inf"), float("-inf")],
    ("stages", 0, "warmup_ratio"): [1, 1.5, -0.1],
    ("stages", 0, "batch_size"): [0],
    ("stages", 0, "student", "layers"): [[], [2, 0], [-1, 2], [1, 1]],
    ("stages", 0, "student", "projection_sentences"): [0],
    ("stages", 0, "losses", 0, "weight"): [0, -1, float("nan")],
    ("stages", 1, "opset"): [13, 22],
    ("stages", 1, "max_abs_diff"): [0, -1e-3],
    ("stages", 2, "max_drop"): [1, 2, -0.1, float("inf")],
    ("stages", 3, "threads"): [[-1]],
    ("stages", 3, "targets", 0, "port"): [0, 65536],
}


def _leaves(node: Any, path: tuple = ()) -> list[tuple]:
    """Every path in the base recipe: sections, list items and scalars."""
    out = [path] if path else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _leaves(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _leaves(v, (*path, i))
    return out


PATHS = _leaves(BASE)
REQUIRED = {("name",), ("teacher",), ("data",), ("stages",), ("data", "train"), ("stages", 0, "student"),
            ("stages", 0, "student", "init"), ("stages", 0, "type"), ("stages", 1, "type"), ("stages", 2, "type"),
            ("stages", 3, "type"), ("stages", 0, "losses", 0, "type"), ("stages", 3, "targets", 0, "name")}

junk = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10**12, max_value=10**12), st.floats(allow_nan=True),
    st.text(max_size=20), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(),
                                                                              max_size=2),
)

_tmp = Path(tempfile.mkdtemp(prefix="edgedistill-fuzz-"))


def _validate(text: str | bytes, *overrides: str) -> Any:
    path = _tmp / "recipe.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    args = ["validate", str(path)]
    for o in overrides:
        args += ["--set", o]
    return CliRunner().invoke(main, args)


def _assert_clean(result: Any) -> None:
    """Exit 0 (valid) or 2 (refused with a message); never an exception or a traceback."""
    assert result.exit_code in (0, 2), (result.exit_code, result.output, result.exc_info)
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert isinstance(result.exception, SystemExit), result.exc_info
        assert result.output.startswith("error: "), result.output


def _set(data: dict, path: tuple, value: Any) -> None:
    node: Any = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def _delete(data: dict, path: tuple) -> None:
    node: Any = data
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def _names(output: str, path: tuple) -> bool:
    """The message names the field: its dotted path, or its key name (a list item: its parent's path)."""
    if _dotted(path) in output:
        return True
    last = path[-1]
    return str(last) in output if isinstance(last, str) else _dotted(path[:-1]) in output


def test_base_recipe_is_valid() -> None:
    result = _validate(yaml.safe_dump(BASE))
    assert result.exit_code == 0, result.output


@FUZZ
@given(path=st.sampled_from(PATHS), value=junk)
def test_wrong_types_and_values_name_the_field(path: tuple, value: Any) -> None:
    data = copy.deepcopy(BASE)
    _set(data, path, value)
    result = _validate(yaml.safe_dump(data))
    _assert_clean(result)
    if result.exit_code == 2:
        assert _names(result.output, path) or "stages: stages." in result.output, (path, value, result.output)


@FUZZ
@given(data=st.data())
def test_missing_unknown_and_out_of_range_fields_are_refused(data: st.DataObject) -> None:
    recipe = copy.deepcopy(BASE)
    kind = data.draw(st.sampled_from(["missing", "unknown", "range"]))
    if kind == "missing":
        path = data.draw(st.sampled_from(sorted(REQUIRED, key=str)))
        _delete(recipe, path)
    elif kind == "unknown":
        sections = [p for p in PATHS if isinstance(_get(BASE, p), dict)] + [()]
        parent = data.draw(st.sampled_from(sections))
        key = data.draw(st.from_regex(r"x_[a-z_]{0,12}", fullmatch=True))  # never a field's name
        path = (*parent, key)
        _set(recipe, path, data.draw(junk))
    else:
        path = data.draw(st.sampled_from(sorted(OUT_OF_RANGE, key=str)))
        _set(recipe, path, data.draw(st.sampled_from(OUT_OF_RANGE[path])))
    result = _validate(yaml.safe_dump(recipe))
    _assert_clean(result)
    assert result.exit_code == 2, (kind, path, result.output)
    assert _names(result.output, path), (kind, path, result.output)


def _get(data: Any, path: tuple) -> Any:
    for part in path:
        data = data[part]
    return data


@FUZZ
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200),
                      st.lists(st.sampled_from(["name: x", "teacher: [", "stages:", "  - type: distill", "\t",
                                                "data: {train: a}", "  student: {init: s}", "- 1", ": :", "&a [*a]",
                                                "!!python/object/apply:os.system ['true']", "'", "{", "---",
                                                "%YAML 9.9", "\udcff"]), max_size=8).map("\n".join)))
def test_malformed_yaml_never_tracebacks(text: str | bytes) -> None:
    result = _validate(text)
    _assert_clean(result)
    if result.exit_code == 2:
        assert "recipe.yaml" in result.output


@FUZZ
@given(key=st.one_of(st.sampled_from([_dotted(p) for p in PATHS]), st.text(max_size=20)),
       value=st.one_of(st.text(max_size=20), st.sampled_from(["[", "{a: [", "!!python/name:os.system", "*x",
                                                               "- a\n- b", ".inf", "-1", "null", "{}"])),
       sep=st.sampled_from(["=", ""]))
def test_bad_overrides_never_traceback(key: str, value: str, sep: str) -> None:
    result = _validate(yaml.safe_dump(BASE), f"{key}{sep}{value}")
    _assert_clean(result)
    if result.exit_code == 2 and sep == "=" and key in {_dotted(p) for p in PATHS}:
        assert key.split(".")[0] in result.output, (key, value, result.output)


def test_yaml_is_safe_loaded(tmp_path: Path) -> None:
    """A Python tag in a recipe is refused as invalid YAML and never constructed (nothing runs)."""
    marker = tmp_path / "pwned"
    text = f"name: !!python/object/apply:os.system ['touch {marker}']\n"
    result = _validate(text)
    assert result.exit_code == 2 and "not valid YAML" in result.output
    assert not marker.exists()
