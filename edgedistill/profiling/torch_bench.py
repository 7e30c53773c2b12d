"""Profile PyTorch models (teacher, fp32 student) exactly as bench.py profiles ONNX: sentence-transformers folders
(embeddings out) and sequence-classification folders (classifiers and rerankers: logits out).

Run as a worker process by the profile stage: ``python -m edgedistill.profiling.torch_bench --model
LABEL=PATH ... --sentences S.json --settings S.json --out R.json``. torch and sentence-transformers are
imported once; every cold-start/memory probe runs in a child forked before any model is loaded or any torch
op has run (forking after OpenMP has started can hang), then each model is measured warm with the same
timing code, sentences and settings as the ONNX bundles.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

from edgedistill.profiling import bench

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt"}


def is_seqcls(path: Path | None) -> bool:
    """A sequence-classification folder (a classifier or cross-encoder: config.json names *ForSequenceClassification)."""
    from edgedistill.errors import RecipeError
    from edgedistill.tasks.seqcls.models import SEQCLS, folder_kind

    try:
        return path is not None and Path(path).is_dir() and folder_kind(Path(path)) == SEQCLS
    except RecipeError:  # not a model folder at all
        return False


def max_seq_length(path: Path, seqcls: bool = False) -> int:
    """The model's max sequence length (sentence_bert_config.json, or our sidecar for a sequence classifier), read
    without loading the model."""
    if seqcls:
        from edgedistill.tasks.seqcls.models import max_seq_length_of

        return max_seq_length_of(Path(path))
    config = Path(path) / "sentence_bert_config.json"
    if config.is_file():
        value = json.loads(config.read_text()).get("max_seq_length")
        if value:
            return int(value)
    return 512


class TorchEngine:
    """A SentenceTransformer on the CPU with the bench engine interface."""

    runtime = "torch"

    def __init__(self, model, threads: int) -> None:
        import torch

        self.threads = threads
        torch.set_num_threads(threads)
        self.model = model
        self.max_seq_length = int(model.max_seq_length)

    def encode(self, texts: list[str], batch_size: int = 32, max_length: int | None = None):
        import torch

        if torch.get_num_threads() != self.threads:  # the setting is process-wide; engines share the model
            torch.set_num_threads(self.threads)

        previous = self.model.max_seq_length
        self.model.max_seq_length = min(max_length or previous, previous)
        try:
            return self.forward(list(texts), batch_size)
        finally:
            self.model.max_seq_length = previous

    def forward(self, texts: list[str], batch_size: int):
        """Normalised sentence embeddings."""
        import numpy as np

        emb = self.model.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
        return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


class SeqclsEngine(TorchEngine):
    """A sequence classifier on the CPU with the bench engine interface: texts in, logits out."""

    def forward(self, texts: list[str], batch_size: int):
        return self.model.logits(texts, batch_size=batch_size)


class TorchFactory:
    """``factory(threads)`` loads the model afresh (in a round's child process, or once for throughput)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.seqcls = is_seqcls(self.path)
        self.max_seq_length = max_seq_length(self.path, self.seqcls)

    def __call__(self, threads: int) -> TorchEngine:
        import torch

        from edgedistill.trust import load_sentence_transformer

        torch.set_num_threads(threads)
        if self.seqcls:
            from edgedistill.tasks.seqcls.models import load_classifier

            return SeqclsEngine(load_classifier(self.path, device="cpu", field="profile"), threads)
        return TorchEngine(load_sentence_transformer(self.path, "cpu"), threads)


def weights_mb(path: Path) -> float:
    """Bytes of weight files in a sentence-transformers folder, in MB."""
    files = [p for p in Path(path).rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES]
    return round(sum(p.stat().st_size for p in files) / 1e6, 3)


def run(models: dict[str, Path], sentences: list[str], settings: dict) -> dict[str, dict]:
    """Profile each model: every model's batch-1 rounds first, in processes forked before any torch op has run
    here, then each model's throughput in this process."""
    import sentence_transformers
    import torch

    settings = {**bench.DEFAULT_SETTINGS, **settings}
    facts = bench.host_facts()
    facts["torch"] = torch.__version__
    facts["sentence_transformers"] = sentence_transformers.__version__
    factories = {label: TorchFactory(path) for label, path in models.items()}
    rounds = {label: bench.process_rounds(f, sentences, settings) for label, f in factories.items()}
    out = {}
    for label, factory in factories.items():
        t0 = time.perf_counter()
        started = time.time()
        result = bench.measure(factory, sentences, settings, rounds=rounds[label])
        rounds_s = rounds[label].get("seconds", 0.0)
        out[label] = {"format": bench.FORMAT, "version": bench.VERSION, "label": label, "runtime": "torch",
                      "runtime_version": torch.__version__,
                      "model": {"file": str(factory.path), "size_mb": weights_mb(factory.path), "quantized": False},
                      "host": facts, **result, "started_unix": round(started, 1),
                      "wall_s": round(time.perf_counter() - t0 + rounds_s, 2)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, metavar="LABEL=PATH")
    parser.add_argument("--sentences", required=True)
    parser.add_argument("--settings", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="torch-bench: %(message)s", stream=sys.stderr)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    models = dict(item.split("=", 1) for item in args.model)
    sentences = json.loads(Path(args.sentences).read_text())
    settings = json.loads(Path(args.settings).read_text())
    log.info("profiling %s on %s", ", ".join(models), platform.node())
    result = run({k: Path(v) for k, v in models.items()}, sentences, settings)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
