"""Lightning DDP on 2 CPU processes (gloo, launched by torchrun) matches one process on the same global batch.

Checked for MoCo v2 and GeRSP: each step's keys enter the queue once (the pointer moves by the
global batch and the queue equals the single-process one), the per-rank losses average to the
single-process loss at every step, and shuffle-BN across ranks computes exactly what the
single-device emulation with 2 chunks computes. The backbone is a ViT (LayerNorm, so per-rank
BatchNorm statistics cannot make the two set-ups differ) and the views are made deterministic
(each rank draws its own augmentations, so they are the only other difference); that the ranks'
random streams differ at every step, and rank 0's equals the single process's, is checked too.

Also under 2 ranks: a NaN loss on one rank stops every rank at that step, and a run killed with
SIGKILL resumes with each rank's losses bit for bit (ResNet: per-rank BatchNorm, shuffle-BN).
"""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from rspretrain.pretrain.run import load_checkpoint

SCRIPT = r'''
import hashlib, json, os, sys
import lightning as L, torch
import torch.distributed as dist
from torch.nn import functional as F
torch.set_num_threads(1)
from rspretrain.pretrain.config import load_config
from rspretrain.pretrain.run import pretrain
from rspretrain.apps.cli import destroy_process_group
from rspretrain.nn.batch_shuffle import shuffled_forward
from rspretrain.views import functional as VF
from rspretrain.views.moco_v2 import MoCoV2Views

def fixed_view(self, x, generator=None, view=0):  # deterministic views: only the DDP mechanics differ
    return VF.normalize(F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False), self.mean, self.std)
MoCoV2Views.one_view = fixed_view

config, overrides, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]

class Record(L.Callback):
    def __init__(self):
        self.losses, self.rng = [], []
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))
        # the global generator after the step: its augmentation stream on this rank
        self.rng.append(hashlib.sha1(torch.get_rng_state().numpy().tobytes()).hexdigest())
    def on_train_end(self, trainer, pl_module):
        self.rank, self.world = trainer.global_rank, trainer.world_size
        self.queue = pl_module.queue.keys.clone()
        self.pointer = int(pl_module.queue.pointer)

rec = Record()
pretrain(load_config(config, overrides), callbacks=[rec])

# shuffle-BN through a BatchNorm layer on this rank's slice of a fixed global batch
torch.manual_seed(123)
x_global = torch.randn(8, 3, 4, 4)
bn = torch.nn.BatchNorm2d(3)
part = x_global.chunk(rec.world)[rec.rank]
torch.manual_seed(7)
shuffled = shuffled_forward(bn, part, groups=2)
torch.save({"losses": rec.losses, "rng": rec.rng, "queue": rec.queue, "pointer": rec.pointer, "shuffled": shuffled},
           os.path.join(out, f"world{rec.world}_rank{rec.rank}.pt"))
destroy_process_group()  # as the CLI does: an open gloo group can abort the rank at exit
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(nproc, script_text, config, overrides, out, tmp_path, timeout=600, check=True):
    script = tmp_path / "ddp_run.py"
    script.write_text(script_text)
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1",
           f"--master_port={_free_port()}", str(script), config, json.dumps(overrides), str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _torchrun(nproc, config, overrides, out, tmp_path):
    _launch(nproc, SCRIPT, config, overrides, out, tmp_path)
    return [torch.load(out / f"world{nproc}_rank{r}.pt") for r in range(nproc)]


@pytest.mark.parametrize("method", ["moco", "gersp"])
def test_two_process_ddp_matches_one_process_on_the_global_batch(method, tmp_path, data_root):
    b, steps, queue = 8, 3, 64
    base = {
        "data.root": str(data_root), "data.max_per_class": 4, "model.backbone": "vit_tiny_patch16_224",
        "model.image_size": 32, "model.queue_size": queue, "trainer.max_steps": steps,
        "trainer.accelerator": "cpu", "trainer.progress_bar": False, "trainer.ckpt_every_n_steps": 100,
        "optim.warmup_steps": 0,
        # fp32: the check is exact arithmetic (bf16 autocast rounds a half batch differently from a whole one)
        "trainer.precision": "32-true",
    }
    if method == "gersp":
        base["data.epoch_length"] = 40
    single = _torchrun(1, f"{method}_resnet18_eurosat", {
        **base, "data.batch_size": 2 * b, "trainer.devices": 1, "trainer.out_dir": str(tmp_path / "one"),
    }, tmp_path, tmp_path)[0]
    ranks = _torchrun(2, f"{method}_resnet18_eurosat", {
        **base, "data.batch_size": b, "trainer.devices": 2, "trainer.strategy": "ddp",
        "trainer.out_dir": str(tmp_path / "two"),
    }, tmp_path, tmp_path)

    # every step: the mean of the per-rank losses is the one-process loss on the same 2b images
    mean = torch.tensor([ranks[0]["losses"], ranks[1]["losses"]]).mean(0)
    torch.testing.assert_close(mean, torch.tensor(single["losses"]), rtol=1e-4, atol=1e-5)
    # each key enqueued once: the pointer moved by the global batch per step, not world x that
    assert ranks[0]["pointer"] == ranks[1]["pointer"] == single["pointer"] == (steps * 2 * b) % queue
    torch.testing.assert_close(ranks[0]["queue"], ranks[1]["queue"], rtol=0, atol=0)
    torch.testing.assert_close(ranks[0]["queue"], single["queue"], rtol=1e-4, atol=1e-5)
    # each rank has its own augmentation stream, new at every step (not R copies of one draw)
    assert all(a != b for a, b in zip(ranks[0]["rng"], ranks[1]["rng"], strict=True))
    assert len(set(ranks[0]["rng"])) == steps and ranks[0]["rng"] == single["rng"]
    # shuffle-BN across ranks == single-device emulation over 2 chunks with the same permutation
    torch.testing.assert_close(torch.cat([ranks[0]["shuffled"], ranks[1]["shuffled"]]), single["shuffled"])


NAN_ON_ONE_RANK = r'''
import json, os, sys
import torch
torch.set_num_threads(1)
from rspretrain.pretrain.config import load_config
from rspretrain.core.errors import NonFiniteLossError
from rspretrain.pretrain.run import pretrain
from rspretrain.apps.cli import destroy_process_group
from rspretrain.pretrain.methods.moco import MoCoV2 as MoCo

