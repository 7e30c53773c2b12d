"""GPU check: edgedistill's CUDA path end to end, and teacher/student throughput, on models built in code.

Needs only torch, transformers, sentence-transformers and onnxruntime (plus edgedistill's own dependencies for the
pipeline part; without them that part is skipped and says so) and no network: the teacher is a randomly
initialised model with all-mpnet-base-v2's exact architecture (MPNet, 12 layers, 768-d, 30,527 tokens), the
student one with paraphrase-MiniLM-L3-v2's (BERT, 3 layers, 384-d) plus a 384 -> 768 projection. Random weights
run at the same speed as trained ones, so the sentences/s here tell how long real labelling and training take.

    python scripts/gpu_check.py --out gpu_check.json                 # on a GPU machine, < 10 min
    python scripts/gpu_check.py --device cpu --smoke --out smoke.json  # tiny sizes, any machine (the test suite)

Writes one JSON: the device, labelling sentences/s (fp32 and bf16 autocast, at fixed token lengths and at a
realistic mix), training steps/s and sentences/s (bf16 autocast), the pipeline run (distill with labelling,
training, checkpoint and dev selection, then ONNX export with its numerical check) and the projected hours for
200k and 1M sentences.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("gpu_check")

# all-mpnet-base-v2's config.json and paraphrase-MiniLM-L3-v2's (the default recipe's teacher and student).
TEACHER = dict(vocab_size=30527, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
               intermediate_size=3072, max_position_embeddings=514, relative_attention_num_buckets=32,
               layer_norm_eps=1e-5)
STUDENT = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=3, num_attention_heads=12,
               intermediate_size=1536, max_position_embeddings=512)
SMOKE_TEACHER = dict(TEACHER, vocab_size=600, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64)
SMOKE_STUDENT = dict(STUDENT, vocab_size=600, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32)
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<s>", "</s>", "<pad>", "<mask>"]


def words(vocab_size: int) -> list[str]:
    """Whole-word tokens filling the vocabulary, so a sentence of n words is n tokens (+2 specials)."""
    return [f"w{i}" for i in range(vocab_size - len(SPECIALS))]


def sentences(n: int, lengths: list[int] | None, vocab: list[str], seed: int) -> list[str]:
    """n sentences of the given token lengths, or of a realistic mix (SNLI captions ~12 tokens, STS-b ~14,
    Wikipedia prose ~30: lengths drawn log-normally around 16, 8..120)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        length = lengths[i % len(lengths)] if lengths else int(min(120, max(8, rng.lognormvariate(2.8, 0.5))))
        out.append(" ".join(rng.choice(vocab) for _ in range(length)))
    return out


