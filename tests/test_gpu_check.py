"""scripts/gpu_check.py in its CPU smoke mode: the same code path a GPU machine runs, at tiny sizes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_smoke_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--device", "cpu", "--smoke",
                             "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["smoke"] and report["teacher_config"]["relative_attention_num_buckets"] == 32
    rates = report["labelling_sentences_per_s"]
    assert set(rates) == {"mix", "16", "32", "64", "128"} and all(v > 0 for r in rates.values() for v in r.values())
    assert all(t["sentences_per_s"] > 0 for t in report["training"].values())
    assert report["projected_hours"]["1000000"]["labelling"] > report["projected_hours"]["200000"]["labelling"]
    pipeline = report["pipeline"]
    assert pipeline["device"] == "cpu" and pipeline["train_steps"] > 0
    assert pipeline["export_check"]["min_cosine"] >= 0.9999


def test_gpu_check_refuses_cuda_without_a_gpu(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        return
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--out", str(tmp_path / "x.json")],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 2 and "--device cpu --smoke" in result.stderr
