"""Optimisers and learning-rate schedules shared by every method.

Optimisers come from timm's ``create_optimizer_v2`` (SGD, AdamW, Adam, Adan, LARS, ...), with
weight decay off for norms and biases when asked. Schedules are per-step multipliers of the
base lr, driven by ``torch.optim.lr_scheduler.LambdaLR`` so Lightning steps them and saves
their state in checkpoints:

- ``cosine``: linear warm-up (from ``warmup_start_ratio`` x lr, or from lr / warmup_steps when it is 0),
  then half-cosine to ``min_lr_ratio`` (MoCo v2, CMID);
- ``cosine_restarts``: ``restart_cycles`` equal cosine cycles from 1 to ``min_lr_ratio``
  (GeRSP: mmcv CosineRestart, 5 periods, lr 0.007 -> 0.001, i.e. min_lr_ratio = 1/7);
- ``step``: multiply by ``step_gamma`` every ``step_every`` steps (GeoKR: StepLR 0.9 per epoch);
- ``constant``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from timm.optim import create_optimizer_v2
from torch import nn

SCHEDULES = ("cosine", "cosine_restarts", "step", "constant")


@dataclass
class OptimConfig:
    """The ``optim:`` section of a run config."""

    name: str = "sgd"
    lr: float = 0.03
    momentum: float = 0.9
    weight_decay: float = 1e-4
    no_decay_on_norm_and_bias: bool = False
    schedule: str = "cosine"
    warmup_steps: int = 0
    warmup_start_ratio: float = 0.0
    min_lr_ratio: float = 0.0
    restart_cycles: int = 5
    step_gamma: float = 0.9
    step_every: int = 1000


def lr_multiplier(cfg: OptimConfig, step: int, total_steps: int) -> float:
    """Factor applied to the base lr at ``step`` of ``total_steps``."""
    total_steps = max(1, total_steps)
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        if cfg.warmup_start_ratio > 0:  # from start_ratio * lr at step 0 up to lr at warmup_steps (CMID: 0.01)
            return cfg.warmup_start_ratio + (1 - cfg.warmup_start_ratio) * step / cfg.warmup_steps
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return cfg.step_gamma ** (step // max(1, cfg.step_every))
    after = step - cfg.warmup_steps
    span = max(1, total_steps - cfg.warmup_steps)
    if cfg.schedule == "cosine_restarts":
        period = max(1, math.ceil(span / max(1, cfg.restart_cycles)))
        progress = (after % period) / period
    else:  # cosine
        progress = min(after, span) / span
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(
    module: nn.Module, cfg: OptimConfig, total_steps: int | Callable[[], int]
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Optimiser over ``module``'s trainable parameters and its per-step lr schedule.

    ``total_steps`` may be a callable, read at every step, so a time budget can fix the schedule
    length after training has started (see :mod:`rspretrain.core.time_budget`).
    """
    total = total_steps if callable(total_steps) else (lambda: total_steps)
    kwargs = {"momentum": cfg.momentum} if cfg.name.lower() in ("sgd", "momentum", "nesterov", "lars") else {}
    optimizer = create_optimizer_v2(
        module,
        opt=cfg.name,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        filter_bias_and_bn=cfg.no_decay_on_norm_and_bias,
        **kwargs,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(cfg, step, total()))
    return optimizer, scheduler
