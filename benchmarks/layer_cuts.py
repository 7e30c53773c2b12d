"""Score layer cuts of the teacher before training: which layers should a layer-reduced student keep?

Run (from the repository root, on an otherwise idle machine):
    .venv/bin/python benchmarks/layer_cuts.py "0,2,4,7,9,11" "0,2,4,6,8,11" "0,2,5,7,9,11" "1,3,5,7,9,11"
Writes benchmarks/results/layer_cuts.md: STS-b test and dev Spearman of each cut, untrained. Choose on dev.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def layer_list(text: str) -> list[int]:
    """'0,2,4' -> [0, 2, 4], or a usage error naming what was expected."""
    try:
        layers = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected comma-separated layer numbers, e.g. 0,2,4,7,9,11") from None
    if layers != sorted(set(layers)) or layers[0] < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: layers must be distinct, ascending and >= 0")
    return layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cuts", nargs="+", type=layer_list,
                        help="comma-separated 0-based layer indices, e.g. 0,2,4,7,9,11")
    parser.add_argument("--teacher", default="sentence-transformers/all-mpnet-base-v2")
    parser.add_argument("--max-seq-length", type=int, default=128)
    args = parser.parse_args()

    from edgedistill.assets import resolve
    from edgedistill.data import load_sts
    from edgedistill.tasks.embedding.distill import keep_layers
    from edgedistill.tasks.embedding.encoders import TorchEncoder
    from edgedistill.tasks.embedding.evaluate import sts_spearman
    from edgedistill.trust import load_sentence_transformer

    test, dev = load_sts("stsb", "test"), load_sts("stsb", "dev")
    teacher = load_sentence_transformer(resolve(args.teacher), "cpu")
    teacher.max_seq_length = args.max_seq_length
    rows = []
    for layers in args.cuts:
        student = copy.deepcopy(teacher)
        keep_layers(student, layers)
        t0 = time.perf_counter()
        encoder = TorchEncoder(student)
        rows.append((layers, sts_spearman(encoder, test, 64), sts_spearman(encoder, dev, 64),
                     time.perf_counter() - t0))
    lines = [f"# Layer cuts of {args.teacher}, before training", "",
             "Command: `.venv/bin/python benchmarks/layer_cuts.py " + " ".join('"' + ",".join(map(str, c)) + '"' for c in args.cuts) + "`",
             "", "| layers kept | STS-b test | STS-b dev | eval s |", "|---|---|---|---|"]
    lines += [f"| {layers} | {t:.2f} | {d:.2f} | {s:.0f} |" for layers, t, d, s in rows]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "layer_cuts.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
