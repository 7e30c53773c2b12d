"""Distil: a small student learns to reproduce the teacher's sentence embeddings (MSE)."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgedistill.assets import cache_dir, resolve
from edgedistill.data import fingerprint, load_sentences, sample
from edgedistill.encoders import TorchEncoder
from edgedistill.errors import RecipeError
from edgedistill.recipe import DistillStage, StudentConfig
from edgedistill.runner import StageContext, StageResult, content_key

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)


def teacher_labels(teacher: Path, sentences: list[str], batch_size: int, device: str) -> np.ndarray:
    """The teacher's normalised embeddings of ``sentences``, computed once and cached on disk."""
    key = content_key("labels", str(teacher), fingerprint(sentences))
    path = cache_dir() / "labels" / f"{key}.npy"
    if path.is_file():
        log.info("teacher labels: cached (%s)", path)
        return np.load(path)
    from sentence_transformers import SentenceTransformer

    log.info("teacher labels: encoding %d sentences on %s (cached afterwards)", len(sentences), device)
    t0 = time.perf_counter()
    model = SentenceTransformer(str(teacher), device=device)
    labels = model.encode(sentences, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                          show_progress_bar=True).astype(np.float32)
    log.info("teacher labels: %.0f sentences/s", len(sentences) / (time.perf_counter() - t0))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{key}.{os.getpid()}.npy")
    np.save(tmp, labels)
    os.replace(tmp, path)
    return labels


def keep_layers(model: SentenceTransformer, layers: list[int]) -> None:
    """Layer reduction: keep only the chosen transformer layers (BERT and MPNet families)."""
    import torch

    auto = model[0].auto_model
    encoder_layers = auto.encoder.layer
    if layers[-1] >= len(encoder_layers):
        raise RecipeError(f"stages.distill.student.layers: {layers} asks for layer {layers[-1]} but the "
                          f"initial model has {len(encoder_layers)} (0..{len(encoder_layers) - 1})")
    auto.encoder.layer = torch.nn.ModuleList([encoder_layers[i] for i in layers])
    auto.config.num_hidden_layers = len(layers)


def ridge_projection(x: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Least squares ``y ~ x @ w + b`` with an L2 penalty on w.

    Plain least squares is ill-conditioned here: pooled LayerNorm outputs are nearly collinear with the
    bias column, giving huge weights that any later update of the body wrecks. The ridge term keeps the
    weights small, so the projection starts well and trains stably.
    """
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ xc + lam * len(x) * np.eye(x.shape[1])
    w = np.linalg.solve(gram, xc.T @ yc)
    b = y_mean - x_mean @ w
    return w.astype(np.float32), b.astype(np.float32)


def build_student(cfg: StudentConfig, max_seq_length: int, teacher_dim: int, sentences: list[str],
                  labels: np.ndarray, device: str) -> tuple[SentenceTransformer, dict]:
    """Initial student: a pretrained model, optionally layer-reduced, projected into the teacher's space."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling

    model = SentenceTransformer(str(resolve(cfg.init)), device=device)
    info: dict = {"init_layers": len(model[0].auto_model.encoder.layer)}
    if cfg.layers is not None:
        keep_layers(model, cfg.layers)
    model.max_seq_length = max_seq_length
    body = [m for m in model if not isinstance(m, Normalize)]
    dim = int(model.get_embedding_dimension())
    if dim != teacher_dim:
        if cfg.projection == "none":
            raise RecipeError(f"stages.distill.student.projection: the student gives {dim}-d embeddings and the "
                              f"teacher {teacher_dim}-d; set projection: ridge (or random)")
        dense = Dense(dim, teacher_dim, activation_function=torch.nn.Identity())
        if cfg.projection == "ridge":
            n = min(cfg.ridge_sentences, len(sentences))
            pooled = SentenceTransformer(modules=body, device=device).encode(
                sentences[:n], batch_size=64, convert_to_numpy=True, normalize_embeddings=False)
            w, b = ridge_projection(pooled.astype(np.float64), labels[:n].astype(np.float64), cfg.ridge_lambda)
            with torch.no_grad():
                dense.linear.weight.copy_(torch.from_numpy(w.T))
                dense.linear.bias.copy_(torch.from_numpy(b))
            info["projection_weight_norm"] = float(np.linalg.norm(w))
        body.append(dense)
    if not any(isinstance(m, Pooling) for m in body):
        raise RecipeError(f"stages.distill.student.init: {cfg.init} has no pooling module; "
                          "use a sentence-transformers model")
    student = SentenceTransformer(modules=[*body, Normalize()], device=device)
    info["params"] = sum(p.numel() for p in student.parameters())
    return student, info


def train(student: SentenceTransformer, sentences: list[str], labels: np.ndarray, cfg: DistillStage,
          out: Path, seed: int, device: str) -> dict:
    """MSE between student and teacher embeddings with the sentence-transformers trainer."""
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.losses import MSELoss

    dataset = Dataset.from_dict({"sentence": sentences, "label": [row for row in labels]})
    cuda = device.startswith("cuda")
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        warmup_ratio=cfg.warmup_ratio,
        lr_scheduler_type="linear",
        save_strategy="no",
        logging_steps=50,
        report_to="none",
        seed=seed,
        use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        dataloader_drop_last=False,
        disable_tqdm=False,
    )
    trainer = SentenceTransformerTrainer(model=student, args=args, train_dataset=dataset, loss=MSELoss(student))
    t0 = time.perf_counter()
    output = trainer.train()
    return {"train_s": round(time.perf_counter() - t0, 1), "train_loss": float(output.training_loss),
            "train_steps": int(output.global_step)}


def run(cfg: DistillStage, ctx: StageContext) -> StageResult:
    recipe = ctx.recipe
    pool = load_sentences(recipe.data.train)
    sentences = sample(pool, cfg.train_sentences, seed=recipe.data.seed)
    if len(sentences) < cfg.train_sentences:
        log.warning("data.train has only %d sentences (train_sentences asks %d)", len(sentences),
                    cfg.train_sentences)
    t0 = time.perf_counter()
    labels = teacher_labels(ctx.teacher, sentences, cfg.teacher_batch_size, ctx.device)
    label_s = time.perf_counter() - t0

    student, info = build_student(cfg.student, cfg.max_seq_length, labels.shape[1], sentences, labels, ctx.device)
    before = ctx.evaluator.quality(TorchEncoder(student))
    log.info("student before training: %s", before)
    stats = train(student, sentences, labels, cfg, ctx.work_dir / "checkpoints", recipe.data.seed, ctx.device)
    shutil.rmtree(ctx.work_dir / "checkpoints", ignore_errors=True)
    student.save(str(ctx.artifact_dir))
    return StageResult(metrics={
        **info, **stats, "train_sentences": len(sentences), "label_s": round(label_s, 1),
        "before_training": before, "device": ctx.device,
    })