def build_model(out: Path, family: str, config: dict[str, Any], dense_to: int | None, max_seq_length: int) -> Path:
    """Save a random-init sentence-transformers model: Transformer, mean Pooling, [Dense], Normalize."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast, MPNetConfig, MPNetModel, MPNetTokenizerFast

    torch.manual_seed(0)
    hf = out.with_name(out.name + "-hf")
    vocab = {t: i for i, t in enumerate(SPECIALS + words(config["vocab_size"]))}
    if family == "mpnet":
        MPNetModel(MPNetConfig(**config)).save_pretrained(hf)
        MPNetTokenizerFast(vocab=vocab, do_lower_case=True).save_pretrained(hf)
    else:
        BertModel(BertConfig(**config)).save_pretrained(hf)
        BertTokenizerFast(vocab=vocab, do_lower_case=True).save_pretrained(hf)
    modules = [Transformer(str(hf), max_seq_length=max_seq_length), Pooling(config["hidden_size"])]
    if dense_to:
        modules.append(Dense(config["hidden_size"], dense_to, activation_function=torch.nn.Identity()))
    SentenceTransformer(modules=[*modules, Normalize()], device="cpu").save(str(out))
    return out


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def labelling_rate(model: Any, texts: list[str], batch_size: int, device: str, bf16: bool) -> float:
    """Teacher sentences/s (tokenisation included), after one warm-up batch."""
    import torch

    with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=bf16 and device.startswith("cuda")):
        model.encode(texts[:batch_size], batch_size=batch_size)
        _sync(device)
        t0 = time.perf_counter()
        model.encode(texts, batch_size=batch_size)
        _sync(device)
    return len(texts) / (time.perf_counter() - t0)


def training_rate(model: Any, texts: list[str], teacher_dim: int, batch_size: int, steps: int, device: str,
                  bf16: bool) -> dict[str, float]:
    """Student training (MSE to fixed targets, AdamW) steps/s and sentences/s under bf16 autocast."""
    import torch

    targets = torch.nn.functional.normalize(torch.randn(len(texts), teacher_dim), dim=-1).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step(i: int) -> None:
        idx = [(i * batch_size + j) % len(texts) for j in range(batch_size)]
        features = {k: v.to(device) for k, v in model.preprocess([texts[j] for j in idx]).items()
                    if isinstance(v, torch.Tensor)}
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=bf16 and device.startswith("cuda")):
            emb = model(features)["sentence_embedding"]
            loss = torch.nn.functional.mse_loss(emb.float(), targets[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step(0)
    _sync(device)
    t0 = time.perf_counter()
    for i in range(1, steps + 1):
        step(i)
    _sync(device)
    rate = steps / (time.perf_counter() - t0)
    return {"steps_per_s": rate, "sentences_per_s": rate * batch_size, "batch_size": batch_size}


def run_pipeline(root: Path, teacher: Path, student: Path, vocab: list[str], device: str, smoke: bool) -> dict:
    """edgedistill's own chain on the built models: distill (teacher labels, bf16 training on CUDA, checkpoints,
    dev selection) then export (ONNX, numerically checked against PyTorch)."""
    try:
        from edgedistill.pipeline import run_recipe
        from edgedistill.recipe import Recipe
    except ImportError as e:  # edgedistill's dependencies (pydantic, ...) are not installed here
        return {"skipped": f"edgedistill not importable: {e}"}
    n = 400 if smoke else 20000
    (root / "train.txt").write_text("\n".join(sentences(n, None, vocab, seed=1)) + "\n")
    (root / "heldout.txt").write_text("\n".join(sentences(64, None, vocab, seed=2)) + "\n")
    sts = root / "sts"
    sts.mkdir()
    rng = random.Random(3)
    for split in ("dev", "test"):
        a, b = sentences(100, None, vocab, seed=4), sentences(100, None, vocab, seed=5)
        (sts / f"sts-{split}.csv").write_text("".join(
            f"g\tsrc\tyear\t{i}\t{rng.uniform(0, 5):.2f}\t{x}\t{y}\n" for i, (x, y) in enumerate(zip(a, b, strict=True))))
    recipe = Recipe.model_validate({
        "name": "gpu-check", "teacher": str(teacher),
        "data": {"train": str(root / "train.txt"), "seed": 0},
        "evaluation": {"sts": str(sts), "heldout": str(root / "heldout.txt"), "heldout_sentences": 64,
                       "latency_sentences": 8},
        "stages": [
            {"type": "distill", "student": {"init": str(student), "projection_sentences": min(n, 2000)},
             "train_sentences": n, "epochs": 1, "batch_size": 32 if smoke else 256, "eval_steps": 5 if smoke else 20,
             "checkpoint_steps": 5 if smoke else 20, "validation_sentences": 0, "device": "auto",
             "losses": [{"type": "mse"}, {"type": "cross_kl"}, {"type": "kl"}], "projection_learning_rate": 1e-3},
            {"type": "export", "exporter": "torchscript", "optimize": "never", "timing_rounds": 1,
             "timing_sentences": 8},
        ],
    })
    t0 = time.perf_counter()
    records = run_recipe(recipe, root / "runs")
    distill, export = records[0], records[1]
    return {"wall_s": round(time.perf_counter() - t0, 1), "device": distill.metrics.get("device"),
            "train_sentences": distill.metrics.get("train_sentences"), "label_s": distill.metrics.get("label_s"),
            "train_s": distill.metrics.get("train_s"), "train_steps": distill.metrics.get("train_steps"),
            "best_step": distill.metrics.get("best_step"),
            "export_check": {k: export.metrics.get("validation", {}).get(k) for k in ("max_abs_diff", "min_cosine")},
            "artifact": str(export.artifact.path)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--smoke", action="store_true", help="tiny models and counts (seconds, any device)")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--skip-pipeline", action="store_true", help="throughput only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch
    from sentence_transformers import SentenceTransformer

    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here; use --device cpu --smoke")
    teacher_cfg, student_cfg = (SMOKE_TEACHER, SMOKE_STUDENT) if args.smoke else (TEACHER, STUDENT)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor() or "cpu",
        "torch": torch.__version__, "smoke": args.smoke, "teacher_config": teacher_cfg, "student_config": student_cfg,
    }
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        root = Path(tmp)
        teacher_path = build_model(root / "teacher", "mpnet", teacher_cfg, None, 128)
        student_path = build_model(root / "student", "bert", student_cfg, teacher_cfg["hidden_size"], 128)
        vocab = words(min(teacher_cfg["vocab_size"], student_cfg["vocab_size"]))
        teacher = SentenceTransformer(str(teacher_path), device=device)
        n, batch = (64, 16) if args.smoke else (4096, 256)
        labelling: dict[str, Any] = {}
        for name, lengths in (("mix", None), ("16", [16]), ("32", [32]), ("64", [64]), ("128", [126])):
            texts = sentences(n, lengths, vocab, seed=7)
            labelling[name] = {dtype: round(labelling_rate(teacher, texts, batch, device, dtype == "bf16"), 1)
                               for dtype in ("fp32", "bf16")}
            log.info("teacher labelling, %s tokens: %s sentences/s", name, labelling[name])
        report["labelling_sentences_per_s"] = labelling
        del teacher
        student = SentenceTransformer(str(student_path), device=device)
        texts = sentences(n, None, vocab, seed=8)
        report["training"] = {str(b): training_rate(student, texts, teacher_cfg["hidden_size"], b, 5 if args.smoke else 50,
                                                    device, True) for b in ((8, 32) if args.smoke else (64, 256))}
        log.info("student training: %s", report["training"])
        label_rate = labelling["mix"]["bf16"]
        train_rate = max(t["sentences_per_s"] for t in report["training"].values())
        report["projected_hours"] = {str(k): {"labelling": round(k / label_rate / 3600, 3),
                                              "training_per_epoch": round(k / train_rate / 3600, 3)}
                                     for k in (200_000, 1_000_000)}
        if not args.skip_pipeline:
            report["pipeline"] = run_pipeline(root, teacher_path, student_path, vocab, device, args.smoke)
            log.info("pipeline: %s", report["pipeline"])
    report["wall_s"] = round(time.perf_counter() - t_start, 1)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    log.info("wrote %s (%.0f s)", args.out, report["wall_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
