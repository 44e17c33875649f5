"""Random-number-generator state in checkpoints, so a resumed run draws the same views.

Lightning saves weights, optimiser, schedulers, loop counters and callback states, but not the
global RNGs. The views (crops, jitter, blur, masks) draw from torch's global generator, so
without this a resumed run trains on other augmentations than the uninterrupted run would have.
:class:`RNGStateCheckpointing` stores the python, numpy, torch (and CUDA) generator states in
every checkpoint and puts them back just before the first step after a restore: nothing
between a checkpoint write (end of step ``s``) and the views of step ``s + 1`` draws from the
global RNG (the data order comes from :class:`StepIndexedBatchSampler`'s own generator).

States are stored as tensors and plain ints so the checkpoint still loads with
``torch.load(weights_only=True)``. Under DDP the checkpoint holds rank 0's states; every rank
is seeded alike and draws alike, so they are the same on all ranks.
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch


def collect_rng_states() -> dict[str, Any]:
    """Python, numpy, torch and CUDA generator states, in weights_only-loadable types."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Inverse of :func:`collect_rng_states`."""
    py = states["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class RNGStateCheckpointing(L.Callback):
    """Save the global RNG states with every checkpoint; restore them before the first step after a resume."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return collect_rng_states()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Restored later: model/optimiser/loader setup between here and the first step may draw.
        self._pending = state_dict

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._pending is not None:
            restore_rng_states(self._pending)
            self._pending = None
