"""Knowledge distillation with a temperature: Hinton et al.'s soft-target loss with its T^2 factor [0].

``L_kd = T^2 * KL( softmax(z_t / T) || softmax(z_s / T) )``, averaged over the batch. Softening both distributions
with ``T > 1`` exposes the teacher's "dark knowledge" (how it ranks the wrong classes); the ``T^2`` factor keeps the
gradient magnitude of this term roughly independent of ``T``, since the soft-target gradients scale as ``1 / T^2``
[0, §2]. SSKDNet [1] distils its self-supervised branch (teacher) into the backbone (student) with this loss, both
trained jointly; by default the teacher's logits are detached, so the term moves only the student (online
distillation as in ONE / DML [2]); ``detach_teacher=False`` lets it pull both ways.

References:
    - [0] Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", 2015, https://arxiv.org/abs/1503.02531
    - [1] Zhao, Liu, Yang, Wu, "SSKDNet", Remote Sensing 14(19):4813, 2022, https://doi.org/10.3390/rs14194813
    - [2] Zhang et al., "Deep Mutual Learning", CVPR 2018, https://arxiv.org/abs/1706.00384
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from rspretrain.core.errors import ConfigError


def kd_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0, detach_teacher: bool = True
) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, mean over the batch (a scalar).

    Args:
        student_logits: ``(B, K)`` logits that receive the distilled knowledge.
        teacher_logits: ``(B, K)`` logits that provide it.
        temperature: softening temperature ``T > 0``.
        detach_teacher: stop the gradient into the teacher's logits.

    Returns:
        The loss; exactly 0 when the two sets of logits are equal (up to a per-row constant).
    """
    if temperature <= 0:
        raise ConfigError(f"distillation temperature must be > 0, got {temperature}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ in shape")
    if detach_teacher:
        teacher_logits = teacher_logits.detach()
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    # log_target=True: exact KL from log-probabilities (no log(0) for very peaked teachers)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


class KnowledgeDistillationLoss(nn.Module):
    """Module form of :func:`kd_kl`.

    Args:
        temperature: softening temperature ``T`` (SSKDNet's value is unpublished; 4 is Hinton et al.'s common choice).
        detach_teacher: stop the gradient into the teacher's logits.

    Example:
        >>> loss = KnowledgeDistillationLoss(temperature=4.0)
        >>> z = torch.randn(8, 21)
        >>> float(loss(z, z))
        0.0
    """

    def __init__(self, temperature: float = 4.0, detach_teacher: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ConfigError(f"distillation temperature must be > 0, got {temperature}")
        self.temperature, self.detach_teacher = float(temperature), bool(detach_teacher)

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        return kd_kl(student_logits, teacher_logits, self.temperature, self.detach_teacher)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, detach_teacher={self.detach_teacher}"


__all__ = ["KnowledgeDistillationLoss", "kd_kl"]
