"""Distillation losses, each a small module; a recipe mixes them by weight.

Embedding losses compare the student's sentence embeddings with cached teacher embeddings. Hidden-state
distillation uses a compact teacher target (mean-pooled hidden states of mapped layers, cached with the
labels) through a learned projection, so it works across tokenizers. Attention distillation (TinyBERT)
needs token-aligned attention maps, so it runs the teacher online and requires a shared tokenizer.
Pair losses (MarginMSE, multiple-negatives ranking) train on (anchor, positive, negative) triplets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass
class Batch:
    """What one step sees. Tensors are on the training device."""

    embeddings: torch.Tensor  # student sentence embeddings (normalised), [B, D]
    targets: torch.Tensor  # teacher embeddings, [B, D]
    student_hidden: tuple[torch.Tensor, ...] | None = None  # per layer, mean-pooled [B, H_s]
    teacher_hidden: torch.Tensor | None = None  # [B, L_mapped, H_t]
    student_attentions: tuple[torch.Tensor, ...] | None = None
    teacher_attentions: tuple[torch.Tensor, ...] | None = None
    triplet_embeddings: torch.Tensor | None = None  # student [T, 3, D] (anchor, positive, negative)
    triplet_targets: torch.Tensor | None = None  # teacher [T, 3, D]
    triplet_margins: torch.Tensor | None = None  # a cross-encoder's margins [T] (margin_teacher), rescaled
    bank: torch.Tensor | None = None  # teacher embeddings of other training sentences [N, D] (cross_kl's bank)


class MSE(torch.nn.Module):
    """Mean squared error between student and teacher embeddings."""

    needs: tuple[str, ...] = ()

    def forward(self, b: Batch, progress: float) -> torch.Tensor:
        return F.mse_loss(b.embeddings, b.targets)


class Cosine(torch.nn.Module):
    """1 - cosine similarity between student and teacher embeddings."""

    needs: tuple[str, ...] = ()

    def forward(self, b: Batch, progress: float) -> torch.Tensor:
        return (1 - F.cosine_similarity(b.embeddings, b.targets, dim=-1)).mean()


class InBatchKL(torch.nn.Module):
    """KL divergence between teacher and student similarity distributions over the other sentences of the batch
    (soft labels).

    The temperature moves linearly from ``temperature`` to ``temperature_end`` over training.
    """

    needs: tuple[str, ...] = ()

    def __init__(self, temperature: float, temperature_end: float | None = None) -> None:
        super().__init__()
        self.start, self.end = temperature, temperature_end if temperature_end is not None else temperature

    def temperature(self, progress: float) -> float:
        """The temperature at ``progress`` (0 = start of training, 1 = end)."""
        return self.start + (self.end - self.start) * progress

    def forward(self, b: Batch, progress: float) -> torch.Tensor:
        t = self.temperature(progress)
        # Each sentence's similarity to itself is left out: on normalised embeddings it is always 1 and, at low
        # temperatures, it would take nearly all of the probability mass and leave nothing to learn.
        self_pairs = torch.eye(len(b.embeddings), dtype=torch.bool, device=b.embeddings.device)
        student = F.log_softmax((b.embeddings @ b.embeddings.T / t).masked_fill(self_pairs, -1e4), dim=-1)
        teacher = F.softmax((b.targets @ b.targets.T / t).masked_fill(self_pairs, -1e4), dim=-1)
        return F.kl_div(student, teacher, reduction="batchmean") * t * t


class CrossKL(InBatchKL):
    """Asymmetric (cross-space) relational loss: each student embedding ranks the batch's *teacher* embeddings
    as the teacher's own embedding does: KL(softmax(t_i . t_j / T) || softmax(s_i . t_j / T)) over j.

    This is the situation of on-device queries against a teacher-built index; the target's diagonal
    (t_i . t_i = 1) makes the student's own teacher embedding the expected top hit, with soft weight left for
    near neighbours. The temperature moves linearly from ``temperature`` to ``temperature_end``. With a ``bank``
    (teacher embeddings of other training sentences) the index is the batch's plus the bank's.
    """

    def forward(self, b: Batch, progress: float) -> torch.Tensor:
        t = self.temperature(progress)
        targets = b.targets.to(b.embeddings.dtype)
        index = targets if b.bank is None else torch.cat([targets, b.bank.to(targets.dtype)])
        student = F.log_softmax(b.embeddings @ index.T / t, dim=-1)
        teacher = F.softmax(targets @ index.T / t, dim=-1)
        return F.kl_div(student, teacher, reduction="batchmean") * t * t


class MarginMSE(torch.nn.Module):
    """MSE between student and teacher margins sim(anchor, positive) - sim(anchor, negative); the teacher's margin
    is a cross-encoder's score(anchor, positive) - score(anchor, negative) when the stage names a margin_teacher."""

    needs = ("triplets",)

    def forward(self, b: Batch, progress: float) -> torch.Tensor:
        def margin(x: torch.Tensor) -> torch.Tensor:
            return (x[:, 0] * x[:, 1]).sum(-1) - (x[:, 0] * x[:, 2]).sum(-1)

        target = b.triplet_margins if b.triplet_margins is not None else margin(b.triplet_targets)
        return F.mse_loss(margin(b.triplet_embeddings), target)


