"""A generic training loop for sequence-classification models: the caller gives the loss.

Written here rather than with the transformers/sentence-transformers trainers because the callers need a loss
over several targets at once (teacher logits, hard labels, an online teacher's hidden states and attentions,
learned projections trained with the student), a checkpoint chosen on a task's own dev metric, and resume
after a kill that replays the same batches and dropout masks.

    result = train(module, n_examples, step_loss, settings, select=student_model, evaluate=dev_accuracy,
                   checkpoint_dir=work / "ckpt")

``step_loss(indices, progress)`` returns the batch's scalar loss (``progress`` runs 0 -> 1 over training, for
schedules such as a temperature's); ``evaluate()`` returns a dev score, higher is better.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

CHECKPOINT = "latest.pt"


@dataclass(frozen=True)
class TrainSettings:
    """How long and how fast to train; the same for every task."""

    epochs: float = 1.0
    batch_size: int = 32
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    seed: int = 0
    device: str = "cpu"
    eval_steps: int = 0  # evaluate every N steps (0: only at the end)
    checkpoint_steps: int = 0  # resumable checkpoint every N steps (0: none)
    max_grad_norm: float = 1.0
    cpu_bf16: bool = False  # bf16 autocast on a CPU that computes bf16 natively (edgedistill.precision)


@dataclass
class TrainResult:
    """What happened: steps, time, the dev history and the selected step."""

    steps: int
    train_s: float
    history: list[dict[str, float]] = field(default_factory=list)
    best_step: int | None = None
    best_score: float | None = None
    final_loss: float | None = None

    def stats(self) -> dict[str, Any]:
        return {"train_steps": self.steps, "train_s": round(self.train_s, 1), "history": self.history,
                "best_step": self.best_step, "best_dev": self.best_score, "final_loss": self.final_loss}


def autocast(device: str, cpu_bf16: bool = False) -> Any:
    """bf16 autocast on CUDA (fp16 where bf16 is missing); on CPU only with ``cpu_bf16`` and native bf16."""
    if not str(device).startswith("cuda"):
        from edgedistill.precision import autocast as bf16_autocast

        return bf16_autocast(device, cpu_bf16)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def _load_checkpoint(path: Path, device: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:  # weights only: a damaged or foreign file is discarded, never unpickled as arbitrary objects
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001
        log.warning("discarding the unreadable checkpoint %s (%s); training from the start", path, e)
        return None


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(module: torch.nn.Module, n_examples: int, step_loss: Callable[[np.ndarray, float], torch.Tensor],
          settings: TrainSettings, *, select: torch.nn.Module | None = None,
          evaluate: Callable[[], float] | None = None, checkpoint_dir: Path | None = None,
          what: str = "training", loss_terms: Callable[[], dict[str, float]] | None = None) -> TrainResult:
    """Train ``module``'s parameters (the model and any learned loss projections) on ``n_examples`` examples.

    ``select`` (default ``module``) is the model whose best dev-scored state is kept and restored at the end.
    A checkpoint in ``checkpoint_dir`` (from a killed run) is resumed from.
    """
    from transformers import get_linear_schedule_with_warmup

    from edgedistill.progress import Progress

    select = select if select is not None else module
    torch.manual_seed(settings.seed)
    steps_per_epoch = max(1, math.ceil(n_examples / settings.batch_size))
    total = max(1, math.ceil(steps_per_epoch * settings.epochs))
    params = [p for p in module.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": settings.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=settings.learning_rate)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(settings.warmup_ratio * total), total)
    ckpt = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir else None
    step, best_score, best_step, best_state, history = 0, -math.inf, None, None, []
    state = _load_checkpoint(ckpt, settings.device) if ckpt else None
    if state is not None:
        module.load_state_dict(state["module"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, best_score, best_step = state["step"], state["best_score"], state["best_step"]
        history, best_state = state["history"], state.get("best_state")
        torch.set_rng_state(state["rng"])
        log.info("%s: resuming from step %d/%d (%s)", what, step, total, ckpt)

    def run_eval(at: int) -> None:
        nonlocal best_score, best_step, best_state
        if evaluate is None:
            return
        was = module.training
        module.eval()
        with torch.no_grad():
            score = float(evaluate())
        module.train(was)
        history.append({"step": at, "dev": score, **(loss_terms() if loss_terms else {})})
        log.info("%s: step %d/%d dev %.4f", what, at, total, score)
        if score > best_score:
            best_score, best_step = score, at
            best_state = {k: v.detach().cpu().clone() for k, v in select.state_dict().items()}

    module.train()
    progress = Progress(what, total, "steps", initial=step)
    t0 = time.perf_counter()
    value = None
    while step < total:
        epoch, offset = divmod(step, steps_per_epoch)
        order = torch.randperm(n_examples, generator=torch.Generator().manual_seed(settings.seed + epoch)).numpy()
        idx = order[offset * settings.batch_size:(offset + 1) * settings.batch_size]
        optimizer.zero_grad(set_to_none=True)
        with autocast(settings.device, settings.cpu_bf16):
            value = step_loss(idx, step / total)
        value.backward()
        if settings.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
        optimizer.step()
        scheduler.step()
        step += 1
        progress.update(1, note=f"loss {value.item():.4f}")
        if settings.eval_steps and step % settings.eval_steps == 0 and step < total:
            run_eval(step)
        if ckpt and settings.checkpoint_steps and step % settings.checkpoint_steps == 0 and step < total:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            _save_checkpoint(ckpt, {"module": module.state_dict(), "optimizer": optimizer.state_dict(),
                                    "scheduler": scheduler.state_dict(), "step": step, "history": history,
                                    "best_score": best_score, "best_step": best_step, "best_state": best_state,
                                    "rng": torch.get_rng_state()})
    progress.close()
    run_eval(step)
    if best_state is not None and best_step != step:
        select.load_state_dict(best_state)
        log.info("%s: keeping the best checkpoint, step %d (dev %.4f)", what, best_step, best_score)
    module.eval()
    return TrainResult(steps=step, train_s=time.perf_counter() - t0, history=history, best_step=best_step,
                       best_score=None if best_step is None else best_score,
                       final_loss=None if value is None else float(value.item()))
