"""The distillation training loop: single process or data-parallel under torchrun (DDP).

Written here rather than with the sentence-transformers trainer because distillation needs things its
collator and samplers don't give: several label tensors per sentence (embeddings and pooled hidden states),
an online teacher for attention maps, learned loss projections in the optimiser, and a global batch order
that is identical with 1 or N processes, so a DDP run reproduces the single-process run.

Run as ``torchrun --nproc_per_node N -m edgedistill.tasks.embedding.training JOB.json`` for data parallelism.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgedistill.tasks.embedding.losses import Batch, build_loss

log = logging.getLogger(__name__)

FITTED = "after-fit"  # beside the output folder: the student after its projection fit (the stage evaluates it)


@dataclass
class TrainJob:
    """Everything a (possibly separate) training process needs, as JSON-friendly paths and values."""

    student_dir: str
    output_dir: str
    checkpoint_dir: str
    sentences_file: str  # one sentence per line
    labels_file: str  # teacher embeddings [N, D] (.npy)
    config: dict[str, Any]  # DistillStage.model_dump()
    seed: int
    device: str
    hidden_file: str | None = None  # pooled teacher hidden states [N, L, H] (.npy)
    triplets_file: str | None = None  # [T, 3] sentence indices (.npy)
    margins_file: str | None = None  # [T] a cross-encoder's margins for margin_mse (.npy)
    teacher_dir: str | None = None  # for attention distillation (online teacher)
    dev_sts: dict[str, list] | None = None  # {"first", "second", "scores"} for evaluation during training
    # {"queries", "corpus", "relevant" (corpus indices per query), "labels_file" (teacher [Q + C, D] .npy)}
    dev_retrieval: dict[str, Any] | None = None

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> TrainJob:
        return cls(**json.loads(path.read_text()))


def to_device(features: dict[str, Any], device: Any) -> dict[str, Any]:
    """Move the tensors of a preprocessed batch to a device (other entries, like 'modality', stay)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class StudentForward(torch.nn.Module):
    """Student + loss in one module, so DDP sees every trainable parameter (loss projections included)."""

    def __init__(self, student: torch.nn.Module, loss: torch.nn.Module) -> None:
        super().__init__()
        self.student = student
        self.loss = loss

    def encode(self, texts: list[str], internals: bool = False) -> tuple[torch.Tensor, Any, Any, torch.Tensor]:
        device = next(self.student.parameters()).device
        features = to_device(self.student.preprocess(texts), device)
        if not internals:
            return self.student(features)["sentence_embedding"], None, None, features["input_ids"]
        transformer = self.student[0]
        out = transformer.auto_model(input_ids=features["input_ids"], attention_mask=features["attention_mask"],
                                     output_hidden_states=True, output_attentions="attentions" in self.loss.needs)
        features["token_embeddings"] = out.last_hidden_state
        for module in list(self.student)[1:]:
            features = module(features)
        hidden = tuple(mean_pool(h, features["attention_mask"]) for h in out.hidden_states[1:])
        return features["sentence_embedding"], hidden, out.attentions, features["input_ids"]

    def forward(self, texts: list[str], targets: torch.Tensor, progress: float, teacher_hidden: Any = None,
                teacher: Any = None, triplets: list[str] | None = None,
                triplet_targets: torch.Tensor | None = None, triplet_margins: torch.Tensor | None = None,
                bank: torch.Tensor | None = None) -> torch.Tensor:
        needs = self.loss.needs
        internals = bool({"hidden", "attentions"} & needs)
        emb, hidden, attentions, input_ids = self.encode(texts, internals)
        batch = Batch(embeddings=emb, targets=targets, student_hidden=hidden, teacher_hidden=teacher_hidden,
                      student_attentions=attentions, bank=bank)
        if "attentions" in needs:
            with torch.no_grad():
                mask = (input_ids != self.student[0].tokenizer.pad_token_id).long()
                batch.teacher_attentions = teacher(input_ids=input_ids, attention_mask=mask,
                                                   output_attentions=True).attentions
        if triplets is not None:
            batch.triplet_embeddings = self.encode(triplets)[0].view(-1, 3, emb.shape[-1])
            batch.triplet_targets = triplet_targets
            batch.triplet_margins = triplet_margins
        return self.loss(batch, progress)


def _dist() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend=backend)
    rank = torch.distributed.get_rank() if world > 1 else 0
    return rank, world