class MultipleNegativesRanking(torch.nn.Module):
    """Task loss on (anchor, positive, hard negative): in-batch softmax over positives and negatives."""

    needs = ("triplets",)

    def __init__(self, scale: float = 20.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, b: Batch, progress: float) -> torch.Tensor:
        anchors = b.triplet_embeddings[:, 0]
        candidates = torch.cat([b.triplet_embeddings[:, 1], b.triplet_embeddings[:, 2]])
        scores = anchors @ candidates.T * self.scale
        return F.cross_entropy(scores, torch.arange(len(anchors), device=scores.device))


class HiddenStates(torch.nn.Module):
    """MSE between projected mean-pooled student layers and mapped teacher layers (learned projections)."""

    needs = ("hidden",)

    def __init__(self, layer_map: dict[int, int], student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.student_layers = sorted(layer_map)
        self.projections = torch.nn.ModuleList(
            torch.nn.Linear(student_dim, teacher_dim) for _ in self.student_layers
        )

    def forward(self, b: Batch, progress: float) -> torch.Tensor:
        losses = [
            F.mse_loss(proj(b.student_hidden[s]), b.teacher_hidden[:, i])
            for i, (s, proj) in enumerate(zip(self.student_layers, self.projections, strict=True))
        ]
        return torch.stack(losses).mean()


class Attention(torch.nn.Module):
    """TinyBERT attention-map distillation: MSE between mapped layers' attention probabilities."""

    needs = ("attentions",)

    def __init__(self, layer_map: dict[int, int]) -> None:
        super().__init__()
        self.layer_map = dict(sorted(layer_map.items()))

    def forward(self, b: Batch, progress: float) -> torch.Tensor:
        losses = []
        for s, t in self.layer_map.items():
            student, teacher = b.student_attentions[s], b.teacher_attentions[t]
            if student.shape != teacher.shape:  # different head counts: compare head-averaged maps
                student, teacher = student.mean(1), teacher.mean(1)
            losses.append(F.mse_loss(student, teacher))
        return torch.stack(losses).mean()


class Weighted(torch.nn.Module):
    """A weighted sum of losses; remembers the last value of each term for logging."""

    def __init__(self, terms: dict[str, tuple[float, torch.nn.Module]]) -> None:
        super().__init__()
        self.weights = {name: w for name, (w, _) in terms.items()}
        self.terms = torch.nn.ModuleDict({name: m for name, (_, m) in terms.items()})
        self.last: dict[str, float] = {}

    @property
    def needs(self) -> set[str]:
        return {need for m in self.terms.values() for need in m.needs}

    def forward(self, b: Batch, progress: float) -> torch.Tensor:
        total = torch.zeros((), device=b.embeddings.device)
        for name, module in self.terms.items():
            value = module(b, progress)
            self.last[name] = float(value.detach())
            total = total + self.weights[name] * value
        return total


def build_loss(specs: list[Any], student_dim: int, student_hidden_dim: int, teacher_hidden_dim: int) -> Weighted:
    """Turn the recipe's loss list into one weighted module."""
    terms: dict[str, tuple[float, torch.nn.Module]] = {}
    for spec in specs:
        if spec.type == "mse":
            module: torch.nn.Module = MSE()
        elif spec.type == "cosine":
            module = Cosine()
        elif spec.type == "kl":
            module = InBatchKL(spec.temperature, spec.temperature_end)
        elif spec.type == "cross_kl":
            module = CrossKL(spec.temperature, spec.temperature_end)
        elif spec.type == "margin_mse":
            module = MarginMSE()
        elif spec.type == "mnrl":
            module = MultipleNegativesRanking(spec.scale)
        elif spec.type == "hidden":
            module = HiddenStates(spec.layer_map, student_hidden_dim, teacher_hidden_dim)
        elif spec.type == "attention":
            module = Attention(spec.layer_map)
        else:  # pragma: no cover - the recipe schema rejects other types
            raise ValueError(spec.type)
        terms[spec.type] = (spec.weight, module)
    return Weighted(terms)
