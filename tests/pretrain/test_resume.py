"""A run killed with SIGKILL and resumed reproduces the uninterrupted run's losses step for step."""

import csv
import json
import os
import signal
import subprocess
import sys

import lightning as L
import pytest
import torch

from rspretrain.core.errors import DataError
from rspretrain.core.rng_state import seed_step
from rspretrain.data.step_indexed_sampler import StepIndexedBatchSampler
from rspretrain.pretrain.config import load_config
from rspretrain.pretrain.methods import get_method
from rspretrain.pretrain.run import load_checkpoint, pretrain

# 40 images / batch 8 = 5 batches an epoch: the kill (step 7) and the resume (from the step-4
# checkpoint) both sit mid-epoch, and the continued run crosses two epoch boundaries.
STEPS, CKPT_EVERY, KILL_AT = 12, 4, 7
#: Each method's seconds-long settings (tiny splits and queues; GeoKR: 16 real Zion tiles of 32 px, teacher updates
#: after steps 1 and 9), from the method registry.
OVERRIDES = {
    config: get_method(load_config(config).method).smoke_overrides
    for config in ("moco_resnet18_eurosat", "gersp_resnet18_eurosat", "cmid_resnet18_eurosat", "geokr_resnet18_zion")
}


def _overrides(config, data_root, out):
    return {
        "data.root": str(data_root), "data.batch_size": 8, "model.image_size": 32,
        "trainer.max_steps": STEPS, "trainer.ckpt_every_n_steps": CKPT_EVERY, "trainer.progress_bar": False,
        "trainer.out_dir": str(out), "trainer.log_every_n_steps": 1, "optim.warmup_steps": 2, **OVERRIDES[config],
    }


def _cfg(config, data_root, out):
    return load_config(config, _overrides(config, data_root, out))


class LossRecorder(L.Callback):
    def __init__(self):
        self.losses = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses[trainer.global_step] = float(outputs["loss"])


KILLED_RUN = """
import json, os, signal, sys
import lightning as L, torch
torch.set_num_threads({threads})
from rspretrain.pretrain.config import load_config
from rspretrain.pretrain.run import pretrain

class KillAt(L.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == {kill_at}:
            os.kill(os.getpid(), signal.SIGKILL)

pretrain(load_config("{config}", json.loads(sys.argv[1])), callbacks=[KillAt()])
"""


@pytest.mark.parametrize("config", list(OVERRIDES))
def test_sigkilled_run_resumes_with_the_same_losses(config, tmp_path, data_root):
    recorder = LossRecorder()
    pretrain(_cfg(config, data_root, tmp_path / "straight"), callbacks=[recorder])
    straight = recorder.losses
    assert sorted(straight) == list(range(1, STEPS + 1))

    killed = _overrides(config, data_root, tmp_path / "killed")
    script = KILLED_RUN.format(threads=torch.get_num_threads(), kill_at=KILL_AT, config=config)
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps(killed)], capture_output=True, text=True,
        env=os.environ.copy(), timeout=600,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    ckpt = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    assert load_checkpoint(ckpt)["global_step"] == CKPT_EVERY  # the step-4 checkpoint survived the kill
    assert not list(ckpt.parent.glob("*.tmp*"))  # and no half-written file is left beside it

    recorder = LossRecorder()
    final = pretrain(load_config(config, killed), resume=True, callbacks=[recorder])
    resumed = recorder.losses
    assert sorted(resumed) == list(range(CKPT_EVERY + 1, STEPS + 1))
    for step in resumed:
        assert resumed[step] == pytest.approx(straight[step], rel=1e-5, abs=1e-6), f"step {step}"
    assert load_checkpoint(final)["global_step"] == STEPS
    # the CSV log kept the steps before the checkpoint and has every step exactly once
    with open(tmp_path / "killed" / "logs" / "metrics.csv") as f:
        logged = [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")]
    assert logged == list(range(STEPS))


def test_batches_are_a_function_of_the_step():
    done = {"steps": 0}

    def steps():  # as Lightning's trainer.global_step, which counts the batches trained on
        for b in s:
            done["steps"] += 1
            yield b

    s = StepIndexedBatchSampler(20, 4, seed=3, position=lambda: done["steps"])
    full = [b for _ in range(2) for b in steps()]  # two epochs, as Lightning iterates them
    assert len(full) == 10 and sorted(i for b in full[:5] for i in b) == list(range(20))
    assert full[5:] != full[:5]  # each epoch has its own order
    at = {"step": 7}
    resumed = StepIndexedBatchSampler(20, 4, seed=3, position=lambda: at["step"])
    assert list(resumed) == full[7:10]  # picks up mid-epoch and stops at the epoch's end
    at["step"] = 10
    assert next(iter(resumed)) == StepIndexedBatchSampler(20, 4, seed=3).batch_at(10)


def test_ranks_split_the_single_process_global_batch():
    single = StepIndexedBatchSampler(24, 8, seed=1)
    ranks = [StepIndexedBatchSampler(24, 4, seed=1, rank=r, world_size=2) for r in range(2)]
    for step in range(6):
        assert ranks[0].batch_at(step) + ranks[1].batch_at(step) == single.batch_at(step)


def test_dataset_smaller_than_a_global_batch_is_an_error():
    with pytest.raises(DataError, match="tiny.*fewer than one global batch of 16"):
        StepIndexedBatchSampler(10, 8, world_size=2, name="tiny")


def test_a_steps_draws_depend_on_seed_rank_and_step_only():
    import random

    import numpy as np

    def draws(seed, rank, step):
        seed_step(seed, rank, step)
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    assert draws(0, 0, 5) == draws(0, 0, 5)  # whatever was drawn before: a resumed step repeats
    others = {draws(0, 1, 5), draws(0, 0, 6), draws(1, 0, 5)}
    assert draws(0, 0, 5) not in others and len(others) == 3  # ranks, steps and seeds are independent
