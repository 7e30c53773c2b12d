"""Loss modules on hand-made batches."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgedistill.tasks.embedding.losses import Batch, InBatchKL


def _normed(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)


def test_in_batch_kl_is_zero_for_the_same_similarities_and_ignores_self_pairs() -> None:
    torch.manual_seed(0)
    teacher = _normed(torch.randn(8, 16))
    rotation, _ = torch.linalg.qr(torch.randn(16, 16))
    loss = InBatchKL(temperature=0.05)
    # A rotated copy has the same similarity structure: nothing to learn.
    assert loss(Batch(embeddings=teacher @ rotation, targets=teacher), 0.0).item() < 1e-6
    # A different structure is penalised, and strongly even at a low temperature (self-pairs would swamp it).
    other = loss(Batch(embeddings=_normed(torch.randn(8, 16)), targets=teacher), 0.0).item()
    assert other > 1e-3


def test_in_batch_kl_temperature_schedule() -> None:
    torch.manual_seed(1)
    b = Batch(embeddings=_normed(torch.randn(6, 8)), targets=_normed(torch.randn(6, 8)))
    scheduled = InBatchKL(temperature=0.05, temperature_end=1.0)
    assert torch.isclose(scheduled(b, 0.0), InBatchKL(0.05)(b, 0.0))
    assert torch.isclose(scheduled(b, 1.0), InBatchKL(1.0)(b, 1.0))


def test_cross_kl_is_zero_when_the_student_matches_the_teacher_and_not_for_a_rotation() -> None:
    from edgedistill.tasks.embedding.losses import CrossKL

    torch.manual_seed(2)
    teacher = _normed(torch.randn(8, 16))
    rotation, _ = torch.linalg.qr(torch.randn(16, 16))
    loss = CrossKL(temperature=0.05)
    assert loss(Batch(embeddings=teacher.clone(), targets=teacher), 0.0).item() < 1e-6
    # Unlike the in-batch KL, a rotated student is wrong here: its queries no longer find the teacher's index.
    assert loss(Batch(embeddings=teacher @ rotation, targets=teacher), 0.0).item() > 1e-2
    near = loss(Batch(embeddings=_normed(teacher + 0.05 * torch.randn(8, 16)), targets=teacher), 0.0).item()
    far = loss(Batch(embeddings=_normed(teacher + 1.0 * torch.randn(8, 16)), targets=teacher), 0.0).item()
    assert near < far


def test_cross_kl_bank_widens_the_index_and_keeps_its_optimum() -> None:
    from edgedistill.tasks.embedding.losses import CrossKL

    torch.manual_seed(3)
    teacher, bank = _normed(torch.randn(8, 16)), _normed(torch.randn(64, 16))
    loss = CrossKL(temperature=0.05)
    assert loss(Batch(embeddings=teacher.clone(), targets=teacher, bank=bank), 0.0).item() < 1e-6
    # A student that ranks the batch as the teacher does can still misrank the bank's sentences (hard negatives
    # outside the batch): the bank term sees what the in-batch one cannot.
    student = _normed(teacher + 0.3 * torch.randn(8, 16))
    in_batch = loss(Batch(embeddings=student, targets=teacher), 0.0).item()
    with_bank = loss(Batch(embeddings=student, targets=teacher, bank=bank), 0.0).item()
    assert with_bank != in_batch and with_bank > 0
    # The bank is the index beside the batch's own teacher embeddings: an explicit index gives the same value.
    index = torch.cat([teacher, bank])
    expected = F.kl_div(F.log_softmax(student @ index.T / 0.05, -1), F.softmax(teacher @ index.T / 0.05, -1),
                        reduction="batchmean") * 0.05 ** 2
    assert torch.isclose(torch.tensor(with_bank), expected, atol=1e-6)


def test_bank_is_a_cross_kl_setting_and_leaves_earlier_stage_keys_alone() -> None:
    import pytest
    from pydantic import ValidationError

    from edgedistill.stages.configs import LossSpec

    assert "bank" not in LossSpec(type="cross_kl").model_dump()  # earlier recipes keep their stage keys
    assert LossSpec(type="cross_kl", bank=4096).model_dump()["bank"] == 4096
    with pytest.raises(ValidationError, match="only cross_kl"):
        LossSpec(type="mse", bank=16)
