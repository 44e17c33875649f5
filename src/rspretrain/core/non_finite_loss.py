"""Stop training at the first NaN/inf loss, on every DDP rank at once, naming the step, term and rank."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from rspretrain.core.errors import NonFiniteLossError


def stop_if_not_finite(module: L.LightningModule, loss: torch.Tensor, logs: dict[str, Any]) -> None:
    """Raise :class:`NonFiniteLossError` from a ``training_step`` before backward and the optimiser
    step, so the last checkpoint on disk stays the last good one. ``logs`` holds the loss terms
    (keys starting with ``loss``); the message names those that are not finite.

    Under DDP every rank learns whether any rank's loss is not finite (one all-gather of a flag per
    step) and all stop at the same step, each naming the bad ranks. Were only the bad rank to stop,
    the others would fail inside backward's gradient all-reduce with gloo's "Connection closed by
    peer" (or wait for NCCL's timeout), and torchrun would report a good rank as the root cause.
    """
    finite = bool(torch.isfinite(loss.detach()).all())
    world = module.trainer.world_size if module._trainer is not None else 1
    bad_ranks = [] if finite else [module.global_rank]
    if world > 1:
        flags = module.all_gather(torch.tensor(finite, device=loss.device)).reshape(-1)
        bad_ranks = [rank for rank, ok in enumerate(flags.tolist()) if not ok]
    if not bad_ranks:
        return
    step = f"step {module.global_step}"
    where = f" on rank {', '.join(map(str, bad_ranks))}" if world > 1 else ""
    if finite:
        raise NonFiniteLossError(f"{step}: loss is not finite{where}; stopping")
    bad = [k for k, v in logs.items() if k.startswith("loss") and not torch.isfinite(torch.as_tensor(v)).all()]
    terms = ", ".join(f"{k}={float(logs[k])}" for k in bad) or "no separate term is non-finite"
    raise NonFiniteLossError(f"{step}: loss is {float(loss.detach())} ({terms}){where}; stopping")
