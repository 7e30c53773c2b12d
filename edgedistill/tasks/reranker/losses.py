"""Cross-encoder losses on one-logit scores.

sentence-transformers has ``cross_encoder.losses.MSELoss``/``MarginMSELoss`` and ``BinaryCrossEntropyLoss``, but
they take a ``CrossEncoder`` and its input columns and run the model themselves; our loop (seqcls.training) owns
the forward pass over a transformers model and cached teacher scores, so the same formulas are written here, one
line each: MSE between student and teacher logits (Hofstätter et al. 2020's Margin-MSE on the difference
score(q, pos) - score(q, neg)), and for fine-tuning on labels binary cross-entropy on logits or the listwise
softmax cross-entropy of a query group whose first passage is the relevant one (sentence-transformers'
cross-encoder MultipleNegativesRankingLoss without in-batch negatives).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812


def logit_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """mse: the student's logit of each pair against the teacher's."""
    return F.mse_loss(student.float(), teacher.float())


def margin_mse(student_pos: torch.Tensor, student_neg: torch.Tensor, teacher_pos: torch.Tensor,
               teacher_neg: torch.Tensor) -> torch.Tensor:
    """margin_mse: the student's margin score(q, pos) - score(q, neg) against the teacher's."""
    return F.mse_loss((student_pos - student_neg).float(), (teacher_pos - teacher_neg).float())


def binary_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Fine-tuning on labels in [0, 1] (hard relevance, or STS-b score / 5 as a soft target)."""
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float())


def listwise_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Fine-tuning on query groups [queries, passages]: the first passage is the relevant one."""
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits.float(), target)
