"""The classifier's finetune (teacher) and distill (student) stages, on the shared sequence-classification core."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.assets import resolve
from edgedistill.contract import StageContext, StageResult
from edgedistill.errors import RecipeError
from edgedistill.tasks.classifier.data import Examples, training_splits
from edgedistill.tasks.seqcls import TEXT, TEXT_PAIR

log = logging.getLogger(__name__)


def _data(ctx: StageContext, stage: str) -> Any:
    data = ctx.inputs.data
    if data is None:
        raise RecipeError(f"stages.{ctx.index} ({stage}): the recipe has no classifier data section")
    return data


def _seed(cfg: Any, ctx: StageContext) -> int:
    return ctx.inputs.seed if cfg.seed is None else cfg.seed


def _settings(cfg: Any, ctx: StageContext, n_examples: int) -> Any:
    from edgedistill.tasks.seqcls.training import TrainSettings

    seed = _seed(cfg, ctx)
    return TrainSettings(epochs=cfg.epochs, batch_size=min(cfg.batch_size, max(1, n_examples)),
                         learning_rate=cfg.learning_rate, warmup_ratio=cfg.warmup_ratio,
                         weight_decay=cfg.weight_decay, seed=seed, device=ctx.device, eval_steps=cfg.eval_steps,
                         checkpoint_steps=cfg.checkpoint_steps, cpu_bf16=cfg.cpu_bf16)


def _checkpoints(ctx: StageContext) -> Path:
    """Beside the stage's temporary folder, so a killed run resumes mid-training."""
    return ctx.work_dir.parent / (".ckpt-" + ctx.work_dir.name.removeprefix(".tmp-"))


def dev_accuracy(model: Any, dev: Examples, batch_size: int = 64) -> float:
    if not len(dev):
        return 0.0
    return float((model.logits(dev.inputs, batch_size=batch_size).argmax(1) == np.array(dev.labels)).mean())


def agreement_score(predicted: np.ndarray, teacher: np.ndarray, labels: np.ndarray) -> float:
    """Share of inputs where the student's argmax is the teacher's; accuracy on the labels, worth less than one
    input's agreement (a tenth of it), only breaks ties."""
    agreement = float((predicted == teacher).mean())
    accuracy = float((predicted == labels).mean())
    return agreement + accuracy / (10 * len(labels))


def text_inputs(examples: Examples) -> str:
    return TEXT_PAIR if examples.inputs and not isinstance(examples.inputs[0], str) else TEXT


def finetune(cfg: Any, ctx: StageContext) -> StageResult:
    """The teacher: the recipe's encoder with a new head (or its own classifier), trained on the hard labels."""
    import torch

    from edgedistill.tasks.seqcls.models import build_classifier
    from edgedistill.tasks.seqcls.training import train

    data = _data(ctx, "finetune")
    splits = training_splits(data)
    names = splits.train.label_names
    torch.manual_seed(_seed(cfg, ctx))  # the new head's initial weights, whatever ran before in this process
    model = build_classifier(ctx.input.path, len(names), labels=names, layers=cfg.layers,
                             max_seq_length=cfg.max_seq_length, device=ctx.device, field="teacher")
    labels = torch.tensor(splits.train.labels)
    inputs = splits.train.inputs

    def step_loss(idx: np.ndarray, progress: float) -> torch.Tensor:
        logits = model.forward([inputs[i] for i in idx]).logits
        return torch.nn.functional.cross_entropy(logits.float(), labels[idx].to(logits.device))

    result = train(model.model, len(inputs), step_loss, _settings(cfg, ctx, len(inputs)),
                   evaluate=(lambda: dev_accuracy(model, splits.dev)) if cfg.select_best and len(splits.dev) else None,
                   checkpoint_dir=_checkpoints(ctx), what="fine-tuning the teacher")
    model.save(ctx.artifact_dir, text_inputs=text_inputs(splits.train), extra={"labels": names})
    shutil.rmtree(_checkpoints(ctx), ignore_errors=True)
    return StageResult(metrics={**result.stats(), "train_examples": len(inputs), "dev_examples": len(splits.dev),
                                "labels": names, "device": ctx.device,
                                "params": int(sum(p.numel() for p in model.model.parameters()))})


def _student_source(cfg: Any, ctx: StageContext) -> Path:
    return Path(ctx.teacher) if cfg.student.init == "teacher" else resolve(cfg.student.init)


