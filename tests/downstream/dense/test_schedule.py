import numpy as np
import pytest
import timm
import torch

from rspretrain.core.errors import ConfigError
from rspretrain.downstream.dense.schedule import (
    DenseSchedule,
    build_dense_optimizer,
    crop_size_for,
    encoder_arch,
    random_crop_batch,
    steps_for,
)
from rspretrain.downstream.frozen.features import EncoderSpec
from rspretrain.nn.backbones import Backbone


def _spec(encoder, size=32):
    return EncoderSpec("m", encoder, (0.5,) * 3, (0.25,) * 3, size)


def test_transformers_take_their_built_size_cnns_the_schedule_crop():
    assert crop_size_for(_spec(Backbone("vit_tiny_patch16_224", image_size=32)), 128) == 32
    assert crop_size_for(_spec(Backbone("resnet18")), 128) == 128
    exported = timm.create_model("resnet18", num_classes=0)
    exported.rs_meta = {"arch": "resnet18"}
    assert encoder_arch(exported) == "resnet18"


def test_random_crop_batch_crops_pads_and_transforms_all_arrays_alike():
    rng = np.random.default_rng(0)
    image = np.arange(2 * 6 * 5, dtype=np.uint8).reshape(2, 6, 5)
    mask = image[0].astype(np.int64)  # the mask equals band 0, so any crop / flip must keep them equal
    images, masks = random_crop_batch([(image, mask)], 4, 16, rng, (0, 0))
    assert images.shape == (16, 2, 4, 4) and masks.shape == (16, 4, 4)
    assert torch.equal(images[:, 0].long(), masks)
    padded, padded_mask = random_crop_batch([(image, mask)], 8, 2, rng, (0, 255))
    assert (padded_mask == 255).sum(dim=(1, 2)).tolist() == [64 - 30] * 2  # 6 x 5 data in an 8 x 8 crop


def test_schedule_validation_and_steps():
    with pytest.raises(ConfigError, match="batch_size must be >= 2"):
        DenseSchedule(batch_size=1)
    with pytest.raises(ConfigError, match="epochs"):
        DenseSchedule(epochs=0)
    assert steps_for(36, DenseSchedule(crops_per_image=8, batch_size=8)) == 36
    assert DenseSchedule(crop_size=128).window_overlap(128) == 32


def test_frozen_backbone_has_no_optimizer_group_and_warmup_then_cosine():
    head, backbone = [torch.nn.Parameter(torch.zeros(1))], [torch.nn.Parameter(torch.zeros(1))]
    opt, sched = build_dense_optimizer(head, backbone, DenseSchedule(freeze_backbone=True, warmup_fraction=0.1), 100)
    assert len(opt.param_groups) == 1
    opt, sched = build_dense_optimizer(head, backbone, DenseSchedule(lr=1e-3, backbone_lr=1e-4), 100)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3 / 5, 1e-4 / 5])  # warm-up step 1 of 5
    for _ in range(99):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] < 1e-5