def sts_dev_spearman(student: torch.nn.Module, sts: dict[str, list]) -> float:
    from edgedistill.data import StsPairs
    from edgedistill.tasks.embedding.encoders import TorchEncoder
    from edgedistill.tasks.embedding.evaluate import sts_spearman

    was_training = student.training
    student.eval()
    with torch.no_grad():
        score = sts_spearman(TorchEncoder(student), StsPairs(sts["first"], sts["second"], sts["scores"]), 64)
    student.train(was_training)
    return score


def validation_cosine(student: torch.nn.Module, sentences: list[str], targets: torch.Tensor) -> float:
    """Mean cosine between the student's and the teacher's embeddings of held-out training sentences."""
    was_training = student.training
    student.eval()
    with torch.no_grad():
        emb = student.encode(sentences, batch_size=64, convert_to_tensor=True, normalize_embeddings=True)
    student.train(was_training)
    return float((emb.cpu() * targets).sum(-1).mean())


def dev_retrieval_metrics(student: torch.nn.Module, dev: dict[str, Any], teacher: np.ndarray,
                          per_item: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """On the dev retrieval set: nDCG@10 of student queries against the teacher-built index (cross), against the
    student's own index, and the mean cosine to the teacher over every dev sentence (``per_item`` receives the
    per-query cross nDCG and per-sentence cosines, for bootstrap intervals)."""
    from edgedistill.tasks.embedding.evaluate import ndcg_at_10, ndcg_per_query

    was_training = student.training
    student.eval()
    with torch.no_grad():
        emb = student.encode([*dev["queries"], *dev["corpus"]], batch_size=64, convert_to_numpy=True,
                             normalize_embeddings=True)
    student.train(was_training)
    n, relevant = len(dev["queries"]), [set(r) for r in dev["relevant"]]
    out = {"dev_ndcg10": ndcg_at_10(emb[:n], emb[n:], relevant)}
    if emb.shape[1] == teacher.shape[1]:  # not with projection: pca (the student is not in the teacher's space)
        cosines, cross = (emb * teacher).sum(-1), ndcg_per_query(emb[:n], teacher[n:], relevant)
        out["dev_teacher_cosine"], out["dev_cross_ndcg10"] = float(cosines.mean()), float(cross.mean())
        if per_item is not None:
            per_item.update(dev_teacher_cosine=cosines, dev_cross_ndcg10=cross)
    return out


def objective(entry: dict[str, float], name: str) -> float | None:
    """The declared dev objective of one evaluation (higher is better); None when it was not measured."""
    if name == "sts_dev":
        return entry.get("sts_dev")
    if name == "cross_ndcg":
        return entry.get("dev_cross_ndcg10")
    if name == "teacher_cosine":
        return entry.get("dev_teacher_cosine")
    if "dev_cross_ndcg10" not in entry or "dev_teacher_cosine" not in entry:
        return None
    return entry["dev_cross_ndcg10"] / 100 + entry["dev_teacher_cosine"]


def bank_size(cfg: Any) -> int:
    """How many extra teacher embeddings cross_kl ranks each step (0: the batch's own only)."""
    return max((spec.bank for spec in cfg.losses), default=0)


def draw_bank(labels: torch.Tensor, rows: np.ndarray, size: int, seed: int, step: int) -> torch.Tensor:
    """``size`` teacher embeddings of training sentences (``rows``), the same for a step whatever ran before it
    (a resumed run and every DDP process draw alike). A draw may repeat a batch sentence: the duplicate enters the
    student's and the teacher's distributions alike."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return labels[rows[torch.randint(len(rows), (size,), generator=generator).numpy()]]


def fit_projection(student: Any, cfg: Any, sentences: list[str], labels: np.ndarray,
                   seed: int, device: str) -> dict:
    """Fit the student's projection alone on its frozen pooled embeddings with the stage's embedding losses.

    The body's pooled embeddings of every training sentence are computed once, so an epoch costs matrix products
    rather than transformer passes. The rotation (or ridge map) fitted before aligns the two spaces on average;
    this fit spends the projection's freedom on what the losses ask for (e.g. ranking the teacher's embeddings,
    cross_kl), before the body trains.
    """
    import torch.nn.functional as F
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense

    from edgedistill.stages.configs import EMBEDDING_LOSSES

    modules = list(student)  # build_student appended the projection: the last Dense, before Normalize
    dense_at = max((i for i, m in enumerate(modules) if isinstance(m, Dense)), default=None)
    if dense_at is None:
        raise ValueError("the student has no projection to fit (build_student refuses projection_fit_epochs then)")
    t0 = time.perf_counter()
    body = SentenceTransformer(modules=modules[:dense_at], device=device)
    pooled = body.encode(sentences, batch_size=64, convert_to_tensor=True, normalize_embeddings=False).float()
    targets = torch.from_numpy(labels).float().to(pooled.device)
    loss = build_loss([spec for spec in cfg.losses if spec.type in EMBEDDING_LOSSES], 0, 0, 0)
    dense = modules[dense_at]
    optimizer = torch.optim.Adam(dense.parameters(), lr=cfg.student.projection_fit_learning_rate)
    generator = torch.Generator().manual_seed(seed)
    epochs = cfg.student.projection_fit_epochs
    history, bank, all_rows = [], bank_size(cfg), np.arange(len(targets))
    for epoch in range(epochs):
        order = torch.randperm(len(pooled), generator=generator).to(pooled.device)
        total, batches = 0.0, 0
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            if len(idx) < 2:  # the relational losses need another sentence in the batch
                continue
            projected = dense({"sentence_embedding": pooled[idx]})["sentence_embedding"]
            extra = draw_bank(targets, all_rows, bank, seed, epoch * len(order) + start) if bank else None
            value = loss(Batch(embeddings=F.normalize(projected, dim=-1), targets=targets[idx], bank=extra), 0.0)
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            total, batches = total + float(value.detach()), batches + 1
        history.append(total / max(batches, 1))
    seconds = time.perf_counter() - t0
    log.info("projection fitted on frozen embeddings of %d sentences: %d epochs in %.1fs, loss %.5g -> %.5g",
             len(sentences), epochs, seconds, history[0], history[-1])
    return {"projection_fit_s": round(seconds, 1), "projection_fit_loss_first": history[0],
            "projection_fit_loss_last": history[-1]}


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def parameter_groups(module: StudentForward, cfg: Any) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices only; the projection into the teacher's space (the student's last
    Dense module) at its own learning rate when ``projection_learning_rate`` is set."""
    from sentence_transformers.sentence_transformer.modules import Dense

    dense = [m for m in module.student if isinstance(m, Dense)]
    projection = {id(p) for p in dense[-1].parameters()} if dense and cfg.projection_learning_rate else set()
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for p in module.parameters():
        if p.requires_grad:
            groups.setdefault((id(p) in projection, p.ndim > 1), []).append(p)
    return [{"params": params, "weight_decay": cfg.weight_decay if matrix else 0.0,
             "lr": cfg.projection_learning_rate if proj else cfg.learning_rate}
            for (proj, matrix), params in sorted(groups.items())]