def distill(cfg: Any, ctx: StageContext) -> StageResult:
    """A small student learns the teacher's soft labels (and hard labels, and layer targets)."""
    import torch

    from edgedistill.tasks.classifier.losses import LAYER_LOSSES, DistillLoss, LayerBatch, align, canonical_tokens
    from edgedistill.tasks.seqcls.models import build_classifier, load_classifier, require_seqcls
    from edgedistill.tasks.seqcls.teacher_cache import teacher_logits
    from edgedistill.tasks.seqcls.training import train

    data = _data(ctx, "distill")
    splits = training_splits(data, cfg.unlabelled_examples)
    names = splits.train.label_names
    require_seqcls(Path(ctx.teacher), "teacher", len(names), "a classifier of the data's classes")
    inputs = splits.train.inputs + splits.unlabelled.inputs
    labels = torch.tensor(splits.train.labels + [-1] * len(splits.unlabelled))
    # one teacher pass (and one cached array) for the soft labels and, when selection needs them, the dev inputs
    dev_inputs = splits.dev.inputs if cfg.select_on == "agreement" else []
    t0 = time.perf_counter()
    scored = teacher_logits(Path(ctx.teacher), inputs + dev_inputs, batch_size=cfg.teacher_batch_size,
                            device=ctx.device, max_seq_length=cfg.max_seq_length, num_labels=len(names),
                            bf16=cfg.cpu_bf16)
    label_s = time.perf_counter() - t0
    soft = torch.from_numpy(scored[:len(inputs)])
    dev_teacher = scored[len(inputs):].argmax(1) if dev_inputs else None
    field = f"stages.{ctx.index}.student.init"
    torch.manual_seed(_seed(cfg, ctx))  # the new head's (and projections') initial weights, whatever ran before
    student = build_classifier(_student_source(cfg, ctx), len(names), labels=names, layers=cfg.student.layers,
                               max_seq_length=cfg.max_seq_length, device=ctx.device, field=field)
    before = dev_accuracy(student, splits.dev)
    teacher = None  # run alongside the student only when a layer loss needs its internals
    width = int(student.model.config.hidden_size)
    if any(x.type in LAYER_LOSSES for x in cfg.losses):
        teacher = load_classifier(Path(ctx.teacher), device=ctx.device, max_seq_length=cfg.max_seq_length)
        teacher.model.eval()
        if any(x.type == "attention" for x in cfg.losses):  # attention maps come from the eager implementation
            teacher.model.set_attn_implementation("eager")
        _check_layer_maps(cfg, student, teacher, ctx.index)
    loss = DistillLoss(cfg.losses, [cfg.weight(x) for x in cfg.losses], width,
                       int(teacher.model.config.hidden_size) if teacher else width).to(ctx.device)

    class Trainable(torch.nn.Module):  # the student and the learned projections, optimised together
        def __init__(self) -> None:
            super().__init__()
            self.student, self.loss = student.model, loss

    module = Trainable()

    def step_loss(idx: np.ndarray, progress: float) -> torch.Tensor:
        batch = [inputs[i] for i in idx]
        out = student.forward(batch, hidden_states=loss.needs_layers, attentions=loss.needs_attentions)
        layers = None
        if teacher is not None:
            s_features = student.features(batch)
            with torch.no_grad():
                t_features = teacher.features(batch)
                t_out = teacher.model(**t_features, output_hidden_states=True, output_attentions=loss.needs_attentions)
            alignment = [align(canonical_tokens(student.tokenizer, s_ids.tolist()),
                               canonical_tokens(teacher.tokenizer, t_ids.tolist()))
                         for s_ids, t_ids in zip(s_features["input_ids"], t_features["input_ids"], strict=True)]
            layers = LayerBatch(out.hidden_states, t_out.hidden_states, out.attentions, t_out.attentions, alignment)
        return loss(out.logits, soft[idx].to(out.logits.device), labels[idx].to(out.logits.device), progress, layers)

    def dev_score() -> float:
        if dev_teacher is None:
            return dev_accuracy(student, splits.dev)
        return agreement_score(student.logits(splits.dev.inputs, batch_size=64).argmax(1), dev_teacher,
                               np.array(splits.dev.labels))

    result = train(module, len(inputs), step_loss, _settings(cfg, ctx, len(inputs)), select=student.model,
                   evaluate=dev_score if cfg.select_best and len(splits.dev) else None,
                   checkpoint_dir=_checkpoints(ctx), what="distilling the student",
                   loss_terms=lambda: dict(loss.last))
    student.save(ctx.artifact_dir, text_inputs=text_inputs(splits.train), extra={"labels": names})
    shutil.rmtree(_checkpoints(ctx), ignore_errors=True)
    return StageResult(metrics={
        **result.stats(), "train_examples": len(splits.train), "unlabelled_examples": len(splits.unlabelled),
        "dev_examples": len(splits.dev), "label_s": round(label_s, 1), "dev_accuracy_before": before,
        "select_on": cfg.select_on,
        "losses": {x.type: cfg.weight(x) for x in cfg.losses}, "final_loss_terms": dict(loss.last),
        "student_layers": int(student.model.config.num_hidden_layers), "device": ctx.device,
        "params": int(sum(p.numel() for p in student.model.parameters())),
    })


def _check_layer_maps(cfg: Any, student: Any, teacher: Any, index: int) -> None:
    s_layers, t_layers = student.model.config.num_hidden_layers, teacher.model.config.num_hidden_layers
    for n, loss in enumerate(cfg.losses):
        for s, t in loss.layer_map.items():
            if not (0 <= s < s_layers and 0 <= t < t_layers):
                raise RecipeError(f"stages.{index}.losses.{n}.layer_map: {s}: {t} is out of range; the student has "
                                  f"layers 0..{s_layers - 1}, the teacher 0..{t_layers - 1}")
