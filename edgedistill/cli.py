"""The ``edgedistill`` command line: parse, then delegate to one library function."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from edgedistill.errors import EdgedistillError

log = logging.getLogger("edgedistill")

OVERRIDE_HELP = "Override a recipe field, e.g. --set stages.0.epochs=1 (repeatable; value parsed as YAML)."


def _fail(err: EdgedistillError) -> None:
    click.echo(f"error: {err}", err=True)
    sys.exit(err.exit_code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.version_option(package_name="edgedistill")
def main(verbose: bool) -> None:
    """Distil a sentence-embedding model into a small INT8 ONNX model and measure what survived."""
    # Our logs at INFO; third-party libraries (onnxruntime's quantizer logs to the root logger) at WARNING.
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    log.setLevel(logging.DEBUG if verbose else logging.INFO)


@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=OVERRIDE_HELP)
@click.option("--runs-dir", type=click.Path(path_type=Path), default=Path("runs"), show_default=True,
              help="Where run folders go (runs/<recipe name>/).")
def run(recipe: Path, overrides: tuple[str, ...], runs_dir: Path) -> None:
    """Run RECIPE's stages; finished stages are reused, an interrupted run resumes."""
    from edgedistill.recipe import load_recipe

    try:
        parsed = load_recipe(recipe, overrides)
        from edgedistill.runner import Runner

        Runner(parsed, runs_dir).run()
    except EdgedistillError as e:
        _fail(e)
    click.echo((runs_dir / parsed.name / "report.md").read_text())


@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=OVERRIDE_HELP)
def validate(recipe: Path, overrides: tuple[str, ...]) -> None:
    """Check RECIPE (and overrides) without running anything."""
    from edgedistill.recipe import load_recipe

    try:
        parsed = load_recipe(recipe, overrides)
    except EdgedistillError as e:
        _fail(e)
    chain = " -> ".join(s.type for s in parsed.stages)
    click.echo(f"{recipe}: valid ({parsed.name}: {chain})")


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
def report(run_dir: Path) -> None:
    """Regenerate report.md and report.json of RUN_DIR (runs/<recipe name>)."""
    from edgedistill.report import regenerate

    try:
        path = regenerate(run_dir)
    except EdgedistillError as e:
        _fail(e)
    click.echo(path.read_text())


@main.command()
def recipes() -> None:
    """List the shipped recipes with what each does."""
    from edgedistill.recipe import shipped_recipes_dir

    folder = shipped_recipes_dir()
    for path in sorted(folder.glob("*.yaml")):
        first = next((ln.lstrip("# ").strip() for ln in path.read_text().splitlines() if ln.startswith("#")), "")
        click.echo(f"{path.relative_to(folder.parent)}\t{first}")


@main.command()
def assets() -> None:
    """List the built-in catalog of offline models and data sets."""
    from edgedistill.assets import catalog_summary

    for name, description in catalog_summary():
        click.echo(f"{name}\t{description}")


if __name__ == "__main__":
    main()
