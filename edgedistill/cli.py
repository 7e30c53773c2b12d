"""The ``edgedistill`` command line: parse, then delegate to one library function."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from edgedistill.errors import EdgedistillError

log = logging.getLogger("edgedistill")

OVERRIDE_HELP = "Override a recipe field, e.g. --set stages.0.epochs=1 (repeatable; value parsed as YAML)."


def _fail(err: EdgedistillError, log_format: str = "text") -> None:
    if log_format == "json":
        import json

        click.echo(json.dumps({"level": "error", "message": str(err), "exit_code": err.exit_code}), err=True)
    else:
        click.echo(f"error: {err}", err=True)
    sys.exit(err.exit_code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.version_option(package_name="edgedistill")
def main(verbose: bool) -> None:
    """Distil a sentence-embedding model into a small INT8 ONNX model and measure what survived."""
    # Our logs at INFO; third-party libraries (onnxruntime's quantizer logs to the root logger) at WARNING.
    from edgedistill.progress import configure_logging

    configure_logging(verbose)


@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=OVERRIDE_HELP)
@click.option("--runs-dir", type=click.Path(path_type=Path), default=Path("runs"), show_default=True,
              help="Where run folders go (runs/<recipe name>/).")
@click.option("--full-check", is_flag=True, help="Hash every file of a finished stage before reusing it "
              "(default: only files whose size or modification time changed since the stage finished).")
@click.option("--wait", is_flag=True, help="If another run holds this run folder, wait for it to finish "
              "(default: exit with an error naming it).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors; print the bundle's path at the end.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: one JSON object per log line (stderr) and the closing summary as JSON (stdout).")
def run(recipe: Path, overrides: tuple[str, ...], runs_dir: Path, full_check: bool, wait: bool, quiet: bool,
        log_format: str) -> None:
    """Run RECIPE's stages; finished stages are reused, an interrupted run resumes."""
    import json
    import time

    from edgedistill.integrity import storage_error
    from edgedistill.progress import configure_logging, summary, summary_text
    from edgedistill.recipe import load_recipe

    configure_logging(log.getEffectiveLevel() <= logging.DEBUG, quiet, log_format)
    t0 = time.monotonic()
    try:
        parsed = load_recipe(recipe, overrides)
        from edgedistill.pipeline import run_recipe

        records = run_recipe(parsed, runs_dir, full_check=full_check, wait=wait)
    except EdgedistillError as e:
        _fail(e, log_format)
    except OSError as e:  # not one the runner knows how to advise on: still no traceback
        _fail(storage_error(e, "the run"), log_format)
    except KeyboardInterrupt:
        click.echo("interrupted: finished stages are kept; run the same command again to resume", err=True)
        sys.exit(130)
    done = summary(runs_dir / parsed.name, records, time.monotonic() - t0)
    if log_format == "json":
        click.echo(json.dumps(done))
    elif quiet:
        click.echo(done["bundle"] or done["run_dir"])
    else:
        click.echo((runs_dir / parsed.name / "report.md").read_text())
        click.echo(summary_text(done))


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
@click.argument("run_dirs", nargs=-1, required=True, metavar="RUN_DIR [RUN_B]",
                type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--merge", "merge_files", multiple=True, metavar="RESULT.json",
              type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Add a device's result.json (bench.py from a bench bundle, run by hand) to RUN_DIR first.")
@click.option("--label", default=None, help="Device name for --merge (default: the --label given to bench.py).")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder for the comparison files of two runs (default: the current folder).")
def report(run_dirs: tuple[Path, ...], merge_files: tuple[Path, ...], label: str | None, out: Path | None) -> None:
    """Regenerate report.md/.json/.html of RUN_DIR (runs/<recipe name>), or compare two runs side by side.

    \b
    edgedistill report runs/mpnet-to-tiny                       # regenerate
    edgedistill report runs/mpnet-to-tiny --merge result.json   # add a device's bench result
    edgedistill report runs/A runs/B                            # compare-A-vs-B.md/.json/.html
    """
    from edgedistill.report import compare, merge, regenerate

    if len(run_dirs) > 2:
        raise click.UsageError("give one run folder (regenerate) or two (compare)")
    if len(run_dirs) == 2 and (merge_files or label):
        raise click.UsageError("--merge/--label work on one run folder: merge first, then compare")
    if label and len(merge_files) != 1:
        raise click.UsageError("--label names one merged device: give exactly one --merge file with it")
    try:
        if len(run_dirs) == 2:
            path = compare(run_dirs[0], run_dirs[1], out)
        else:
            for result in merge_files:
                merge(run_dirs[0], result, label)
            path = regenerate(run_dirs[0])
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
        click.echo(f"{path.stem}\t{first}")


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.argument("texts", nargs=-1)
@click.option("--file", "text_file", type=click.File("r"), help="Read texts from a file, one per line ('-': stdin).")
@click.option("--format", "fmt", type=click.Choice(["json", "jsonl", "short"]), default="json", show_default=True,
              help="json: one object with all embeddings; jsonl: one line per text; short: first values only.")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
              help="Write to this file instead of stdout (a .npy name writes a float32 array).")