def train(job: TrainJob) -> dict[str, Any]:
    """Train the student in ``job.student_dir`` and save it to ``job.output_dir`` (rank 0)."""
    from transformers import get_linear_schedule_with_warmup

    from edgedistill.recipe import DistillStage
    from edgedistill.trust import load_sentence_transformer

    cfg = DistillStage.model_validate(job.config)
    rank, world = _dist()
    device = job.device if world == 1 or not job.device.startswith("cuda") else f"cuda:{rank}"
    torch.manual_seed(job.seed)
    sentences = Path(job.sentences_file).read_text(encoding="utf-8").split("\n")
    labels = torch.from_numpy(np.load(job.labels_file))
    hidden_targets = torch.from_numpy(np.load(job.hidden_file)).float() if job.hidden_file else None
    triplets = np.load(job.triplets_file) if job.triplets_file else None
    margins = torch.from_numpy(np.load(job.margins_file)).float() if job.margins_file else None
    train_idx = np.arange(len(sentences))
    val_idx = np.array([], dtype=np.int64)
    if cfg.validation_sentences and len(sentences) > 4 * cfg.validation_sentences:
        shuffled = np.random.default_rng(job.seed).permutation(len(sentences))
        if triplets is not None:  # triplet sentences stay in training
            shuffled = shuffled[~np.isin(shuffled, triplets.reshape(-1))]
        val_idx = np.sort(shuffled[:cfg.validation_sentences])
        train_idx = np.setdiff1d(train_idx, val_idx)

    attention = any(loss.type == "attention" for loss in cfg.losses)
    student = load_sentence_transformer(job.student_dir, device)
    teacher = None
    if attention:
        student[0].auto_model.set_attn_implementation("eager")
        teacher_st = load_sentence_transformer(job.teacher_dir, device)
        teacher = teacher_st[0].auto_model.eval()
        teacher.set_attn_implementation("eager")
    if cfg.student.dropout is not None:
        for layer in student.modules():
            if isinstance(layer, torch.nn.Dropout):
                layer.p = cfg.student.dropout
    student_hidden = student[0].auto_model.config.hidden_size
    teacher_hidden = hidden_targets.shape[-1] if hidden_targets is not None else student_hidden
    loss = build_loss(cfg.losses, labels.shape[1], student_hidden, teacher_hidden).to(device)
    module = StudentForward(student, loss).to(device)
    model: torch.nn.Module = module
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(module, find_unused_parameters=True)

    if cfg.batch_size % (world * cfg.gradient_accumulation):
        raise ValueError(f"batch_size {cfg.batch_size} must divide into {world} processes x "
                         f"{cfg.gradient_accumulation} accumulation steps")
    micro = cfg.batch_size // (world * cfg.gradient_accumulation)
    steps_per_epoch = math.ceil(len(train_idx) / cfg.batch_size)
    total_steps = max(1, math.ceil(steps_per_epoch * cfg.epochs))
    optimizer = torch.optim.AdamW(parameter_groups(module, cfg), lr=cfg.learning_rate)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    from edgedistill.precision import autocast

    use_bf16 = cfg.bf16 if device.startswith("cuda") else cfg.cpu_bf16

    ckpt_dir = Path(job.checkpoint_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = ckpt_dir / "latest.pt"
    step, best_score, best_step, best_state, history = 0, -math.inf, 0, None, []
    try:  # a damaged checkpoint is discarded (training starts over), never unpickled as arbitrary objects
        state = torch.load(ckpt_path, map_location=device, weights_only=True) if ckpt_path.is_file() else None
    except Exception as e:  # noqa: BLE001
        log.warning("discarding the unreadable checkpoint %s (%s); training from the start", ckpt_path, e)
        state = None
    if state is not None:
        module.load_state_dict(state["module"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, best_score, best_step, history = state["step"], state["best_score"], state["best_step"], state["history"]
        best_state = state.get("best_state")
        if "rng" in state:  # the same dropout masks as an uninterrupted run
            torch.set_rng_state(state["rng"])
        log.info("resuming training from step %d/%d (%s)", step, total_steps, ckpt_path)

    bank = bank_size(cfg)
    dev_teacher = np.load(job.dev_retrieval["labels_file"]) if job.dev_retrieval else None
    per_item: dict[int, dict[str, np.ndarray]] = {}  # step -> per-query / per-sentence dev values (this process)

    def evaluate(at_step: int) -> None:
        nonlocal best_score, best_step, best_state
        if rank != 0 or (job.dev_sts is None and job.dev_retrieval is None):
            return
        entry: dict[str, Any] = {"step": at_step, **{k: v for k, v in loss.last.items()}}
        if job.dev_sts is not None:
            entry["sts_dev"] = sts_dev_spearman(student, job.dev_sts)
        if job.dev_retrieval is not None:
            per_item[at_step] = {}
            entry.update(dev_retrieval_metrics(student, job.dev_retrieval, dev_teacher, per_item[at_step]))
        if len(val_idx):
            entry["val_teacher_cosine"] = validation_cosine(student, [sentences[i] for i in val_idx], labels[val_idx])
        score = objective(entry, cfg.dev.objective)
        floor = cfg.dev.sts_floor
        start_sts = history[0].get("sts_dev") if history else entry.get("sts_dev")
        qualifies = (score is not None and (floor is None or cfg.dev.objective == "sts_dev" or start_sts is None
                                            or entry.get("sts_dev", math.inf) >= start_sts - floor))
        entry["objective"], entry["qualifies"] = score, qualifies
        history.append(entry)
        log.info("step %d/%d: %s", at_step, total_steps,
                 ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in entry.items()
                           if k != "step"))
        if qualifies and score > best_score:
            best_score, best_step = score, at_step
            if cfg.select_best:
                best_state = {k: v.detach().cpu().clone() for k, v in student.state_dict().items()}

    fit_stats: dict[str, Any] = {}
    if state is None and cfg.student.projection_fit_epochs:
        evaluate(-1)  # the starting checkpoint as built; its STS-b dev is the floor's reference
        fit_stats = fit_projection(student, cfg, [sentences[i] for i in train_idx], labels[train_idx].numpy(),
                                   job.seed, device)
        if world > 1:  # every process fits the same way; rank 0's result is the one all keep
            for p in module.parameters():
                torch.distributed.broadcast(p.data, src=0)
        if rank == 0:
            student.save(str(Path(job.output_dir).parent / FITTED))
    if step == 0 and cfg.eval_steps:
        evaluate(0)
    module.train()
    t0 = time.perf_counter()
    progress_bar = None
    if rank == 0:
        from edgedistill.progress import Progress

        progress_bar = Progress("training", total_steps, "steps", initial=step)
    while step < total_steps:
        epoch, offset = divmod(step, steps_per_epoch)
        generator = torch.Generator().manual_seed(job.seed + epoch)
        order = train_idx[torch.randperm(len(train_idx), generator=generator).numpy()]
        global_batch = order[offset * cfg.batch_size:(offset + 1) * cfg.batch_size]
        optimizer.zero_grad(set_to_none=True)
        for acc in range(cfg.gradient_accumulation):
            start = (acc * world + rank) * micro
            idx = global_batch[start:start + micro]
            if len(idx) == 0:
                continue
            kwargs: dict[str, Any] = {"teacher": teacher}
            if bank:
                kwargs["bank"] = draw_bank(labels, train_idx, bank, job.seed, step).to(device)
            if hidden_targets is not None:
                kwargs["teacher_hidden"] = hidden_targets[idx].to(device)
            if triplets is not None:
                t_idx = np.arange(step * cfg.triplet_batch_size, (step + 1) * cfg.triplet_batch_size) % len(triplets)
                rows = triplets[t_idx].reshape(-1)
                kwargs["triplets"] = [sentences[i] for i in rows]
                kwargs["triplet_targets"] = labels[rows].view(len(t_idx), 3, -1).to(device)
                if margins is not None:
                    kwargs["triplet_margins"] = margins[t_idx].to(device)
            with autocast(device, use_bf16):
                value = model([sentences[i] for i in idx], labels[idx].to(device), step / total_steps, **kwargs)
            (value / cfg.gradient_accumulation).backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        step += 1
        if progress_bar is not None:
            progress_bar.update(1, note=f"loss {value.item():.5f}")
        if cfg.eval_steps and step % cfg.eval_steps == 0 and step < total_steps:
            evaluate(step)
        if cfg.checkpoint_steps and step % cfg.checkpoint_steps == 0 and step < total_steps and rank == 0:
            _save_checkpoint(ckpt_path, {"module": module.state_dict(), "optimizer": optimizer.state_dict(),
                                         "scheduler": scheduler.state_dict(), "step": step, "history": history,
                                         "best_score": best_score, "best_step": best_step,
                                         "best_state": best_state, "rng": torch.get_rng_state()})
    if progress_bar is not None:
        progress_bar.close()
    evaluate(step)
    stats: dict[str, Any] = {"train_s": round(time.perf_counter() - t0, 1), "train_steps": step,
                             "processes": world, "final_loss_terms": dict(loss.last), "history": history,
                             **fit_stats}
    if rank == 0:
        if cfg.select_best and best_state is not None:
            student.load_state_dict(best_state)
            kept = next(h for h in history if h["step"] == best_step)
            stats.update(best_step=best_step, best_objective=best_score, objective_name=cfg.dev.objective,
                         best_sts_dev=kept.get("sts_dev"))
            start = history[0]["step"] if history else 0  # -1: before the projection fit
            if per_item.get(start) and per_item.get(best_step):
                from edgedistill.tasks.embedding.evaluate import paired_bootstrap_ci

                # Sampling noise of the dev gain: kept step vs the start on the same queries / sentences.
                stats["dev_gain_ci95"] = {k: paired_bootstrap_ci(per_item[start][k], per_item[best_step][k])
                                          for k in per_item[start]}
            log.info("keeping the best checkpoint: step %d (%s %.4f)", best_step, cfg.dev.objective, best_score)
        student.save(job.output_dir)
        Path(job.output_dir, "train_stats.json").write_text(json.dumps(stats, indent=2))
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return stats


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("WORLD_SIZE", "1"))))
    train(TrainJob.load(Path(sys.argv[1])))


if __name__ == "__main__":
    main()