config, overrides, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
rank = int(os.environ["RANK"])
original = MoCo.loss_from_views

def nan_on_rank_1(self, views, batch):
    loss, logs = original(self, views, batch)
    if rank == 1 and self.global_step == 5:
        logs["loss_nce"] = torch.tensor(float("nan"))
        loss = loss + logs["loss_nce"]
    return loss, logs

MoCo.loss_from_views = nan_on_rank_1
try:
    pretrain(load_config(config, overrides))
    message = "finished"
except NonFiniteLossError as err:
    message = str(err)
with open(os.path.join(out, f"rank{rank}.txt"), "w") as f:
    f.write(message)
destroy_process_group()  # every rank stopped at the same step: no collective is pending
'''


def test_a_nan_loss_on_one_rank_stops_every_rank_at_that_step(tmp_path, data_root):
    # Were only the bad rank to stop, the others would wait in backward's gradient all-reduce.
    run = tmp_path / "run"
    _launch(2, NAN_ON_ONE_RANK, "moco_resnet18_eurosat", {
        "data.root": str(data_root), "data.max_per_class": 4, "data.batch_size": 4,
        "model.backbone": "vit_tiny_patch16_224", "model.image_size": 32, "model.queue_size": 64,
        "trainer.max_steps": 20, "trainer.accelerator": "cpu", "trainer.devices": 2, "trainer.strategy": "ddp",
        "trainer.progress_bar": False, "trainer.ckpt_every_n_steps": 4, "trainer.out_dir": str(run),
    }, tmp_path, tmp_path, timeout=300)
    assert (tmp_path / "rank1.txt").read_text() == "step 5: loss is nan (loss_nce=nan) on rank 1; stopping"
    assert (tmp_path / "rank0.txt").read_text() == "step 5: loss is not finite on rank 1; stopping"
    ckpt = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


KILLED_OR_RESUMED = r'''
import json, os, signal, sys
import lightning as L, torch
torch.set_num_threads(1)
from rspretrain.apps.cli import destroy_process_group
from rspretrain.pretrain.config import load_config
from rspretrain.pretrain.run import pretrain