@click.option("--tokenizer-in-graph", is_flag=True, help="Use model_with_tokenizer.onnx (needs onnxruntime-extensions).")
@click.option("--threads", type=int, default=0, show_default=True, help="onnxruntime intra-op threads; 0 = all cores.")
@click.option("--no-check", is_flag=True, help="Skip the sha256 check of the bundle's files.")
@click.option("--precision", type=click.Choice(["fp32", "int8"]), default=None,
              help="Which of the bundle's graphs (onnx/model.onnx, onnx/model_quantized.onnx); default: the final one.")
def embed(bundle: Path, texts: tuple[str, ...], text_file, fmt: str, output: Path | None, tokenizer_in_graph: bool,
          threads: int, no_check: bool, precision: str | None) -> None:
    """Embed TEXTS with a deploy BUNDLE (e.g. runs/mpnet-to-tiny/bundle), using only onnxruntime, tokenizers
    and numpy: no torch."""
    import json

    import numpy as np

    from edgedistill.runtime import load, require_task

    items = list(texts) + ([line.rstrip("\n") for line in text_file if line.strip()] if text_file else [])
    if not items:
        _fail(EdgedistillError("embed: no texts; pass them as arguments or with --file FILE (one per line)"))
    try:
        require_task(bundle, "embedding", "embed")
        model = load(bundle, tokenizer_in_graph=tokenizer_in_graph, threads=threads, check=not no_check,
                     precision=precision)
    except EdgedistillError as e:
        _fail(e)
    vectors = model.encode(items)
    if output and output.suffix == ".npy":
        np.save(output, vectors)
        click.echo(f"wrote {vectors.shape[0]} x {vectors.shape[1]} float32 embeddings to {output}", err=True)
        return
    rows = [np.round(v.astype(float), 7).tolist() for v in vectors]
    if fmt == "json":
        text = json.dumps({"bundle": str(bundle), "dimension": int(vectors.shape[1]), "normalized": True,
                           "texts": items, "embeddings": rows})
    elif fmt == "jsonl":
        text = "\n".join(json.dumps({"text": t, "embedding": r}) for t, r in zip(items, rows, strict=True))
    else:
        text = "\n".join(f"{t}\t[{', '.join(f'{x:+.4f}' for x in r[:4])}, ...] ({len(r)}-d)" for t, r in zip(items, rows, strict=True))
    if output:
        output.write_text(text + "\n")
    else:
        click.echo(text)


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.argument("texts", nargs=-1)
@click.option("--pair", "pairs", nargs=2, multiple=True, metavar="FIRST SECOND",
              help="A text pair for a pair classifier (premise hypothesis); repeatable.")
@click.option("--file", "text_file", type=click.File("r"), help="Read inputs from a file, one per line (pairs: "
              "FIRST<TAB>SECOND); '-': stdin.")
@click.option("--format", "fmt", type=click.Choice(["json", "jsonl", "short"]), default="short", show_default=True,
              help="short: label and probability per input; jsonl: one object per input; json: one object.")
@click.option("--threads", type=int, default=0, show_default=True, help="onnxruntime intra-op threads; 0 = all cores.")
@click.option("--no-check", is_flag=True, help="Skip the sha256 check of the bundle's files.")
@click.option("--precision", type=click.Choice(["fp32", "int8"]), default=None,
              help="Which of the bundle's graphs; default: the final one.")
