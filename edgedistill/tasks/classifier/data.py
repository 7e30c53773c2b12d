"""Labelled examples for classifiers: rows of a .jsonl/.csv/.tsv file (or a folder / catalog name holding
``train.jsonl`` and ``test.jsonl``), with the text (and second text) and label columns the recipe names.

Bad input stops with a RecipeError naming the recipe field: a missing column, a label outside the declared
classes, an empty file.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgedistill.assets import resolve
from edgedistill.errors import RecipeError

SUFFIXES = (".jsonl", ".csv", ".tsv")


@dataclass
class Examples:
    """Inputs (texts or (first, second) pairs) and their label ids (None for unlabelled inputs)."""

    inputs: list
    labels: list[int] | None
    label_names: list[str]

    def __len__(self) -> int:
        return len(self.inputs)

    def take(self, idx: list[int]) -> Examples:
        return Examples([self.inputs[i] for i in idx], None if self.labels is None else [self.labels[i] for i in idx],
                        self.label_names)


def data_file(spec: str, split: str, field: str) -> Path:
    """The file of a split: the path itself when it is a file, else ``<split>.jsonl`` in the folder or catalog
    entry."""
    path = resolve(spec)
    if path.is_file():
        return path
    for suffix in SUFFIXES:
        if (path / f"{split}{suffix}").is_file():
            return path / f"{split}{suffix}"
    raise RecipeError(f"{field}: {spec} holds no {split}.jsonl (or .csv/.tsv); give a labelled file or a folder "
                      f"with {split}.jsonl")


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows as dicts: JSON lines, or a CSV/TSV with a header row."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise RecipeError(f"{path}: line {n} is not JSON ({e})") from None
        return rows
    return list(csv.DictReader(text.splitlines(), delimiter="\t" if path.suffix == ".tsv" else ","))


def _column(row: dict, name: str, field: str, path: Path, n: int) -> Any:
    if name not in row or row[name] is None:
        raise RecipeError(f"{field}: row {n} of {path} has no column {name!r} (it has {sorted(row)}); set "
                          f"{field} to the column that holds it")
    return row[name]


def load_examples(spec: str, split: str, data: Any, *, labelled: bool = True, field: str = "data.train",
                  label_names: list[str] | None = None) -> Examples:
    """Every row of a split, as inputs and label ids. ``label_names`` (else data.labels, else the sorted labels
    seen) fixes the classes; a label outside them is an error naming data.labels."""
    path = data_file(spec, split, field)
    rows = read_rows(path)
    section = field.split(".", 1)[0]
    if not rows:
        raise RecipeError(f"{field}: {path} holds no rows")
    inputs: list = []
    raw: list[str] = []
    for n, row in enumerate(rows, 1):
        text = str(_column(row, data.text_column, f"{section}.text_column", path, n))
        if data.text_pair_column:
            inputs.append((text, str(_column(row, data.text_pair_column, f"{section}.text_pair_column", path, n))))
        else:
            inputs.append(text)
        if labelled:
            raw.append(str(_column(row, data.label_column, f"{section}.label_column", path, n)))
    names = label_names or getattr(data, "labels", None) or sorted(set(raw))
    if not labelled:
        return Examples(inputs, None, list(names))
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted({label for label in raw if label not in index})
    if unknown:
        raise RecipeError(f"data.labels: {path} has label(s) {unknown[:5]} outside the declared classes {names}; "
                          "add them to data.labels or remove those rows")
    if len(names) < 2:
        raise RecipeError(f"data.labels: {path} has only the label {names}; a classifier needs at least two classes")
    return Examples(inputs, [index[label] for label in raw], list(names))


@dataclass
class TrainingSplits:
    """The labelled training sample, the dev sample (for checkpoint selection) and the unlabelled pool."""

    train: Examples
    dev: Examples
    unlabelled: Examples


def training_splits(data: Any, unlabelled: int = 0) -> TrainingSplits:
    """Draw data.examples + data.dev_examples labelled rows (disjoint, seeded) and up to ``unlabelled`` further
    inputs without their labels (from data.unlabelled, else the training file's remaining rows)."""
    everything = load_examples(data.train, "train", data)
    order = list(range(len(everything)))
    random.Random(data.seed).shuffle(order)
    dev_n = min(data.dev_examples, max(0, len(order) // 5))
    dev, rest = order[:dev_n], order[dev_n:]
    train, spare = rest[:data.examples], rest[data.examples:]
    if unlabelled and data.unlabelled:
        pool = load_examples(data.unlabelled, "train", data, labelled=False, field="data.unlabelled",
                             label_names=everything.label_names)
        seen = {everything.inputs[i] for i in train + dev}
        extra = Examples([x for x in pool.inputs if x not in seen][:unlabelled], None, everything.label_names)
    else:
        extra = everything.take(spare[:unlabelled])
        extra.labels = None
    return TrainingSplits(everything.take(sorted(train)), everything.take(sorted(dev)), extra)


def input_texts(inputs: list) -> list[str]:
    """Single strings for timing and calibration: a pair's two texts joined by a space."""
    return [x if isinstance(x, str) else f"{x[0]} {x[1]}" for x in inputs]
