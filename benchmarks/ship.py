"""Ship check on real bundles: every client against the runtime, batch invariance, ARM parity.

    edgedistill run benchmarks/recipes/ship-l3-portable.yaml --runs-dir runs/ship
    edgedistill run benchmarks/recipes/ship-l3-arm64-static.yaml --runs-dir runs/ship
    python benchmarks/ship.py runs/ship/ship-l3-portable/bundle runs/ship/ship-l3-arm64-static/bundle

Needs what tests/test_clients.py needs (examples/web/node_modules, .venv-clients, chromium; scripts/test.sh sets
them up) and, for ARM parity, qemu-user (scripts/arm_parity.py). Writes benchmarks/results/ship.{json,md}.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WEB = ROOT / "examples" / "web"
NODE_MODULES = WEB / "node_modules"
CLIENTS = ROOT / "tests" / "clients"
RESULTS = ROOT / "benchmarks" / "results"


def _arm_parity():
    spec = importlib.util.spec_from_file_location("arm_parity", ROOT / "scripts" / "arm_parity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _quiet_handler(directory: str):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    return functools.partial(Quiet, directory=directory)


def clients(bundle: Path, sentences: list[str]) -> dict[str, dict]:
    """{client: {precision: {way: vectors}}} from transformers.js, fastembed and the browser demo."""
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "s.json"
        file.write_text(json.dumps(sentences))
        env = {**os.environ, "TRANSFORMERS_JS": (NODE_MODULES / "@huggingface/transformers/dist/transformers.node.mjs").as_uri()}
        js = json.loads(subprocess.run(["node", str(CLIENTS / "transformers_node.mjs"), str(bundle), str(file)],
                                       capture_output=True, text=True, env=env, check=True).stdout)
        out["transformers.js (Node)"] = {"fp32": js["fp32"], "int8": js["q8"]}
        fits = js["fits"]  # the pipeline tokenizes (and truncates) itself: sentences that fit only
        for dtype, precision in (("fp32", "fp32"), ("q8", "int8")):
            run = js["pipeline"][dtype]
            if run["ok"]:  # as the manifest asks: one text per call for a batch-dependent graph
                rows = js[dtype]["rows_separately"]
                out.setdefault("transformers.js pipeline (Node)", {})[precision] = {
                    "alone": run["alone"], "batched": run["alone"] if rows else run["batched_raw"],
                    "batched_raw": run["batched_raw"], "rows": fits}
        python = ROOT / ".venv-clients" / "bin" / "python"
        out["fastembed"] = json.loads(subprocess.run(
            [str(python), str(CLIENTS / "fastembed_client.py"), str(bundle), str(file)], capture_output=True,
            text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=True).stdout)
        site = Path(tmp) / "site"
        site.mkdir()
        for name in ("index.html", "edgedistill.js", "node_modules"):
            (site / name).symlink_to(WEB / name)
        (site / "bundle").symlink_to(bundle.resolve())
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _quiet_handler(str(site)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            env = {**os.environ, "CHROMIUM": shutil.which("chromium") or "/usr/bin/chromium",
                   "PLAYWRIGHT_CORE": (NODE_MODULES / "playwright-core/index.mjs").as_uri()}
            out["onnxruntime-web (Chromium)"] = json.loads(subprocess.run(
                ["node", str(CLIENTS / "browser.mjs"), f"http://127.0.0.1:{server.server_address[1]}/index.html",
                 str(file)], capture_output=True, text=True, env=env, check=True).stdout)
        finally:
            server.shutdown()
    return out


def check(bundle: Path, arm_cpus: tuple[str, ...]) -> dict:
    from edgedistill.quant.invariance import measure
    from edgedistill.runtime import load

    parity = _arm_parity()
    sentences = parity.SENTENCES + [" ".join(parity.SENTENCES) * 3]  # the last one is truncated
    reference = {p: load(bundle, precision=p).encode(sentences, batch_size=1) for p in ("fp32", "int8")}
    rows = []
    for client, by_precision in clients(bundle, sentences).items():
        for precision, ways in by_precision.items():
            for way in ("alone", "batched", "batched_raw"):
                ref = reference[precision][np.asarray(ways["rows"])] if "rows" in ways else reference[precision]
                got = np.asarray(ways[way], dtype=np.float32)
                cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
                rows.append({"client": client, "precision": precision, "way": way,
                             "max_abs_diff": float(np.abs(got - ref).max()), "min_cosine": float(cos.min())})
    manifest = json.loads((bundle / "manifest.json").read_text())
    from edgedistill.data import load_sentences, sample

    invariance = measure(bundle, sample(load_sentences("snli-heldout"), 128, seed=1))
    arm = parity.parity(bundle, "int8", cpus=arm_cpus) if shutil.which("qemu-aarch64") else None
    return {"bundle": str(bundle), "quantization": manifest.get("quantization"), "graph": manifest.get("graph"),
            "quality": manifest.get("quality"), "clients": rows, "batch_invariance": invariance, "arm": arm}


def markdown(results: list[dict]) -> str:
    lines = ["# Ship check", ""]
    for r in results:
        q = r["quantization"] or {}
        title = (f"## {Path(r['bundle']).parent.name}: {q.get('target')} {q.get('method')}, graph portable "
                 f"{r['graph'].get('portable')}")
        lines += [title, "",
                  "| client | precision | way | max abs diff | min cosine |", "|---|---|---|---|---|"]
        lines += [f"| {c['client']} | {c['precision']} | {c['way']} | {c['max_abs_diff']:.1e} | {c['min_cosine']:.7f} |"
                  for c in r["clients"]]
        b = r["batch_invariance"]
        summary = (f"Batch invariance (128 SNLI sentences alone vs batches of 64): graph as is min cosine "
                   f"{b['graph']['min_cosine']:.6f} (mean {b['graph']['mean_cosine']:.6f}); served by the runtime "
                   f"{b['served']['min_cosine']:.6f}; run_rows_separately {b['run_rows_separately']}.")
        lines += ["", summary, ""]
        if r["arm"]:
            lines += ["| qemu CPU | aarch64 onnxruntime | min cosine vs x86 | mean | max abs diff |", "|---|---|---|---|---|"]
            lines += [f"| {a['cpu']} | {a['onnxruntime']} | {a['min_cosine']:.7f} | {a['mean_cosine']:.7f} | "
                      f"{a['max_abs_diff']:.1e} |" for a in r["arm"]["arm"]]
            lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--arm-cpus", default="cortex-a72,neoverse-n1,max")
    parser.add_argument("--name", default="ship", help="results file stem under benchmarks/results/")
    args = parser.parse_args()
    results = [check(b, tuple(args.arm_cpus.split(","))) for b in args.bundles]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(results, indent=1) + "\n")
    (RESULTS / f"{args.name}.md").write_text(markdown(results) + "\n")
    print(markdown(results))


if __name__ == "__main__":
    main()
