"""ARM parity: a bundle's graph run by aarch64 onnxruntime (under qemu-user) gives the x86 embeddings.

    python scripts/arm_parity.py runs/mpnet-to-tiny/bundle [--precision int8] [--sentences FILE] [--json OUT]

Needs Debian's qemu-user (apt-get install -y qemu-user) and apt-get (aarch64 CPython 3.11 and its libraries are
downloaded as Debian arm64 packages with a private apt state, nothing is installed on the host) and pip (aarch64
wheels of onnxruntime, numpy and tokenizers from PyPI). Both are cached under ~/.cache/edgedistill/arm64 (or
EDGEDISTILL_CACHE). The aarch64 side runs edgedistill.runtime itself, as an app on a phone or board would.

onnxruntime: aarch64 wheels from 1.28 on crash on import under Debian 12's qemu 7.2 (SIGSEGV while loading the
extension module, any -cpu model); 1.27.0 is the newest that loads, so the ARM side runs 1.27.0 against the
project's 1.32.0 on x86. Override with --ort-version.

Exit status: 0 when the minimum cosine reaches --min-cosine (0.999), 1 when it does not, 77 when qemu-aarch64 or
apt-get is missing (skipped).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PYTHON = "python3.11"
PY_TAG = "3.11"
ORT_VERSION = "1.27.0"
# qemu CPU models: Cortex-A72 (NEON only) and Neoverse-N1 (adds the dot product, like phones' Cortex-A76/A78).
# 'max' (SVE, SME) is a diagnostic: with SME on, dynamic INT8 diverges under qemu 7.2 (see the README).
CPUS = ("cortex-a72", "neoverse-n1")
# Closure of python3.11-minimal + libpython3.11-stdlib + libstdc++6 on Debian 12 arm64 (apt-cache depends --recurse,
# without perl, dpkg, tar and docs).
DEBS = (
    "gcc-12-base", "libbz2-1.0", "libc6", "libcrypt1", "libdb5.3", "libexpat1", "libffi8", "libgcc-s1",
    "liblzma5", "libncursesw6", "libnsl2", "libpython3.11-minimal", "libpython3.11-stdlib",
    "libreadline8", "libsqlite3-0", "libssl3", "libstdc++6", "libtinfo6", "libtirpc3", "libuuid1",
    "python3.11-minimal", "zlib1g", "libgssapi-krb5-2", "libk5crypto3", "libkeyutils1", "libkrb5-3",
    "libkrb5support0", "libcom-err2", "libgdbm6", "media-types",
)
SKIP = 77
SENTENCES = [
    "A man is playing a guitar.", "A woman is slicing an onion.", "Two dogs are running through a field.",
    "A child rides a red bike down the street.", "Someone is playing the piano on a stage.",
    "The cat sleeps on the sofa all afternoon.", "People are swimming at the beach in summer.",
    "A chef cooks pasta in a busy restaurant kitchen.", "The stock market fell sharply after the announcement.",
    "Heavy rain flooded several roads in the city centre overnight.", "He forgot his keys again.",
    "Quantum computers could break today's public-key cryptography.", "What time does the train leave?",
    "The committee approved the new budget after a long debate about school funding and road repairs.",
    "Zebrafish regenerate heart tissue.", "I love this song!",
]

EMBED = """
import json, sys
import numpy as np
from edgedistill.runtime import load
bundle, precision, sentences, out = sys.argv[1:5]
model = load(bundle, precision=precision)
np.save(out, model.encode(json.load(open(sentences)), batch_size=1))
import onnxruntime, platform
print(json.dumps({"machine": platform.machine(), "onnxruntime": onnxruntime.__version__}))
"""


def cache_dir() -> Path:
    return Path(os.environ.get("EDGEDISTILL_CACHE", Path.home() / ".cache" / "edgedistill")) / "arm64"


def sysroot(cache: Path) -> Path:
    """An aarch64 CPython 3.11 from Debian arm64 packages, unpacked (not installed) into ``cache/sysroot``."""
    root = cache / "sysroot"
    if (root / "usr" / "bin" / PYTHON).is_file():
        return root
    apt = cache / "apt"
    for sub in ("lists/partial", "cache/archives/partial", "debs"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    opts = [f"-oDir::State::Lists={apt / 'lists'}", f"-oDir::Cache={apt / 'cache'}", "-oAPT::Architecture=arm64",
            "-oAPT::Architectures::=arm64", "-oDir::State::status=/dev/null"]
    subprocess.run(["apt-get", *opts, "update", "-qq"], check=True)
    subprocess.run(["apt-get", *opts, "download", *DEBS], cwd=apt / "debs", check=True, capture_output=True)
    tmp = Path(tempfile.mkdtemp(dir=cache))
    for deb in sorted((apt / "debs").glob("*.deb")):
        subprocess.run(["dpkg", "-x", str(deb), str(tmp)], check=True)
    os.replace(tmp, root)
    return root


def site_packages(cache: Path, ort_version: str) -> Path:
    """aarch64 wheels of the runtime's dependencies, installed with pip --target."""
    site = cache / f"site-ort{ort_version}"
    if (site / "onnxruntime").is_dir():
        return site
    tmp = Path(tempfile.mkdtemp(dir=cache))
    platforms = [a for p in ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64")
                 for a in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-warn-conflicts", "--target", str(tmp), *platforms,
                    "--python-version", PY_TAG, "--implementation", "cp", "--only-binary=:all:",
                    f"onnxruntime=={ort_version}", "numpy", "tokenizers"], check=True)
    os.replace(tmp, site)
    return site


