"""Optimisers and learning-rate schedules shared by every method.

Optimisers come from timm's ``create_optimizer_v2`` (SGD, AdamW, Adam, Adan, LARS, ...), with
weight decay off for norms and biases when asked. ``sgd`` is plain momentum SGD, as ``torch.optim.SGD`` and the
official MoCo v2 / GeRSP code (timm's own ``sgd`` is Nesterov's; ``nesterov`` asks for that one).
Schedules are per-step multipliers of the
base lr, driven by ``torch.optim.lr_scheduler.LambdaLR`` so Lightning steps them and saves
their state in checkpoints:

- ``cosine``: linear warm-up (from ``warmup_start_ratio`` x lr, or from lr / warmup_steps when it is 0),
  then half-cosine to ``min_lr_ratio`` (MoCo v2, CMID);
- ``cosine_restarts``: ``restart_cycles`` equal cosine cycles from 1 to ``min_lr_ratio``, or cycles of
  ``restart_period_steps`` (GeRSP: mmcv CosineRestart, 5 periods of 20 epochs, lr 0.007 -> 0.001, i.e.
  min_lr_ratio = 1/7);
- ``step``: multiply by ``step_gamma`` every ``step_every`` steps (GeoKR: StepLR 0.9 per epoch);
- ``constant``.

Recipes written in epochs (``warmup_epochs``, ``step_every_epochs``, ``restart_period_epochs``) and a learning rate
given for a reference batch (``lr_reference_batch`` with ``lr_scaling`` ``linear`` / ``sqrt``) are resolved to steps
and to the run's lr by :func:`rspretrain.training.recipe.resolve_recipe` once the data size and the global batch are
known; :func:`build_optimizer` uses the step values.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from timm.optim import create_optimizer_v2, list_optimizers
from torch import nn

from rspretrain.core.errors import ConfigError
from rspretrain.core.ranges import check_ranges

SCHEDULES = ("cosine", "cosine_restarts", "step", "constant")
#: How ``optim.lr`` follows the global batch from ``optim.lr_reference_batch``: ``linear`` (Goyal et al. 2017, the
#: rule of MoCo v2's and CMID's released code), ``sqrt`` (Adan's and LAMB's advice for large batches), ``none``.
LR_SCALINGS = ("none", "linear", "sqrt")
#: timm's optimiser names for ours where they differ (timm's ``sgd`` has nesterov=True).
_TIMM_NAMES = {"sgd": "momentum"}


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
    #: Cosine-restart period in steps (0: ``restart_cycles`` equal cycles over the run).
    restart_period_steps: int = 0
    #: The same three periods in epochs (None: the step values are used); resolved to steps by the recipe.
    warmup_epochs: float | None = None
    step_every_epochs: float | None = None
    restart_period_epochs: float | None = None
    #: ``lr`` is the learning rate at this global batch; ``lr_scaling`` gives the run's lr at its own global batch.
    lr_reference_batch: int | None = None
    lr_scaling: str = "none"

    def __post_init__(self) -> None:
        check_ranges("optim", vars(self))
        name = self.name.lower()
        if _TIMM_NAMES.get(name, name) not in list_optimizers():  # here, not at the first step's ValueError
            raise ConfigError(f"optim.name: {self.name!r} is not an optimiser of timm's registry "
                              "(e.g. sgd, nesterov, adamw, lars, lamb; timm.optim.list_optimizers() lists them)")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"optim.schedule: {self.schedule!r} is not one of {', '.join(SCHEDULES)}")
        if self.lr_scaling not in LR_SCALINGS:
            raise ConfigError(f"optim.lr_scaling: {self.lr_scaling!r} is not one of {', '.join(LR_SCALINGS)}")
        if self.lr_scaling != "none" and self.lr_reference_batch is None:
            raise ConfigError(f"optim.lr_scaling: {self.lr_scaling} needs optim.lr_reference_batch, the global batch "
                              f"optim.lr {self.lr:g} was set for")

    def scaled_lr(self, global_batch: int) -> float:
        """``lr`` at ``global_batch`` under ``lr_scaling`` from ``lr_reference_batch``."""
        if self.lr_scaling == "none":
            return self.lr
        ratio = global_batch / self.lr_reference_batch
        return self.lr * (ratio if self.lr_scaling == "linear" else math.sqrt(ratio))


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
        period = cfg.restart_period_steps or max(1, math.ceil(span / max(1, cfg.restart_cycles)))
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
    unresolved = [f"optim.{k}" for k in ("warmup_epochs", "step_every_epochs", "restart_period_epochs")
                  if getattr(cfg, k) is not None] + (["optim.lr_scaling"] if cfg.lr_scaling != "none" else [])
    if unresolved:
        raise ConfigError(f"{', '.join(unresolved)}: resolve the recipe to steps and the run's lr first "
                          "(rspretrain.training.recipe.resolve_recipe; rspretrain pretrain does it)")
    total = total_steps if callable(total_steps) else (lambda: total_steps)
    name = cfg.name.lower()
    kwargs = {"momentum": cfg.momentum} if name in ("sgd", "momentum", "nesterov", "lars") else {}
    optimizer = create_optimizer_v2(
        module,
        opt=_TIMM_NAMES.get(name, name),
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        filter_bias_and_bn=cfg.no_decay_on_norm_and_bias,
        **kwargs,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(cfg, step, total()))
    return optimizer, scheduler
