"""EMA ("momentum") teacher and its momentum schedules.

The teacher is a copy of a student module whose parameters follow
``theta_t <- m * theta_t + (1 - m) * theta_s`` and never receive gradients. The schedule for
``m`` is the only thing that differs between methods:

- constant ``m`` (MoCo [0], GeRSP: 0.999);
- cosine from ``base`` to ``final`` over training (BYOL [1], CMID: 0.996 -> 1);
- sparse: ``alpha`` at a few growing intervals, no update in between (GeoKR [2]: 0.95).

Buffers (BatchNorm running statistics) are not averaged: as in MoCo, the teacher keeps the
running statistics of its own forward passes.

References:
    - [0] MoCo, He et al. 2020, https://arxiv.org/abs/1911.05722
    - [1] BYOL, Grill et al. 2020, https://arxiv.org/abs/2006.07733
    - [2] GeoKR, Li et al., IEEE TGRS 60, 2022, https://arxiv.org/abs/2107.05276
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable

import torch
from torch import nn

from rspretrain.core.errors import ConfigError


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


class SparseMomentum:
    """GeoKR's teacher update [2]: ``m = alpha`` at a few iterations that grow apart, ``m = 1`` (no update) otherwise.

    The official loop (``GeoKR/interface/interface_representation.py``) counts iterations from 1, and after the
    optimiser step of iteration ``i`` updates the teacher when ``i % period == 1``; the period starts at
    ``intervals[0]``, and after every update becomes the next entry of ``intervals`` (the first entry again, then
    the others), staying at the last one; every period is scaled to ``int(interval / batch_size * 16)``. With the
    released ``intervals = (500, 10500, 20500, 30500)`` and batch 8 the teacher is updated at iterations 1, 1001,
    21001, 41001, 61001, 122001, 183001, ... (METHODS.md §3.4). This class reproduces that rule exactly, as a pure
    function of the iteration, so it survives a resume.

    ``step`` is the number of optimiser steps done, i.e. the official 1-based iteration when the update runs after
    the optimiser step (Lightning's ``global_step`` in ``on_train_batch_end``, or ``global_step + 1`` inside the
    ``optimizer_step`` hook, where Lightning has not yet counted the step).

    Args:
        alpha: the momentum of an update (0.95).
        intervals: the period list before scaling.
        batch_size: the training batch size (global, over all devices).
        reference_batch_size: the batch size the intervals are written for (16: the official ``/ batch * 16``).
    """

    def __init__(
        self,
        alpha: float = 0.95,
        intervals: tuple[int, ...] = (500, 10500, 20500, 30500),
        batch_size: int = 8,
        reference_batch_size: int = 16,
    ) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if not intervals or batch_size < 1:
            raise ValueError(f"need at least one interval and batch_size >= 1, got {intervals}, {batch_size}")
        self.alpha = alpha
        self.batch_size = batch_size
        self.intervals = tuple(int(i) for i in intervals)
        # Periods of 1 would never fire (i % 1 == 0): the official code divides without a guard; we keep 2 apart.
        periods = [max(2, int(i / batch_size * reference_batch_size)) for i in self.intervals]
        self.periods = (periods[0], *periods)  # the first period is used twice (before and after iteration 1)
        self._fires: list[int] = [1]

    def _extend(self, step: int) -> None:
        while self._fires[-1] < step:
            period = self.periods[min(len(self._fires), len(self.periods) - 1)]
            last = self._fires[-1]
            # The next iteration after `last` with i % period == 1.
            self._fires.append(last + 1 + (1 - (last + 1)) % period)

    def fires(self, step: int) -> bool:
        """True if the teacher is updated after iteration ``step`` (1-based)."""
        if step < 1:
            return False
        self._extend(step)
        return step in self._fires

    def update_steps(self, last: int) -> list[int]:
        """All iterations up to ``last`` at which the teacher is updated."""
        self._extend(last)
        return [s for s in self._fires if s <= last]

    def __call__(self, step: int) -> float:
        return self.alpha if self.fires(step) else 1.0


@functools.lru_cache(maxsize=16)
def sparse_schedule(alpha: float, intervals: tuple[int, ...], batch_size: int) -> SparseMomentum:
    """GeoKR's schedule for a global batch: one object per arguments, since the teacher's owner asks at every step
    (the batch is only known then) and the schedule is a pure function of them."""
    return SparseMomentum(float(alpha), tuple(int(i) for i in intervals), int(batch_size))


def check_teacher_options(where: str, alpha: float, intervals, ema_momentum: float) -> None:
    """Refuse a GeoKR-style teacher's options with a message naming ``where`` they were given."""
    if not intervals or any(int(i) < 1 for i in intervals):
        raise ConfigError(f"{where}: teacher_intervals must be positive integers, got {list(intervals)}")
    if not 0.0 <= alpha <= 1.0 or not 0.0 <= ema_momentum <= 1.0:
        raise ConfigError(f"{where}: teacher_alpha and ema_momentum must be in [0, 1], got {alpha}, {ema_momentum}")


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