def classify(bundle: Path, texts: tuple[str, ...], pairs: tuple[tuple[str, str], ...], text_file, fmt: str,
             threads: int, no_check: bool, precision: str | None) -> None:
    """Classify TEXTS (or --pair FIRST SECOND) with a classifier BUNDLE: label names and probabilities, using
    only onnxruntime, tokenizers and numpy."""
    import json

    from edgedistill.runtime import load, require_task

    try:
        require_task(bundle, "classifier", "classify")
        model = load(bundle, threads=threads, check=not no_check, precision=precision)
    except EdgedistillError as e:
        _fail(e)
    lines = [line.rstrip("\n") for line in text_file if line.strip()] if text_file else []
    if model.text_inputs == "text_pair":
        if texts:
            _fail(EdgedistillError(f"classify: {bundle} classifies text pairs; pass --pair FIRST SECOND (or "
                                   "--file with FIRST<TAB>SECOND lines), not single texts"))
        bad = [line for line in lines if line.count("\t") != 1]
        if bad:
            _fail(EdgedistillError(f"classify: --file lines must be FIRST<TAB>SECOND for this pair classifier; "
                                   f"got {bad[0][:60]!r}"))
        items: list = [tuple(p) for p in pairs] + [tuple(line.split("\t")) for line in lines]
    else:
        if pairs:
            _fail(EdgedistillError(f"classify: {bundle} classifies single texts; pass them as arguments, not --pair"))
        items = list(texts) + lines
    if not items:
        _fail(EdgedistillError("classify: no inputs; pass texts as arguments, --pair FIRST SECOND, or --file FILE"))
    predictions = model.predict(items)
    shown = [list(x) if isinstance(x, tuple) else x for x in items]
    if fmt == "json":
        click.echo(json.dumps({"bundle": str(bundle), "labels": model.labels, "inputs": shown,
                               "predictions": predictions}))
    elif fmt == "jsonl":
        click.echo("\n".join(json.dumps({"input": x, **p}) for x, p in zip(shown, predictions, strict=True)))
    else:
        click.echo("\n".join(f"{p['label']}\t{p['score']:.4f}\t{x if isinstance(x, str) else ' | '.join(x)}"
                              for x, p in zip(shown, predictions, strict=True)))


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.argument("query")
@click.argument("documents", nargs=-1)
@click.option("--file", "doc_file", type=click.File("r"), help="Read documents from a file, one per line ('-': stdin).")
@click.option("--format", "fmt", type=click.Choice(["json", "short"]), default="json", show_default=True,
              help="json: scores in the documents' order and the ranking; short: the documents best first.")
@click.option("--threads", type=int, default=0, show_default=True, help="onnxruntime intra-op threads; 0 = all cores.")
@click.option("--no-check", is_flag=True, help="Skip the sha256 check of the bundle's files.")
@click.option("--precision", type=click.Choice(["fp32", "int8"]), default=None,
              help="Which of the bundle's graphs; default: the final one.")
def rank(bundle: Path, query: str, documents: tuple[str, ...], doc_file, fmt: str, threads: int, no_check: bool,
         precision: str | None) -> None:
    """Rerank DOCUMENTS for QUERY with a reranker BUNDLE (onnxruntime, tokenizers and numpy only: no torch)."""
    import json

    from edgedistill.runtime import load, require_task

    docs = list(documents) + ([line.rstrip("\n") for line in doc_file if line.strip()] if doc_file else [])
    if not docs:
        _fail(EdgedistillError("rank: no documents; pass them after the query or with --file FILE (one per line)"))
    try:
        require_task(bundle, "reranker", "rank")
        result = load(bundle, threads=threads, check=not no_check, precision=precision).rank(query, docs)
    except EdgedistillError as e:
        _fail(e)
    if fmt == "json":
        click.echo(json.dumps({"bundle": str(bundle), "query": query, "documents": docs,
                               "scores": [round(s, 6) for s in result.scores], "ranking": result.ranking}))
    else:
        click.echo("\n".join(f"{i + 1}\t{result.scores[d]:.4f}\t{docs[d]}" for i, d in enumerate(result.ranking)))


@main.command()
def assets() -> None:
    """List the built-in catalog of offline models and data sets."""
    from edgedistill.assets import catalog_summary

    for name, description in catalog_summary():
        click.echo(f"{name}\t{description}")


if __name__ == "__main__":
    main()