def embed_on_arm(bundle: Path, precision: str, sentences: list[str], ort_version: str,
                 cpu: str) -> tuple[np.ndarray, dict]:
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    root, site = sysroot(cache), site_packages(cache, ort_version)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "s.json").write_text(json.dumps(sentences))
        env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}", "PYTHONNOUSERSITE": "1"}
        start = time.perf_counter()
        proc = subprocess.run(["qemu-aarch64", "-cpu", cpu, "-L", str(root), str(root / "usr" / "bin" / PYTHON), "-c", EMBED,
                               str(bundle), precision, str(Path(tmp) / "s.json"), str(Path(tmp) / "out.npy")],
                              env=env, capture_output=True, text=True, timeout=1800, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"aarch64 run failed ({proc.returncode}): {proc.stderr[-2000:]}")
        facts = json.loads(proc.stdout.strip().splitlines()[-1])
        facts.update(cpu=cpu, seconds_under_qemu=round(time.perf_counter() - start, 1))
        return np.load(Path(tmp) / "out.npy"), facts


def parity(bundle: Path, precision: str = "int8", sentences: list[str] | None = None,
           ort_version: str = ORT_VERSION, cpus: tuple[str, ...] = CPUS) -> dict:
    """Embed ``sentences`` with the bundle's ``precision`` graph on x86 and on aarch64 (one run per qemu CPU
    model); compare each with x86, and both with x86's fp32 graph (to tell which side moved)."""
    import onnxruntime

    from edgedistill.runtime import load

    sentences = sentences or SENTENCES
    x86 = load(bundle, precision=precision).encode(sentences, batch_size=1)
    fp32 = load(bundle, precision="fp32").encode(sentences, batch_size=1)
    manifest = json.loads((bundle / "manifest.json").read_text())
    result = {"bundle": str(bundle), "precision": precision, "sentences": len(sentences),
              "quantization": manifest.get("quantization"), "graph_portable": manifest.get("graph", {}).get("portable"),
              "x86_onnxruntime": onnxruntime.__version__, "x86_min_cosine_to_fp32": float(_cosines(x86, fp32).min()),
              "arm": []}
    for cpu in cpus:
        arm, facts = embed_on_arm(bundle, precision, sentences, ort_version, cpu)
        cos = _cosines(x86, arm)
        worst = int(cos.argmin())  # the sentence where the two sides differ most: which one moved from fp32?
        result["arm"].append({**facts, "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
                              "max_abs_diff": float(np.abs(x86 - arm).max()),
                              "min_cosine_to_fp32": float(_cosines(arm, fp32).min()),
                              "worst_sentence": {"text": sentences[worst][:80],
                                                 "x86_cosine_to_fp32": float(_cosines(x86, fp32)[worst]),
                                                 "arm_cosine_to_fp32": float(_cosines(arm, fp32)[worst])}})
    result["min_cosine"] = min(r["min_cosine"] for r in result["arm"])
    return result


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--precision", default="int8", choices=["int8", "fp32"])
    parser.add_argument("--sentences", type=Path, help="a text file, one sentence a line (default: 16 built in)")
    parser.add_argument("--ort-version", default=ORT_VERSION)
    parser.add_argument("--cpu", default=",".join(CPUS), help="qemu -cpu models, comma-separated")
    parser.add_argument("--min-cosine", type=float, default=0.999)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    missing = [t for t in ("qemu-aarch64", "apt-get", "dpkg") if not shutil.which(t)]
    if missing:
        print(f"skipped: {', '.join(missing)} not found (Debian: apt-get install -y qemu-user)", file=sys.stderr)
        return SKIP
    sentences = args.sentences.read_text().splitlines() if args.sentences else None
    result = parity(args.bundle, args.precision, sentences, args.ort_version, tuple(args.cpu.split(",")))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if result["min_cosine"] >= args.min_cosine else 1


if __name__ == "__main__":
    sys.exit(main())
