"""Fine-tune the teacher cross-encoder on labelled pairs (a pretrained encoder gets a one-logit head).

binary: SNLI-style pairs, relevant (entailment) 1 vs not (neutral, contradiction) 0, binary cross-entropy;
regression: STS-b *train* pairs with score / 5 as the soft target (sentence-transformers' STS-b cross-encoder
recipe). The best step by a dev split of the *training* data is kept; held-out evaluation text never enters.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgedistill.contract import StageContext, StageResult
from edgedistill.errors import RecipeError
from edgedistill.tasks.reranker.config import RerankerData, RerankerFinetune
from edgedistill.tasks.reranker.data import LabelledPair, labelled_pairs, load_groups, split_groups, sts_pairs

log = logging.getLogger(__name__)

ACTIVATION = "sigmoid"  # both objectives train logits through a sigmoid (BCE)


def pairwise_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """P(score of a relevant pair > score of a non-relevant one), ties half (x100)."""
    from scipy.stats import rankdata

    pos = labels >= 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(scores)
    return float(100 * (ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def training_pairs(cfg: RerankerFinetune, data: RerankerData, exclude: set[str],
                   seed: int) -> tuple[list[LabelledPair], list[LabelledPair]]:
    """(train, dev) labelled pairs for the objective."""
    if cfg.objective == "regression":
        if not data.sts:
            raise RecipeError("stages.finetune.objective: regression trains on STS-b scores; set data.sts "
                              "(e.g. stsb), or use objective: binary with data.pairs")
        pairs = sts_pairs(data.sts, cfg.pairs + 8 * cfg.dev_queries, seed, exclude)
        dev = 8 * cfg.dev_queries
        return pairs[dev:], pairs[:dev]
    groups = load_groups(data.pairs, exclude, "data.pairs")
    train_groups, dev_groups = split_groups(groups, cfg.dev_queries, seed)
    train = labelled_pairs(train_groups, cfg.pairs, seed)
    if not train or not any(p.label >= 0.5 for p in train) or all(p.label >= 0.5 for p in train):
        raise RecipeError(f"data.pairs: {data.pairs} gives {len(train)} training pairs without both relevant and "
                          "non-relevant ones; finetuning needs labelled pairs of both kinds")
    return train, labelled_pairs(dev_groups, 10**9, seed)


def run(cfg: RerankerFinetune, ctx: StageContext, data: RerankerData, exclude: set[str]) -> StageResult:
    import torch

    from edgedistill.tasks.reranker.losses import binary_cross_entropy
    from edgedistill.tasks.seqcls.models import build_classifier
    from edgedistill.tasks.seqcls.training import TrainSettings, train

    seed = data.seed if cfg.seed is None else cfg.seed
    pairs, dev = training_pairs(cfg, data, exclude, seed)
    torch.manual_seed(seed)  # the new head's initial weights, whatever ran before in this process
    clf = build_classifier(ctx.input.path, 1, labels=["relevance"], max_seq_length=cfg.max_seq_length,
                           device=ctx.device, field="teacher")
    targets = torch.tensor([p.label for p in pairs], dtype=torch.float32, device=ctx.device)
    dev_items = [(p.query, p.passage) for p in dev]
    dev_labels = np.array([p.label for p in dev], dtype=np.float32)

    def step_loss(idx: np.ndarray, progress: float) -> Any:
        logits = clf.forward([(pairs[i].query, pairs[i].passage) for i in idx]).logits[:, 0]
        return binary_cross_entropy(logits, targets[torch.as_tensor(idx, device=ctx.device)])

    def dev_score() -> float:
        scores = clf.logits(dev_items, batch_size=cfg.teacher_batch_size)[:, 0]
        if cfg.objective == "regression":
            from scipy.stats import spearmanr

            return float(100 * spearmanr(scores, dev_labels).statistic)
        return pairwise_auc(scores, dev_labels)

    settings = TrainSettings(epochs=cfg.epochs, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                             warmup_ratio=cfg.warmup_ratio, weight_decay=cfg.weight_decay, seed=seed,
                             device=ctx.device, eval_steps=cfg.eval_steps, checkpoint_steps=cfg.checkpoint_steps)
    checkpoints = ctx.work_dir.parent / (".ckpt-" + ctx.work_dir.name.removeprefix(".tmp-"))
    before = dev_score() if dev_items else None
    result = train(clf.model, len(pairs), step_loss, settings, evaluate=dev_score if dev_items else None,
                   checkpoint_dir=checkpoints, what="fine-tuning the teacher cross-encoder")
    clf.save(ctx.artifact_dir, text_inputs="text_pair",
             extra={"task": "reranker", "activation": ACTIVATION, "objective": cfg.objective})
    import shutil

    shutil.rmtree(checkpoints, ignore_errors=True)
    dev_name = "dev_spearman" if cfg.objective == "regression" else "dev_auc"
    positives = sum(p.label >= 0.5 for p in pairs)
    return StageResult(metrics={
        **result.stats(), "objective": cfg.objective, "train_pairs": len(pairs), "train_positives": int(positives),
        "dev_pairs": len(dev), f"{dev_name}_before": before, dev_name: result.best_score,
        "pairs_per_s": round(len(pairs) * cfg.epochs / max(result.train_s, 1e-9), 2), "device": ctx.device,
    })
