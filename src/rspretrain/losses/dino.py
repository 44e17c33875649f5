"""DINO self-distillation cross-entropy with centring and sharpening [0] (CMID's local loss [1]).

The teacher's prototype logits ``t`` are centred and sharpened, the student's ``s`` softened:

    L = - sum_k softmax((t - c) / tau_t)_k * log softmax(s / tau_s)_k,   mean over all rows

then the centre ``c`` follows the mean teacher logit (all-reduced across DDP ranks) with
momentum ``m``: ``c <- m c + (1 - m) mean(t)``. Centring keeps one prototype from winning
everything; the low teacher temperature keeps the teacher from going uniform. The centre is a
buffer, so it is saved in checkpoints and a resumed run continues with it.

The teacher temperature warms up linearly (:class:`TeacherTemperature`). DINO and CMID state
the warm-up in epochs (CMID: 0.04 -> 0.07 over the first 50 of 200 epochs, stepped per epoch);
here it is a fraction of the run's total optimiser steps (0.25 = 50/200), moved every step, so
it also fits runs whose length is a time budget rather than epochs.

References:
    - [0] DINO, Caron et al. 2021, https://arxiv.org/abs/2104.14294
    - [1] CMID, Muhtar et al. 2023, https://arxiv.org/abs/2304.09670
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F


@dataclass
class TeacherTemperature:
    """Teacher temperature rising linearly from ``warmup_temp`` (step 0) to ``temp`` at
    ``warmup_fraction`` of the run's steps, then constant."""

    warmup_temp: float = 0.04
    temp: float = 0.07
    warmup_fraction: float = 0.25

    def __call__(self, step: int, total_steps: int) -> float:
        warmup = round(self.warmup_fraction * max(1, total_steps))
        if warmup <= 0 or step >= warmup:
            return self.temp
        return self.warmup_temp + (self.temp - self.warmup_temp) * max(step, 0) / warmup


class DINOLoss(nn.Module):
    """Cross-entropy between centred/sharpened teacher and student prototype distributions.

    Args:
        num_prototypes: size K of the last logit dimension.
        student_temp: tau_s (CMID, DINO: 0.1).
        center_momentum: m of the centre (CMID: 0.9).
    """

    def __init__(self, num_prototypes: int, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, num_prototypes))

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """Mean loss over all leading dimensions of ``(..., K)`` logits; then (in training mode)
        the centre moves towards this call's mean teacher logit, as in the official code."""
        teacher = teacher_logits.detach().float()
        targets = F.softmax((teacher - self.center) / teacher_temp, dim=-1)
        log_probs = F.log_softmax(student_logits.float() / self.student_temp, dim=-1)
        loss = -(targets * log_probs).sum(dim=-1).mean()
        if self.training:
            self.update_center(teacher)
        return loss

    @torch.no_grad()
    def update_center(self, teacher_logits: torch.Tensor) -> None:
        """``c <- m c + (1 - m) * mean teacher logit`` over all rows of all ranks."""
        flat = teacher_logits.detach().float().reshape(-1, self.center.shape[1])
        total = flat.sum(dim=0, keepdim=True)
        count = flat.shape[0]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(total)
            count *= dist.get_world_size()
        self.center.mul_(self.center_momentum).add_(total / count, alpha=1 - self.center_momentum)
