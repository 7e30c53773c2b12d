"""A valid recipe never ends in a traceback: hypothesis generates recipes over the tiny models that the schema
accepts (evaluation sets on or off, chains of 1-4 stages, projection, losses, export and quantize choices), and
each either is refused at validation with exit code 2 naming the field, or runs end to end with exit code 0.

Two explicit examples (the whole chain measured on retrieval alone; every evaluation set off) and a handful
of generated ones (each a whole tiny run, ~10-20 s on an idle core), derandomized so CI is repeatable;
EDGEDISTILL_VALID_RECIPE_EXAMPLES=50 runs more by hand.
"""

from __future__ import annotations

import os
from pathlib import Path

from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st

from edgedistill.cli import main
from edgedistill.errors import RecipeError
from edgedistill.recipe import load_recipe
from tests.conftest import tiny_recipe, write_recipe

EXAMPLES = int(os.environ.get("EDGEDISTILL_VALID_RECIPE_EXAMPLES", "4"))


def _small(recipe: dict, stages: int = 4, off: tuple[str, ...] = ()) -> dict:
    """Fast settings for the later stages; the first ``stages`` stages; evaluation sets ``off`` set to null."""
    for name in off:
        recipe["evaluation"][name] = None
    _, export, quantize, profile = recipe["stages"]
    export.update(check_sentences=8, optimize="never")
    quantize.update(calibration_sentences=16, search={"sensitivity": "off", "proxy_sentences": 16,
                                                      "latency_sentences": 4, "latency_repeats": 1})
    profile.update(sentences=4, warmup=1, repeats=2, min_repeats=1, max_seconds=1, threads=[1], batch_sizes=[1],
                   seq_lengths=[8], cell_repeats=1, cell_seconds=0.2)
    recipe["stages"] = recipe["stages"][:stages]
    return recipe


@st.composite
def recipes(draw: st.DrawFn, world: dict) -> dict:
    recipe = tiny_recipe(world)
    ev = recipe["evaluation"]
    for name in ("sts", "heldout", "retrieval"):
        if draw(st.booleans()):
            ev[name] = None
    ev["latency_sentences"] = draw(st.integers(1, 6))
    distill, export, quantize, profile = recipe["stages"]
    distill["student"]["projection"] = draw(st.sampled_from(["procrustes", "ridge", "random", "pca"]))
    distill["student"]["trim_vocab"] = draw(st.booleans())
    distill["losses"] = [{"type": t} for t in draw(st.sets(st.sampled_from(["mse", "cosine", "kl", "cross_kl"]), min_size=1))]
    distill.update(train_sentences=draw(st.integers(20, 80)), eval_steps=draw(st.sampled_from([0, 1])),
                   select_best=draw(st.booleans()), validation_sentences=draw(st.sampled_from([0, 10])))
    export.update(optimize=draw(st.sampled_from(["never", "always"])), check_sentences=8)
    quantize.update(method=draw(st.sampled_from(["dynamic", "static"])), calibration_sentences=16,
                    search={"sensitivity": draw(st.sampled_from(["off", "role"])), "proxy_sentences": 16,
                            "latency_sentences": 4, "latency_repeats": 1, "max_evaluations": 2})
    profile.update(sentences=4, warmup=1, repeats=2, min_repeats=1, max_seconds=1, threads=[1], batch_sizes=[1],
                   seq_lengths=[8], cell_repeats=1, cell_seconds=0.2,
                   compare=draw(st.sets(st.sampled_from(["teacher", "student", "onnx"])).map(sorted)))
    recipe["stages"] = [distill, export, quantize, profile][: draw(st.integers(1, 4))]
    return recipe


def test_valid_recipes_run_end_to_end(tiny_world: dict, tmp_path_factory) -> None:
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(recipe=recipes(tiny_world))
    @example(recipe=_small(tiny_recipe(tiny_world), off=("sts", "heldout")))  # whole chain, retrieval only
    @example(recipe=_small(tiny_recipe(tiny_world), stages=2, off=("sts", "heldout", "retrieval")))  # refused
    def check(recipe: dict) -> None:
        ev = recipe["evaluation"]
        event(f"{len(recipe['stages'])} stage(s); evaluation: "
              f"{'+'.join(k for k in ('sts', 'heldout', 'retrieval') if ev[k]) or 'none'}")
        root = tmp_path_factory.mktemp("valid")
        path = write_recipe(root / "r.yaml", recipe)
        try:
            load_recipe(path)
            valid = True
        except RecipeError:
            valid = False
        result = CliRunner().invoke(main, ["run", str(path), "--runs-dir", str(root / "runs"), "--quiet"])
        assert "Traceback" not in result.output and not (result.exception and result.exit_code not in (0, 2)), (
            recipe, result.output, result.exception)
        if not valid:
            assert result.exit_code == 2 and "evaluation" in result.output, result.output
            return
        assert result.exit_code == 0, (recipe, result.output)
        run_dir = root / "runs" / "tiny"
        assert len(list(run_dir.glob("0*"))) == len(recipe["stages"])
        assert (run_dir / "report.md").is_file()

    check()


def test_all_evaluation_sets_off_is_refused_naming_the_field(tmp_path: Path, tiny_world: dict) -> None:
    recipe = tiny_recipe(tiny_world)
    recipe["evaluation"].update(sts=None, heldout=None, retrieval=None)
    result = CliRunner().invoke(main, ["validate", str(write_recipe(tmp_path / "r.yaml", recipe))])
    assert result.exit_code == 2
    assert "evaluation: sts, heldout and retrieval are all null" in result.output
    assert "Traceback" not in result.output
