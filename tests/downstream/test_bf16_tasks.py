"""bf16 autocast in every downstream task that trains: fine-tuning (plain and SSKDNet) and the three dense tasks run
through the harness with ``precision bf16-mixed``, with finite losses and weights that stay fp32."""

from __future__ import annotations

import math

import pytest
import torch

from rspretrain.downstream.dense.change_detection import ChangeDetectionTask, change_schedule, load_change_data
from rspretrain.downstream.dense.dense_task import train_dense_task
from rspretrain.downstream.dense.detection import DetectionTask, detection_schedule, load_detection_data
from rspretrain.downstream.dense.segmentation import SegmentationTask, load_segmentation_data, segmentation_schedule
from rspretrain.downstream.finetune import SceneClassificationTask, SSKDNet
from rspretrain.downstream.sources import random_init_spec


def _half_state(module: torch.nn.Module) -> list[str]:
    return [k for k, t in [*module.named_parameters(), *module.named_buffers()]
            if t.is_floating_point() and t.dtype != torch.float32]


@pytest.mark.parametrize("task_cls", [SceneClassificationTask, SSKDNet])
def test_finetuning_step_under_bf16_autocast(task_cls):
    torch.manual_seed(0)
    task = task_cls(num_classes=4, image_size=32).train()
    x, y = torch.rand(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 0, 1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _, logs = task.loss(x, y)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(math.isfinite(float(v)) for v in logs.values())
    loss.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in task.net.parameters())
    assert not _half_state(task)


@pytest.mark.parametrize("kind", ["segmentation", "change", "detection"])
def test_dense_task_trains_in_bf16_mixed_through_the_harness(kind, data_root):
    spec = random_init_spec("resnet18", 3, 64, (0.5,) * 3, (0.25,) * 3, ("red", "green", "blue"))
    small = {"epochs": 1, "crops_per_image": 1, "batch_size": 2, "decoder_channels": 8, "progress": False,
             "precision": "bf16-mixed"}
    if kind == "segmentation":
        train = load_segmentation_data(data_root / "dubai_aerial_seg", scale=0.12)[0]
        task = SegmentationTask(spec, train, segmentation_schedule(crop_size=64, **small))
    elif kind == "change":
        train = load_change_data(data_root / "levir_cd_samples", scale=0.125)[0]
        task = ChangeDetectionTask(spec, train, change_schedule(crop_size=32, **small))
    else:
        train = load_detection_data(data_root / "deepforest_neon_trees")[0]
        task = DetectionTask(spec, train, detection_schedule(crop_size=64, **small))
    facts = train_dense_task(task)
    assert facts["steps"] == task.steps_per_epoch and all(math.isfinite(v) for v in facts["loss_per_epoch"])
    assert not _half_state(task)
