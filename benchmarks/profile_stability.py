"""Profiling stability benchmark: profile the same INT8 bundle twice (or more), back to back, with the profile
stage's default settings, and report how far the batch-1 medians of consecutive profiles differ.

Goal (issue 6): on this machine, two consecutive profiles agree within 5% on the batch-1 median.

Run (from the repository root, on an otherwise idle machine; the lock keeps other heavy jobs off the CPU):
    flock /tmp/edgedistill-heavy.lock .venv/bin/python benchmarks/profile_stability.py
    flock /tmp/edgedistill-heavy.lock .venv/bin/python benchmarks/profile_stability.py --runs 4 --bundle runs/x/final
Default bundle: runs/mpnet-to-tiny/final when present, else /tmp/runs/smoke/final. Sentences: the first 200 of
the held-out SNLI sample the runner uses (1,000 sentences, seed 0), exactly as the profile stage picks them.
Writes benchmarks/results/profile.md and profile.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_BUNDLES = [ROOT / "runs" / "mpnet-to-tiny" / "final", Path("/tmp/runs/smoke/final")]


def sentences(n: int) -> list[str]:
    from edgedistill.data import load_sentences, sample

    return sample(load_sentences("snli-heldout"), 1000, seed=0)[:n]


def profile_once(bundle: Path, texts: list[str], settings: dict) -> dict:
    from edgedistill.profiling.profiler import ChainItem, profile
    from edgedistill.recipe import ProfileTarget

    item = ChainItem("final", bundle.name, "onnx", bundle)
    with tempfile.TemporaryDirectory(prefix="edgedistill-profile-bench-") as tmp:
        (measurement,) = profile(item, texts, settings, [ProfileTarget(name="local")], Path(tmp))
    return measurement["result"]


def pct_diff(a: float, b: float) -> float:
    """|a - b| as % of their mean."""
    return 100 * abs(a - b) / ((a + b) / 2)


def summarise(results: list[dict]) -> dict:
    from edgedistill.profiling.bench import headline

    rows = []
    for i, r in enumerate(results):
        h = headline(r)
        lat = r["latency_ms"]
        rows.append({"run": i + 1, **h, "round_p50": lat[str(r["headline_threads"])].get("round_p50"),
                     "p50_by_threads": {t: v["p50"] for t, v in lat.items()}, "wall_s": r["wall_s"]})
    threads = list(results[0]["latency_ms"])
    diffs = {t: [pct_diff(rows[i]["p50_by_threads"][t], rows[i + 1]["p50_by_threads"][t])
                 for i in range(len(rows) - 1)] for t in threads}
    headline_t = str(results[0]["headline_threads"])
    return {"rows": rows, "consecutive_p50_diff_pct": diffs,
            "max_consecutive_p50_diff_pct": max(diffs[headline_t]) if diffs[headline_t] else 0.0,
            "within_5pct": all(d <= 5 for d in diffs[headline_t])}


def to_markdown(bundle: Path, results: list[dict], summary: dict, wall_s: float) -> str:
    from edgedistill.report import host_line, rss_cell

    r0 = results[0]
    s, n = r0["settings"], r0["sentences"]
    threads = list(r0["latency_ms"])
    lines = [
        "# Profiling stability: consecutive profiles of one bundle", "",
        (f"Bundle: `{bundle}` ({r0['model']['size_mb']:.1f} MB, "
         f"{'INT8' if r0['model']['quantized'] else 'fp32'}, sha256 {r0['model']['sha256'][:12]}). "
         f"Host: {host_line(r0['host'])}."),
        (f"Settings: the profile stage's defaults — {n['count']} held-out sentences ({n['words_min']}–"
         f"{n['words_max']} words), up to {s['repeats']} rounds (at least {s['min_repeats']}, "
         f"{s['max_seconds']:.0f} s budget), each in a fresh process after {s['warmup']} warm-up calls, "
         f"threads {', '.join(threads)}."), "",
        ("| run | threads | batch-1 p50 ms | p90 ms | p99 ms | spread of round medians % | rounds kept/run | others' CPU (cores) | "
         + " | ".join(f"p50 @{t} thr" for t in threads) + " | sentences/s | cold start ms | model RSS MB (batch 1 / largest) | wall s |"),
        "|" + "---|" * (13 + len(threads) - 1),
    ]
    for row in summary["rows"]:
        lines.append(f"| {row['run']} | {row['threads']} | {row['latency_ms_p50']:.3f} | {row['latency_ms_p90']:.3f} | "
                     f"{row['latency_ms_p99']:.3f} | {row['spread_pct']:.1f} | "
                     f"{row['rounds_used']}/{row['rounds']} | {row['other_cores'] or 0:.2f} | "
                     + " | ".join(f"{row['p50_by_threads'][t]:.3f}" for t in threads)
                     + f" | {row['throughput_per_s']:.0f} | {row['cold_start_ms']:.0f} | {rss_cell(row)}"
                     f" | {row['wall_s']:.0f} |")
    lines += ["", "Difference of batch-1 p50 between consecutive profiles (% of their mean):", ""]
    for t, diffs in summary["consecutive_p50_diff_pct"].items():
        lines.append(f"- {t} thread{'s' if t != '1' else ''}: " + ", ".join(f"{d:.2f}%" for d in diffs))
    verdict = "within" if summary["within_5pct"] else "NOT within"
    ht = r0["headline_threads"]
    lines += ["", (f"Headline ({ht} thread{'s' if ht != 1 else ''}): largest consecutive difference "
                   f"{summary['max_consecutive_p50_diff_pct']:.2f}% — {verdict} the 5% goal. Total wall time "
                   f"{wall_s:.0f} s."), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=None, help="ONNX bundle (default: the default run's final)")
    parser.add_argument("--runs", type=int, default=2, help="consecutive profiles (>= 2)")
    parser.add_argument("--sentences", type=int, default=200)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from edgedistill.profiling.profiler import bench_settings
    from edgedistill.recipe import ProfileStage

    bundle = args.bundle or next((b for b in DEFAULT_BUNDLES if (b / "manifest.json").is_file()), None)
    if bundle is None:
        raise SystemExit("no bundle: run `edgedistill run recipes/smoke.yaml --runs-dir /tmp/runs` or pass --bundle")
    settings = bench_settings(ProfileStage(type="profile", sentences=args.sentences))
    texts = sentences(args.sentences)
    t0 = time.perf_counter()
    results = [profile_once(bundle.resolve(), texts, settings) for _ in range(max(2, args.runs))]
    wall = time.perf_counter() - t0
    summary = summarise(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    md = to_markdown(bundle, results, summary, wall)
    (RESULTS / "profile.md").write_text(md)
    (RESULTS / "profile.json").write_text(json.dumps(
        {"bundle": str(bundle), "settings": settings, "summary": summary, "results": results}, indent=1) + "\n")
    print(md)


if __name__ == "__main__":
    main()
