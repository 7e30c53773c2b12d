"""benchmarks/compare.py: Pareto front, ratios to the teacher, table and CSV writing (tiny inputs, no models)."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("bench_compare", ROOT / "benchmarks" / "compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pareto_front(compare):
    # (latency, quality): the slow best, a fast worse one, one dominated by both, one tied on latency but worse.
    points = [(80.0, 83.0), (2.0, 80.0), (10.0, 79.0), (2.0, 78.0), (1.0, 60.0)]
    assert compare.pareto_front(points) == [True, True, False, False, True]
    assert compare.pareto_front([]) == []
    assert compare.pareto_front([(1.0, 1.0), (1.0, 1.0)]) == [True, True]  # identical points: neither dominates


def rows():
    return [
        {"key": "teacher", "label": "teacher", "group": "teacher", "runtime": "PyTorch fp32", "params_m": 109.5,
         "size_mb": 438.0, "sts_spearman": 80.0, "retrieval_ndcg10": 90.0, "latency_ms_p50": 80.0,
         "sentences_per_s_b32": 20.0},
        {"key": "small/int8", "label": "small", "group": "edgedistill", "runtime": "ONNX int8", "params_m": 17.6,
         "size_mb": 18.4, "sts_spearman": 79.0, "retrieval_ndcg10": 72.0, "latency_ms_p50": 2.0,
         "sentences_per_s_b32": 600.0},
        {"key": "other", "label": "other", "group": "off-the-shelf", "runtime": "ONNX fp32", "params_m": 22.7,
         "size_mb": 90.0, "sts_spearman": 78.0, "retrieval_ndcg10": 81.0, "latency_ms_p50": 4.0,
         "sentences_per_s_b32": 300.0},
        {"key": "untimed", "label": "untimed", "group": "static", "runtime": "static", "sts_spearman": None,
         "retrieval_ndcg10": None, "latency_ms_p50": None},
    ]


def test_add_ratios(compare):
    data = rows()
    compare.add_ratios(data)
    teacher, small, other, untimed = data
    assert teacher["sts_retention_pct"] == 100.0 and teacher["speedup_b1"] == 1.0
    assert small["sts_retention_pct"] == pytest.approx(98.75)
    assert small["ndcg_retention_pct"] == pytest.approx(80.0)
    assert small["speedup_b1"] == pytest.approx(40.0) and small["speedup_b32"] == pytest.approx(30.0)
    assert (teacher["front_sts"], small["front_sts"], other["front_sts"]) == (True, True, False)
    assert (teacher["front_ndcg"], small["front_ndcg"], other["front_ndcg"]) == (True, True, True)
    assert untimed["speedup_b1"] is None and "front_sts" not in untimed


def test_markdown_table_and_csv(compare, tmp_path):
    data = rows()
    compare.add_ratios(data)
    table = compare.markdown_table(data).splitlines()
    assert len(table) == 2 + len(data)
    assert all(line.count("|") == table[0].count("|") for line in table)
    assert "| 2 | small | ONNX int8 | 17.6 | 18.4 | 79.00 | 98.8 | 72.00 | 80.0 | 2.00 | 40.0x | 600 | 30.0x | SR |" in table
    assert table[-1].startswith("| 4 | untimed | static | – |")
    assert compare.front_summary(data, "front_sts") == "small (ONNX int8), teacher (PyTorch fp32)"

    path = tmp_path / "compare.csv"
    compare.write_csv(data, path)
    read = list(csv.DictReader(path.open()))
    assert [r["key"] for r in read] == ["teacher", "small/int8", "other", "untimed"]
    assert list(read[0]) == list(compare.CSV_COLUMNS)
    assert read[1]["front_sts"] == "True" and read[3]["latency_ms_p50"] == ""


def test_place_labels_do_not_overlap(compare):
    points = [(100.0, 100.0), (101.0, 100.0), (102.0, 101.0), (300.0, 50.0)]
    offsets = compare.place_labels(points, size=(14.0, 10.0))
    boxes = [(x + dx, y + dy, x + dx + 14, y + dy + 10) for (x, y), (dx, dy) in zip(points, offsets, strict=True)]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])
    assert offsets[-1] == (4, 2)  # a lone point keeps the default spot


def test_spread_pct(compare):
    assert compare.spread_pct([1.0, 1.1, 0.9]) == pytest.approx(20.0)
    assert compare.spread_pct([2.0, 3.0]) == pytest.approx(40.0)
    assert compare.spread_pct([1.0]) is None


def test_replace_section(compare):
    text = "intro\n<!-- compare:start -->\nold table\n<!-- compare:end -->\noutro\n"
    assert compare.replace_section(text, "new table\n") == (
        "intro\n<!-- compare:start -->\nnew table\n<!-- compare:end -->\noutro\n")
    assert compare.replace_section("no markers", "x") is None
    assert compare.replace_section("<!-- compare:end --> <!-- compare:start -->", "x") is None
