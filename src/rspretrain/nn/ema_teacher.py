"""EMA ("momentum") teacher and its momentum schedules.

The teacher is a copy of a student module whose parameters follow
``theta_t <- m * theta_t + (1 - m) * theta_s`` and never receive gradients. The schedule for
``m`` is the only thing that differs between methods:

- constant ``m`` (MoCo [0], GeRSP: 0.999);
- cosine from ``base`` to ``final`` over training (BYOL [1], CMID: 0.996 -> 1).

Buffers (BatchNorm running statistics) are not averaged: as in MoCo, the teacher keeps the
running statistics of its own forward passes.

References:
    - [0] MoCo, He et al. 2020, https://arxiv.org/abs/1911.05722
    - [1] BYOL, Grill et al. 2020, https://arxiv.org/abs/2006.07733
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn


class ConstantMomentum:
    """``m(step) = m`` for every step."""

    def __init__(self, momentum: float) -> None:
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.momentum = momentum

    def __call__(self, step: int) -> float:
        return self.momentum


class CosineMomentum:
    """``m`` rises from ``base`` at step 0 to ``final`` at ``total_steps`` along a half cosine (BYOL [1])."""

    def __init__(self, base: float, final: float = 1.0, total_steps: int = 1) -> None:
        self.base, self.final, self.total_steps = base, final, max(1, total_steps)

    def __call__(self, step: int) -> float:
        progress = min(max(step, 0), self.total_steps) / self.total_steps
        return self.final - (self.final - self.base) * (math.cos(math.pi * progress) + 1.0) / 2.0


MomentumSchedule = Callable[[int], float]


class EMATeacher(nn.Module):
    """A gradient-free copy of ``student`` updated by exponential moving average.

    Args:
        student: the module to copy (e.g. an ``nn.ModuleDict`` of backbone and projector).
        schedule: maps the global step to the momentum ``m``.
        frozen: names of the teacher's top-level children that are copied once and never
            updated (GeRSP's ``freeze_key_projector`` reproduces the official code this way).

    Example:
        >>> teacher = EMATeacher(student, ConstantMomentum(0.999))
        >>> teacher.update(student, step=trainer.global_step)
        >>> keys = teacher(x)
    """

    def __init__(self, student: nn.Module, schedule: MomentumSchedule, frozen: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.module = copy.deepcopy(student)
        self.module.requires_grad_(False)
        self.schedule = schedule
        self.frozen = tuple(frozen)
        self.last_momentum = float("nan")

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def _pairs(self, student: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        # Paired by name: the student may own parts the teacher never copied (e.g. GeRSP's
        # classifier, added after the teacher was made); every teacher parameter must exist in it.
        student_params = dict(student.named_parameters())
        teacher_list, student_list = [], []
        for name, t in self.module.named_parameters():
            if name.split(".", 1)[0] in self.frozen:
                continue
            teacher_list.append(t)
            student_list.append(student_params[name].detach())
        return teacher_list, student_list

    @torch.no_grad()
    def update(self, student: nn.Module, step: int) -> float:
        """Move the teacher towards ``student`` with the momentum of ``step``; returns ``m``."""
        momentum = float(self.schedule(step))
        teacher_params, student_params = self._pairs(student)
        if teacher_params and momentum < 1.0:
            # lerp(t, s, 1 - m) = m * t + (1 - m) * s, fused over all tensors in one call.
            torch._foreach_lerp_(teacher_params, student_params, 1.0 - momentum)
        self.last_momentum = momentum
        return momentum
