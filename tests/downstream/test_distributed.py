"""Fine-tuning and a dense task on 2 CPU processes (DDP over gloo, launched by torchrun) through the one harness:
both ranks train, the epoch is split over them, rank 0 alone scores and writes the report."""

import json
import os
import socket
import subprocess
import sys


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           f"--master_port={_free_port()}", "-m", "rspretrain", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_finetuning_on_two_ranks_splits_the_global_batch_and_reports_once(tmp_path, data_root):
    out = tmp_path / "finetune"
    proc = _torchrun("finetune", "--dataset", "eurosat", "--data-root", str(data_root), "--image-size", "32",
                     "--max-train-per-class", "4", "--max-test-per-class", "2", "--epochs", "2", "--batch-size", "8",
                     "--accelerator", "cpu", "--devices", "2", "--no-progress", "--out", str(out))
    assert proc.stdout.count("overall accuracy:") == 1  # rank 0 alone scores
    (result,) = json.loads((out / "metrics.json").read_text())["results"]
    # 40 images, global batch 8 (4 per rank): 5 steps per epoch, not 10
    assert result["extra"]["world_size"] == 2 and result["extra"]["steps"] == 10
    assert result["n_test"] == 20 and 0 <= result["metrics"]["overall_accuracy"] <= 1
    assert (out / "backbone.safetensors").is_file() and (out / "checkpoints" / "last.ckpt").is_file()


def test_a_dense_task_on_two_ranks_draws_per_rank_crops_and_reports_once(tmp_path, data_root):
    out = tmp_path / "change"
    proc = _torchrun("evaluate", "random:resnet18", "--task", "change", "--data", str(data_root / "levir_cd_samples"),
                     "--epochs", "1", "--image-size", "32", "--batch-size", "2", "--devices", "2", "--out", str(out))
    assert proc.stdout.count("| model |") == 1
    (result,) = json.loads((out / "metrics.json").read_text())["results"]
    # 4 training pairs x 16 crops per pair and epoch = 64 crops, 2 ranks x 2 crops per step: 16 steps
    assert result["extra"]["world_size"] == 2 and result["extra"]["steps"] == result["extra"]["steps_per_epoch"] == 16
    assert 0 <= result["metrics"]["f1"] <= 1
