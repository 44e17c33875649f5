"""Random draws of each training step keyed on (seed, rank, step): exact resume, independent ranks.

The views (crops, jitter, blur, noise, masks) are made on the batch's device from the global
generators. Two things follow:

- **Resume.** Lightning saves weights, optimiser, schedulers and loop counters, but not the global
  RNGs; a resumed run would otherwise train on other augmentations than the uninterrupted run.
- **DDP.** Every rank is seeded alike (the networks must start equal), so without more every rank
  would draw the same crop, jitter and mask parameters for its i-th image: a global batch of B
  images on R ranks would hold only B / R independent augmentation draws. Lightning decorrelates
  DataLoader workers across ranks (``seed_everything(workers=True)``) for the same reason, but
  our views are not made in workers.

:class:`StepSeededRNG` therefore seeds python, numpy and torch (every device) just before each
training step from ``SeedSequence([seed, global_rank, global_step])``. A step's draws are then a
function of those three numbers only: a resumed run repeats the uninterrupted run's draws with no
RNG state in the checkpoint, and ranks draw independently. Draws that must agree across ranks
are made on one rank and broadcast (shuffle-BN's permutation, :mod:`rspretrain.nn.batch_shuffle`).
Lightning's ``global_step`` counts optimiser steps; ``pretrain`` does not accumulate gradients,
so each batch has its own step.
"""

from __future__ import annotations

import random

import lightning as L
import numpy as np
import torch


def step_seed(seed: int, rank: int, step: int) -> int:
    """A 64-bit seed for ``step`` on ``rank`` of a run seeded with ``seed`` (numpy's SeedSequence
    spreads nearby integer keys to unrelated seeds)."""
    key = [int(seed) % 2**64, int(rank), int(step)]
    return int(np.random.SeedSequence(key).generate_state(1, dtype=np.uint64)[0])


def seed_step(seed: int, rank: int, step: int) -> None:
    """Seed python's, numpy's and torch's (CPU and every CUDA device's) global generators for one step."""
    value = step_seed(seed, rank, step)
    random.seed(value)
    np.random.seed(value % 2**32)
    torch.manual_seed(value)


class StepSeededRNG(L.Callback):
    """Seed the global generators from ``(seed, global rank, global step)`` before every training step."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        seed_step(self.seed, trainer.global_rank, trainer.global_step)
