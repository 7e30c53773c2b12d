"""Cheap measurements for the search: agreement with the fp32 model (proxy quality) and latency."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgedistill.timing import batch1_latency


class Proxy:
    """Mean cosine between a candidate's embeddings and the fp32 model's on a few hundred in-domain sentences.

    Far cheaper than the full evaluator (one encode of a small sample) and smooth, so it ranks sensitivity
    well; the budget itself is always confirmed with the full evaluator.
    """

    def __init__(self, reference_bundle: Path, sentences: list[str], threads: int = 0) -> None:
        from edgedistill.runtime import OnnxEncoder

        self.sentences = list(sentences)
        self.threads = threads
        self.reference = OnnxEncoder(reference_bundle, threads=threads).encode(self.sentences, batch_size=32)

    def cosine(self, bundle: Path, model_file: str = "model.onnx") -> float:
        from edgedistill.runtime import OnnxEncoder

        emb = OnnxEncoder(bundle, threads=self.threads, model_file=model_file).encode(self.sentences, batch_size=32)
        return float((emb * self.reference).sum(axis=1).mean())


def latency(bundle: Path, sentences: list[str], repeats: int = 3, batch_size: int = 32, threads: int = 0,
            warmup: int = 10) -> dict[str, float]:
    """Batch-1 latency (median over ``repeats`` passes of every sentence, tokenisation included) and batched
    time per sentence (best of ``repeats``), in ms. Sessions are created here, so every trial is timed the
    same way."""
    from edgedistill.runtime import OnnxModel

    model = OnnxModel(bundle, threads=threads)  # any task's bundle: items are texts or (text, text) pairs
    batch1 = batch1_latency(lambda s: model.outputs([s], batch_size=1), sentences, warmup=warmup, repeats=repeats)
    batched = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.outputs(sentences, batch_size=batch_size)
        batched.append((time.perf_counter() - t0) / len(sentences))
    return {**batch1,
            f"latency_ms_per_sentence_b{batch_size}": 1000 * float(min(batched))}


def no_spin_session(model_path: Path, threads: int):
    """A session whose idle pool threads sleep instead of spin-waiting: with several multi-threaded sessions
    interleaved, an idle one's spinning threads would steal the cores from the one being timed."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])


def interleaved_latency(bundles: dict[str, Path], sentences: list[str], rounds: int = 3, batch_size: int = 32,
                        threads: int = 0, warmup: int = 10) -> dict[str, dict[str, float]]:
    """Latency of several bundles measured side by side: each sentence is timed on every bundle in turn
    (order alternating by round), so drift in the machine's speed hits all alike. Same keys as latency()."""
    from edgedistill.runtime import OnnxModel

    encoders = {name: OnnxModel(path, threads=threads) for name, path in bundles.items()}
    if len(encoders) > 1 and threads != 1:
        for encoder in encoders.values():
            encoder.session = no_spin_session(encoder.model_path, threads)
    names = list(encoders)
    for name in names:
        for s in sentences[:warmup]:
            encoders[name].outputs([s], batch_size=1)
    times: dict[str, list[float]] = {n: [] for n in names}
    batched: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for s in sentences:
            for name in order:
                t0 = time.perf_counter()
                encoders[name].outputs([s], batch_size=1)
                times[name].append(time.perf_counter() - t0)
        for name in order:
            t0 = time.perf_counter()
            encoders[name].outputs(sentences, batch_size=batch_size)
            batched[name].append((time.perf_counter() - t0) / len(sentences))
    return {n: {"latency_ms_p50": 1000 * float(np.median(times[n])),
                "latency_ms_p90": 1000 * float(np.percentile(times[n], 90)),
                f"latency_ms_per_sentence_b{batch_size}": 1000 * float(min(batched[n]))} for n in names}
