"""Distillation losses for classifiers, selectable and weighted.

- ``kl``: Hinton's soft-label loss, ``T^2 * KL(softmax(z_t / T) || softmax(z_s / T))``, T linear from
  ``temperature`` to ``temperature_end`` over training (the T^2 keeps gradient sizes comparable across T).
- ``ce``: cross-entropy on the hard labels (unlabelled examples are skipped).
- ``hidden``: TinyBERT's hidden-state MSE on mapped layers, through a learned linear projection when the widths
  differ (trained with the student).
- ``attention``: MSE between attention maps of mapped layers, averaged over heads when the head counts differ.
- ``embedding``: MSE between the embedding-layer outputs (projected when widths differ).

Layer losses compare token positions, so student and teacher tokens are aligned first: by token string, with
each tokenizer's special tokens mapped to [CLS]/[SEP] (an MPNet teacher writes ``<s> a </s></s> b </s>`` for a
pair, a BERT student ``[CLS] a [SEP] b [SEP]``; the extra separator is left out). Tokens only one side has are
left out of the layer losses.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

LAYER_LOSSES = ("hidden", "attention", "embedding")


def temperature_at(loss: Any, progress: float) -> float:
    end = loss.temperature_end if loss.temperature_end is not None else loss.temperature
    return float(loss.temperature + (end - loss.temperature) * progress)


def kl_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2-scaled KL(teacher || student) of the temperature-softened distributions, mean over the batch."""
    log_p_student = torch.log_softmax(student.float() / temperature, dim=-1)
    p_teacher = torch.softmax(teacher.float() / temperature, dim=-1)
    return temperature**2 * torch.nn.functional.kl_div(log_p_student, p_teacher, reduction="batchmean")


def ce_loss(student: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the labelled examples (label -1: unlabelled, skipped); 0 when none is labelled."""
    keep = labels >= 0
    if not bool(keep.any()):
        return student.sum() * 0.0
    return torch.nn.functional.cross_entropy(student[keep].float(), labels[keep])


def canonical_tokens(tokenizer: Any, ids: list[int]) -> list[str]:
    """Token strings with the tokenizer's own special tokens written as [CLS]/[SEP]/[PAD]."""
    names = {tokenizer.cls_token: "[CLS]", tokenizer.bos_token: "[CLS]", tokenizer.sep_token: "[SEP]",
             tokenizer.eos_token: "[SEP]", tokenizer.pad_token: "[PAD]"}
    return [names.get(t, t) for t in tokenizer.convert_ids_to_tokens(ids)]


def align(student_tokens: list[str], teacher_tokens: list[str]) -> tuple[list[int], list[int]]:
    """Positions of the tokens both sequences share, in order (padding excluded)."""
    s_idx: list[int] = []
    t_idx: list[int] = []
    matcher = difflib.SequenceMatcher(a=student_tokens, b=teacher_tokens, autojunk=False)
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            if student_tokens[block.a + k] != "[PAD]":
                s_idx.append(block.a + k)
                t_idx.append(block.b + k)
    return s_idx, t_idx


@dataclass
class LayerBatch:
    """What the layer losses need for one batch: both models' internals and the token alignment."""

    student_hidden: tuple[torch.Tensor, ...]
    teacher_hidden: tuple[torch.Tensor, ...]
    student_attentions: tuple[torch.Tensor, ...] | None
    teacher_attentions: tuple[torch.Tensor, ...] | None
    alignment: list[tuple[list[int], list[int]]]


class DistillLoss(nn.Module):
    """The weighted sum of the configured terms; owns the learned projections (trained with the student)."""

    def __init__(self, losses: list[Any], weights: list[float], student_width: int, teacher_width: int) -> None:
        super().__init__()
        self.losses = list(losses)
        self.weights = list(weights)
        self.last: dict[str, float] = {}
        self.projections = nn.ModuleDict()
        for loss in self.losses:
            if loss.type == "hidden":
                for s_layer in loss.layer_map:
                    self.projections[f"hidden_{s_layer}"] = self._projection(student_width, teacher_width)
            elif loss.type == "embedding":
                self.projections["embedding"] = self._projection(student_width, teacher_width)

    @staticmethod
    def _projection(student_width: int, teacher_width: int) -> nn.Module:
        return nn.Identity() if student_width == teacher_width else nn.Linear(student_width, teacher_width)

    @property
    def needs_layers(self) -> bool:
        return any(loss.type in LAYER_LOSSES for loss in self.losses)

    @property
    def needs_attentions(self) -> bool:
        return any(loss.type == "attention" for loss in self.losses)

    def _token_mse(self, student: torch.Tensor, teacher: torch.Tensor, alignment: list, proj: nn.Module) -> torch.Tensor:
        s = torch.cat([student[b, idx[0]] for b, idx in enumerate(alignment)])
        t = torch.cat([teacher[b, idx[1]] for b, idx in enumerate(alignment)])
        return torch.nn.functional.mse_loss(proj(s.float()), t.float())

    def _attention_mse(self, student: torch.Tensor, teacher: torch.Tensor, alignment: list) -> torch.Tensor:
        if student.shape[1] != teacher.shape[1]:  # head counts differ: compare head-averaged maps
            student, teacher = student.mean(1, keepdim=True), teacher.mean(1, keepdim=True)
        terms = []
        for b, (s_idx, t_idx) in enumerate(alignment):
            s = student[b][:, s_idx][:, :, s_idx]
            t = teacher[b][:, t_idx][:, :, t_idx]
            terms.append(((s.float() - t.float()) ** 2).mean())
        return torch.stack(terms).mean()

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                progress: float, layers: LayerBatch | None = None) -> torch.Tensor:
        total = student_logits.new_zeros(())
        last: dict[str, float] = {}
        for loss, weight in zip(self.losses, self.weights, strict=True):
            if weight == 0:
                continue
            if loss.type == "kl":
                value = kl_loss(student_logits, teacher_logits, temperature_at(loss, progress))
            elif loss.type == "ce":
                value = ce_loss(student_logits, labels)
            elif loss.type == "embedding":
                value = self._token_mse(layers.student_hidden[0], layers.teacher_hidden[0], layers.alignment,
                                        self.projections["embedding"])
            elif loss.type == "hidden":
                value = torch.stack([
                    self._token_mse(layers.student_hidden[s + 1], layers.teacher_hidden[t + 1], layers.alignment,
                                    self.projections[f"hidden_{s}"]) for s, t in loss.layer_map.items()]).mean()
            else:  # attention
                value = torch.stack([
                    self._attention_mse(layers.student_attentions[s], layers.teacher_attentions[t], layers.alignment)
                    for s, t in loss.layer_map.items()]).mean()
            last[loss.type] = float(value.detach())
            total = total + weight * value
        self.last = last
        return total