# Guarded: spawned DataLoader workers import this script again (as __mp_main__) and must not train.
if __name__ == "__main__":
    config, overrides, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    tag, kill_at, resume = overrides.pop("_tag"), overrides.pop("_kill_at"), overrides.pop("_resume")
    rank = int(os.environ["RANK"])

    class RecordOrKill(L.Callback):
        def __init__(self):
            self.losses = {}
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == kill_at:  # before ModelCheckpoint's hook: this step's checkpoint is lost too
                os.kill(os.getpid(), signal.SIGKILL)
            self.losses[trainer.global_step] = float(outputs["loss"])
            with open(os.path.join(out, f"{tag}_rank{rank}.json"), "w") as f:
                json.dump(self.losses, f)

    pretrain(load_config(config, overrides), resume=resume, callbacks=[RecordOrKill()])
    destroy_process_group()
'''


# In memory: marked slow, as the step-indexed sampler's resume is covered on one rank (tests/pretrain/test_resume.py)
# and the per-rank BatchNorm / shuffle-BN resume by the streamed case.
@pytest.mark.parametrize("source", [pytest.param("memory", marks=pytest.mark.slow), "shards", "shards+workers"])
def test_a_killed_two_rank_run_resumes_with_each_ranks_losses(source, tmp_path, data_root, request):
    # ResNet: per-rank BatchNorm and shuffle-BN across ranks are in the resumed computation too. Streamed: each rank
    # reads its own chunks, and the loader position in the checkpoint brings both back inside the epoch.
    data = ({"data.root": str(data_root), "data.max_per_class": 4} if source == "memory" else
            # "shards": decoded in each rank's own process (the CPU default). "shards+workers": in a worker process
            # per rank, started by spawn (forking a DDP rank's workers once deadlocked in CI on CPython 3.11, the
            # child blocked in PyOS_AfterFork_Child; gdb stack in the issue 14 note), so the loader state that the
            # checkpoint carries comes from the worker.
            {"data.dataset": f"shards:{request.getfixturevalue('prepared')}", "data.num_workers": 0})
    if source == "shards+workers":  # as on GPU nodes: each rank's loader in a worker process, started by spawn
        data.update({"data.num_workers": 1, "data.worker_start": "spawn"})
    base = {
        **data, "data.batch_size": 8, "model.backbone": "resnet10t",
        "model.image_size": 32, "model.queue_size": 64, "trainer.max_steps": 6, "trainer.ckpt_every_n_steps": 2,
        "trainer.accelerator": "cpu", "trainer.devices": 2, "trainer.strategy": "ddp", "trainer.progress_bar": False,
        "optim.warmup_steps": 2,
    }
    if source != "memory":  # 36 images: 4 batches of 4 per rank and epoch, so the step-2 checkpoint is mid-epoch
        base["data.batch_size"] = 4
    straight = {**base, "trainer.out_dir": str(tmp_path / "straight"), "_tag": "straight", "_kill_at": -1,
                "_resume": False}
    _launch(2, KILLED_OR_RESUMED, "moco_resnet18_eurosat", straight, tmp_path, tmp_path)
    killed = {**base, "trainer.out_dir": str(tmp_path / "killed"), "_tag": "killed", "_kill_at": 3, "_resume": False}
    assert _launch(2, KILLED_OR_RESUMED, "moco_resnet18_eurosat", killed, tmp_path, tmp_path, check=False).returncode
    assert load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.ckpt")["global_step"] == 2
    _launch(2, KILLED_OR_RESUMED, "moco_resnet18_eurosat", {**killed, "_tag": "resumed", "_kill_at": -1,
                                                              "_resume": True}, tmp_path, tmp_path)
    for rank in range(2):
        full = json.loads((tmp_path / f"straight_rank{rank}.json").read_text())
        resumed = json.loads((tmp_path / f"resumed_rank{rank}.json").read_text())
        assert sorted(map(int, full)) == [1, 2, 3, 4, 5, 6] and sorted(map(int, resumed)) == [3, 4, 5, 6]
        assert resumed == {step: full[step] for step in resumed}  # bit for bit, on each rank
    assert full != json.loads((tmp_path / "straight_rank0.json").read_text())  # the ranks' losses differ
