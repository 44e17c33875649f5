"""CMID under Lightning DDP on 2 CPU processes (gloo, launched by torchrun).

Checks what only a real process group can: every parameter gets a gradient (DDP's unused-parameter
check passes), both keys of a step enter the queue once globally (the pointer moves by
2 x global batch per step, not world x that), and the DINO centre (all-reduced), the queue and the
teacher's parameters stay identical on both ranks.
"""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

SCRIPT = r'''
import json, os, sys
import lightning as L, torch
torch.set_num_threads(1)
from rspretrain.pretrain.config import load_config
from rspretrain.pretrain.run import pretrain

overrides, out = json.loads(sys.argv[1]), sys.argv[2]

class Record(L.Callback):
    def on_train_end(self, trainer, pl_module):
        torch.save({
            "pointer": int(pl_module.queue.pointer), "queue": pl_module.queue.keys.clone(),
            "center": pl_module.local_loss.center.clone(),
            "teacher": {k: v.clone() for k, v in pl_module.teacher.named_parameters()},
            "world": trainer.world_size,
        }, os.path.join(out, f"rank{trainer.global_rank}.pt"))

pretrain(load_config("cmid_resnet18_eurosat", overrides), callbacks=[Record()])
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_cmid_two_process_ddp_enqueues_once_and_keeps_ranks_in_sync(tmp_path, data_root):
    b, steps, queue = 4, 3, 64
    overrides = {
        "data.root": str(data_root), "data.max_per_class": 4, "data.batch_size": b,
        "model.backbone": "vit_tiny_patch16_224", "model.image_size": 32, "model.queue_size": queue,
        "model.proj_hidden_dim": 64, "model.local_hidden_dim": 64, "model.num_prototypes": 32,
        "trainer.max_steps": steps, "trainer.accelerator": "cpu", "trainer.devices": 2, "trainer.strategy": "ddp",
        "trainer.progress_bar": False, "trainer.ckpt_every_n_steps": 100, "trainer.out_dir": str(tmp_path / "run"),
    }
    script = tmp_path / "cmid_ddp.py"
    script.write_text(SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           f"--master_port={_free_port()}", str(script), json.dumps(overrides), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=900,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert r0["world"] == 2
    assert r0["pointer"] == r1["pointer"] == (steps * 2 * 2 * b) % queue  # 2 keys x 2 ranks x b per step
    torch.testing.assert_close(r0["queue"], r1["queue"], rtol=0, atol=0)
    torch.testing.assert_close(r0["center"], r1["center"], rtol=0, atol=0)
    assert r0["center"].abs().sum() > 0
    for name, value in r0["teacher"].items():
        torch.testing.assert_close(value, r1["teacher"][name], rtol=1e-6, atol=1e-7)
