"""Fine-tune the teacher cross-encoder on labelled pairs (a pretrained encoder gets a one-logit head).

listwise: SNLI-style query groups, the relevant (entailed) passage first among the query's own non-relevant
passages and BM25-mined passages of other queries, softmax cross-entropy over the group (the reranking task
itself); binary: relevant 1 vs not 0, binary cross-entropy per pair; regression: STS-b *train* pairs with score / 5
as the soft target (sentence-transformers' STS-b cross-encoder recipe).

The best step is kept by a dev set shaped like the held-out one: held-apart *training* queries search the passages
of a few thousand held-apart training queries with BM25, the cross-encoder reorders the top-k, nDCG@10. (A pairwise
AUC over a query's own labelled passages rose from 78.8 to 90.9 while held-out nDCG@10 fell: it never sees the
other queries' passages a first stage puts beside the relevant one.) Held-out evaluation text never enters.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np

from edgedistill.contract import StageContext, StageResult
from edgedistill.errors import RecipeError
from edgedistill.precision import native_bf16
from edgedistill.tasks.reranker.config import RerankerData, RerankerFinetune
from edgedistill.tasks.reranker.data import (
    LabelledPair,
    QueryGroup,
    RankingGroup,
    labelled_pairs,
    load_groups,
    mined_negatives,
    ranking_groups,
    split_groups,
    sts_pairs,
)

log = logging.getLogger(__name__)

def regression_pairs(cfg: RerankerFinetune, data: RerankerData, exclude: set[str],
                     seed: int) -> tuple[list[LabelledPair], list[LabelledPair]]:
    """regression: (train, dev) scored STS-b train pairs."""
    if not data.sts:
        raise RecipeError("stages.finetune.objective: regression trains on STS-b scores; set data.sts "
                          "(e.g. stsb), or use objective: listwise or binary with data.pairs")
    pairs = sts_pairs(data.sts, cfg.pairs + 8 * cfg.dev_queries, seed, exclude)
    dev = 8 * cfg.dev_queries
    if len(pairs) <= dev:
        raise RecipeError(f"data.sts: {data.sts} gives {len(pairs)} scored train pairs that share no sentence with "
                          f"the evaluation sets, no more than the {dev} held apart for dev (8 x "
                          "stages.finetune.dev_queries); give more STS train pairs or lower dev_queries")
    return pairs[dev:], pairs[:dev]


def training_pairs(cfg: RerankerFinetune, data: RerankerData, train_groups: list[QueryGroup],
                   seed: int) -> tuple[list[LabelledPair], int]:
    """binary: labelled training pairs, mined negatives included, and how many of them are mined."""
    train = labelled_pairs(train_groups, cfg.pairs, seed)
    labelled = len(train)
    if cfg.hard_negatives:  # other queries' passages that share words: what a first stage puts beside the relevant
        mined = mined_negatives(train_groups, list(dict.fromkeys(p.query for p in train)), cfg.hard_negatives)
        train += [LabelledPair(q, n, 0.0) for q, negatives in mined.items() for n in negatives]
        random.Random(seed).shuffle(train)
    if not train or not any(p.label >= 0.5 for p in train) or all(p.label >= 0.5 for p in train):
        raise RecipeError(f"data.pairs: {data.pairs} gives {len(train)} training pairs without both relevant and "
                          "non-relevant ones; finetuning needs labelled pairs of both kinds")
    return train, len(train) - labelled


def training_groups(cfg: RerankerFinetune, data: RerankerData, train_groups: list[QueryGroup],
                    seed: int) -> list[RankingGroup]:
    """listwise: query groups (relevant first, own negatives, mined negatives), shuffled."""
    size = 1 + cfg.negatives + cfg.hard_negatives
    usable = [g for g in train_groups if g.positives and len(g.negatives) >= cfg.negatives]
    chosen = usable[: max(1, cfg.pairs // size) + 64]  # a few spare: some get fewer mined negatives than asked
    mined = (mined_negatives(train_groups, [g.query for g in chosen], cfg.hard_negatives)
             if cfg.hard_negatives and chosen else {})
    groups = ranking_groups(chosen, cfg.pairs, cfg.negatives, mined)
    if not groups or size < 2:
        raise RecipeError(f"data.pairs: {data.pairs} gives no query with a relevant passage and {cfg.negatives} "
                          f"non-relevant ones (+ {cfg.hard_negatives} mined) within stages.finetune.pairs "
                          f"{cfg.pairs}; listwise needs groups of at least 2 passages: raise pairs, or lower negatives")
    random.Random(seed).shuffle(groups)
    return groups


def dev_ranking(cfg: RerankerFinetune, held: list[QueryGroup]) -> tuple[Any, Any] | None:
    """The dev reranking set: the first ``dev_queries`` held-apart queries (with a relevant passage) search the
    passages of all ``held`` queries with BM25; returns (RerankSet, RerankReference) or None."""
    from edgedistill.tasks.reranker.evaluate import RerankSet, first_stage

    queries = [g for g in held if g.positives][: cfg.dev_queries]
    if not queries:
        return None
    corpus = list(dict.fromkeys(p for g in held for ps in g.passages.values() for p in ps))
    index = {p: i for i, p in enumerate(corpus)}
    data = RerankSet(queries=[g.query for g in queries], corpus=corpus,
                     relevant=[{index[p] for p in g.positives} for g in queries], top_k=cfg.dev_top_k,
                     batch_size=cfg.teacher_batch_size)
    return data, first_stage(data)


def run(cfg: RerankerFinetune, ctx: StageContext, data: RerankerData, exclude: set[str]) -> StageResult:
    import torch

    from edgedistill.tasks.reranker.losses import binary_cross_entropy, listwise_cross_entropy
    from edgedistill.tasks.seqcls.models import build_classifier
    from edgedistill.tasks.seqcls.training import TrainSettings, autocast, train

    seed = data.seed if cfg.seed is None else cfg.seed
    if cfg.objective == "regression":
        pairs, dev = regression_pairs(cfg, data, exclude, seed)
        groups, mined, ranking = [], 0, None
    else:
        all_groups = load_groups(data.pairs, exclude, "data.pairs")
        # at most half the queries go to dev (a small labelled set still trains on the other half)
        held_apart = max(cfg.dev_queries, min(cfg.dev_corpus, len(all_groups) // 2))
        train_groups, held = split_groups(all_groups, held_apart, seed)
        ranking = dev_ranking(cfg, held)
        dev = []
        if cfg.objective == "listwise":
            groups, pairs = training_groups(cfg, data, train_groups, seed), []
            mined = sum(len(g.passages) - 1 - cfg.negatives for g in groups)
        else:
            (pairs, mined), groups = training_pairs(cfg, data, train_groups, seed), []
    torch.manual_seed(seed)  # the new head's initial weights, whatever ran before in this process
    clf = build_classifier(ctx.input.path, 1, labels=["relevance"], max_seq_length=cfg.max_seq_length,
                           device=ctx.device, field="teacher")
    targets = torch.tensor([p.label for p in pairs], dtype=torch.float32, device=ctx.device)

    def step_loss(idx: np.ndarray, progress: float) -> Any:
        if groups:
            chosen = [groups[i] for i in idx]
            flat = [(g.query, p) for g in chosen for p in g.passages]
            return listwise_cross_entropy(clf.forward(flat).logits[:, 0].view(len(chosen), -1))
        logits = clf.forward([(pairs[i].query, pairs[i].passage) for i in idx]).logits[:, 0]
        return binary_cross_entropy(logits, targets[torch.as_tensor(idx, device=ctx.device)])

    class Scorer:  # the dev scorer runs at the training precision
        @staticmethod
        def logits(items: list[tuple[str, str]], batch_size: int = 32) -> np.ndarray:
            with autocast(ctx.device, cfg.cpu_bf16):
                return clf.logits(items, batch_size=cfg.teacher_batch_size)[:, 0]

    evaluator = None
    if ranking is not None:
        from edgedistill.tasks.reranker.evaluate import Evaluator

        evaluator = Evaluator(*ranking)

    def dev_score() -> float:
        if evaluator is not None:
            return evaluator.quality(Scorer())["rerank_ndcg10"]
        from scipy.stats import spearmanr

        scores = Scorer.logits([(p.query, p.passage) for p in dev])
        return float(100 * spearmanr(scores, [p.label for p in dev]).statistic)

    has_dev = evaluator is not None or bool(dev)
    settings = TrainSettings(epochs=cfg.epochs, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                             warmup_ratio=cfg.warmup_ratio, weight_decay=cfg.weight_decay, seed=seed,
                             device=ctx.device, eval_steps=cfg.eval_steps, checkpoint_steps=cfg.checkpoint_steps,
                             cpu_bf16=cfg.cpu_bf16)
    checkpoints = ctx.work_dir.parent / (".ckpt-" + ctx.work_dir.name.removeprefix(".tmp-"))
    before = dev_score() if has_dev else None
    result = train(clf.model, len(groups) or len(pairs), step_loss, settings, evaluate=dev_score if has_dev else None,
                   checkpoint_dir=checkpoints, what="fine-tuning the teacher cross-encoder")
    # listwise scores rank passages; they are no probabilities, so no sigmoid is recorded for them
    activation = "none" if cfg.objective == "listwise" else "sigmoid"
    clf.save(ctx.artifact_dir, text_inputs="text_pair",
             extra={"task": "reranker", "activation": activation, "objective": cfg.objective})
    import shutil

    shutil.rmtree(checkpoints, ignore_errors=True)
    dev_name = "dev_spearman" if cfg.objective == "regression" else "dev_ndcg10"
    n_pairs = sum(len(g.passages) for g in groups) or len(pairs)
    positives = len(groups) or sum(p.label >= 0.5 for p in pairs)
    metrics = {**result.stats(), "objective": cfg.objective, "train_pairs": n_pairs,
               "train_positives": int(positives), "mined_negatives": mined, f"{dev_name}_before": before,
               dev_name: result.best_score,
               "pairs_per_s": round(n_pairs * cfg.epochs / max(result.train_s, 1e-9), 2), "device": ctx.device,
               "bf16": bool(cfg.cpu_bf16 and native_bf16(ctx.device)) or str(ctx.device).startswith("cuda")}
    if groups:
        metrics["train_queries"] = len(groups)
    if evaluator is not None:
        metrics.update(dev_queries=len(evaluator.data.queries), dev_corpus=len(evaluator.data.corpus),
                       dev_first_stage_ndcg10=evaluator.first_stage_metrics["first_stage_ndcg10"])
    else:
        metrics["dev_pairs"] = len(dev)
    return StageResult(metrics=metrics)
