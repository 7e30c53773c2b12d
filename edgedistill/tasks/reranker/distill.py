"""Distil a cross-encoder teacher into a small cross-encoder.

The teacher scores every training pair once (cached by teacher content and inputs: ``seqcls.teacher_cache``):
(query, passage) pairs of data.pairs for ``mse``, and (query, relevant, contradicted) triplets for ``margin_mse``,
each query with ``hard_negatives`` more passages mined by BM25 from the other training queries' passages. The student (a
pretrained encoder with a new one-logit head, or a layer cut of the teacher) learns those scores, standardised
over the training pairs (the affine map is folded back into its head afterwards); the step that agrees best with
the teacher on held-apart training queries is kept.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.assets import resolve
from edgedistill.contract import StageContext, StageResult
from edgedistill.tasks.reranker.config import RerankerData, RerankerDistill
from edgedistill.tasks.reranker.data import labelled_pairs, load_groups, mined_negatives, split_groups, triplets

log = logging.getLogger(__name__)

Pair = tuple[str, str]
MIN_SPREAD = 1e-3  # teacher scores that vary less are learned as they are (not standardised)


def training_inputs(cfg: RerankerDistill, data: RerankerData, exclude: set[str],
                    seed: int) -> tuple[list[Pair], list[tuple[str, str, str]], list[Pair]]:
    """(mse pairs, margin_mse triplets, dev pairs), hard negatives mined by BM25 included."""
    groups = load_groups(data.pairs, exclude, "data.pairs")
    train_groups, dev_groups = split_groups(groups, cfg.dev_queries, seed)
    pairs = [(p.query, p.passage) for p in labelled_pairs(train_groups, cfg.pairs, seed)] if cfg.pairs else []
    trips = triplets(train_groups, cfg.triplets) if cfg.triplets else []
    if cfg.hard_negatives:
        queries = list(dict.fromkeys([q for q, _ in pairs] + [t[0] for t in trips]))
        mined = mined_negatives(train_groups, queries, cfg.hard_negatives)
        pairs += [(q, n) for q in dict.fromkeys(q for q, _ in pairs) for n in mined[q]]
        trips += [(q, pos, n) for q, pos, _ in list(trips) for n in mined[q]]
    dev = [(p.query, p.passage) for p in labelled_pairs(dev_groups, 10**9, seed)]
    return pairs, trips, dev


def run(cfg: RerankerDistill, ctx: StageContext, data: RerankerData, exclude: set[str]) -> StageResult:
    import torch

    from edgedistill.tasks.reranker.losses import logit_mse, margin_mse
    from edgedistill.tasks.seqcls.models import build_classifier, read_sidecar, require_seqcls
    from edgedistill.tasks.seqcls.teacher_cache import teacher_logits
    from edgedistill.tasks.seqcls.training import TrainSettings, train

    require_seqcls(Path(ctx.teacher), "teacher", 1, "a cross-encoder (one relevance logit per pair)")
    seed = data.seed if cfg.seed is None else cfg.seed
    pairs, trips, dev = training_inputs(cfg, data, exclude, seed)
    # one teacher call over every distinct pair: one cache entry, nothing scored twice
    distinct = list(dict.fromkeys(pairs + [(q, p) for q, pos, neg in trips for p in (pos, neg)] + dev))
    t0 = time.perf_counter()
    scores = teacher_logits(Path(ctx.teacher), distinct, batch_size=cfg.teacher_batch_size, device=ctx.device,
                            max_seq_length=cfg.max_seq_length, num_labels=1, bf16=cfg.cpu_bf16)[:, 0]
    label_s = time.perf_counter() - t0
    index = {pair: i for i, pair in enumerate(distinct)}
    # The student learns the teacher's scores standardised over the training pairs, and the affine map is folded
    # back into its head after training: a teacher whose logits barely vary (a std of 0.035 was measured) still
    # gives errors of unit size, and the saved student speaks the teacher's scale.
    center, spread = float(scores.mean()), float(scores.std())
    if spread < MIN_SPREAD:  # blown up to unit size, its float noise would be what the student learns
        log.warning("the teacher's scores barely vary (std %.2g over %d pairs): it does not rank these pairs; the "
                    "student learns its raw scores", spread, len(scores))
        center, spread = 0.0, 1.0
    scores = (scores - center) / spread
    teacher = torch.tensor(scores, dtype=torch.float32, device=ctx.device)
    pair_rows = torch.tensor([index[p] for p in pairs], dtype=torch.long, device=ctx.device)
    trip_rows = torch.tensor([[index[(q, pos)], index[(q, neg)]] for q, pos, neg in trips], dtype=torch.long,
                             device=ctx.device).reshape(-1, 2)
    dev_teacher = scores[[index[p] for p in dev]] if dev else None

    init = ctx.teacher if cfg.student.init == "teacher" else resolve(cfg.student.init)
    torch.manual_seed(seed)  # the new head's initial weights, whatever ran before in this process
    student = build_classifier(init, 1, labels=["relevance"], layers=cfg.student.layers,
                               max_seq_length=cfg.max_seq_length, device=ctx.device, field="stages.distill.student.init")
    weights = {loss.type: loss.weight for loss in cfg.losses}
    n = max(len(pairs) if "mse" in weights else 0, len(trips) if "margin_mse" in weights else 0)
    last: dict[str, float] = {}

    def step_loss(idx: np.ndarray, progress: float) -> Any:
        total = torch.zeros((), device=ctx.device)
        if "mse" in weights:
            rows = [pairs[i % len(pairs)] for i in idx]
            target = teacher[pair_rows[torch.as_tensor(idx % len(pairs), device=ctx.device)]]
            term = logit_mse(student.forward(rows).logits[:, 0], target)
            last["mse"] = float(term.detach())
            total = total + weights["mse"] * term
        if "margin_mse" in weights:
            chosen = [trips[i % len(trips)] for i in idx]
            flat = [(q, p) for q, pos, neg in chosen for p in (pos, neg)]
            logits = student.forward(flat).logits[:, 0].view(-1, 2)
            target = teacher[trip_rows[torch.as_tensor(idx % len(trips), device=ctx.device)]]
            term = margin_mse(logits[:, 0], logits[:, 1], target[:, 0], target[:, 1])
            last["margin_mse"] = float(term.detach())
            total = total + weights["margin_mse"] * term
        return total

    def dev_score() -> float:  # agreement with the teacher: minus the mean squared logit error
        got = student.logits(dev, batch_size=cfg.teacher_batch_size)[:, 0]
        return -float(np.mean((got - dev_teacher) ** 2))

    settings = TrainSettings(epochs=cfg.epochs, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                             warmup_ratio=cfg.warmup_ratio, weight_decay=cfg.weight_decay, seed=seed,
                             device=ctx.device, eval_steps=cfg.eval_steps, checkpoint_steps=cfg.checkpoint_steps,
                             cpu_bf16=cfg.cpu_bf16)
    checkpoints = ctx.work_dir.parent / (".ckpt-" + ctx.work_dir.name.removeprefix(".tmp-"))
    result = train(student.model, n, step_loss, settings, evaluate=dev_score if dev else None,
                   checkpoint_dir=checkpoints, what="distilling the reranker", loss_terms=lambda: dict(last))
    fold_affine(student.model, spread, center)
    activation = read_sidecar(Path(ctx.teacher)).get("activation", "sigmoid")
    student.save(ctx.artifact_dir, text_inputs="text_pair", extra={"task": "reranker", "activation": activation})
    shutil.rmtree(checkpoints, ignore_errors=True)
    return StageResult(metrics={
        **result.stats(), "train_pairs": len(pairs), "train_triplets": len(trips), "dev_pairs": len(dev),
        "teacher_pairs_scored": len(distinct), "label_s": round(label_s, 1),
        "params": sum(p.numel() for p in student.model.parameters()), "losses": weights, "device": ctx.device,
        "teacher_score_mean": center, "teacher_score_std": spread,
    })


def fold_affine(model: Any, scale: float, shift: float) -> None:
    """Make the model output ``scale * logit + shift``: the head's last one-output linear layer absorbs it."""
    import torch

    heads = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == 1]
    if not heads:
        raise ValueError("no one-output linear layer to fold the teacher's score scale into")
    with torch.no_grad():
        heads[-1].weight.mul_(scale)
        if heads[-1].bias is None:
            raise ValueError("the relevance head has no bias to fold the teacher's score offset into")
        heads[-1].bias.mul_(scale).add_(shift)
