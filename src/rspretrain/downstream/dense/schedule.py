"""What the dense tasks share: the schedule, band checks, the encoder copy, random crops, the optimiser.

The protocol is the one of the pretraining papers' dense transfer experiments (MoCo: He et al. 2020, Sec. 4.2;
GeRSP / CMID / SSKDNet downstream tables): the pretrained backbone initialises the encoder of a standard dense model
(UPerNet, siamese change network, Faster R-CNN + FPN) and the whole model is fine-tuned on the task with one
schedule shared by every backbone compared -- or, with ``freeze_backbone``, only the decoder is trained on the
frozen features. Every backbone is scored next to a random initialisation of the same architecture.

Choices (ours, CPU-sized; every value is a :class:`DenseSchedule` field): AdamW with weight decay 1e-4, decoder lr
1e-3 and backbone lr 1e-4 (a lower backbone lr keeps fine-tuning from washing out the pretrained features, as in
BEiT / MAE segmentation fine-tuning), linear warm-up over the first 5 % of steps and a cosine decay (the shared
schedule of :func:`rspretrain.core.optim.lr_multiplier`); random square crops with the eight dihedral flips / rotations
(remote-sensing images have no canonical up); an "epoch" is ``crops_per_image`` crops per training image.

Training goes through the one Lightning harness (:class:`~rspretrain.downstream.dense.dense_task.DenseTask`,
:mod:`rspretrain.training.trainer`); ``benchmarks/dense_harness.py`` measures what that costs against a plain loop.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from rspretrain.core.bands import check_bands
from rspretrain.core.errors import ConfigError
from rspretrain.core.optim import OptimConfig, lr_multiplier
from rspretrain.downstream.frozen.features import EncoderSpec
from rspretrain.nn.backbones import is_transformer
from rspretrain.nn.decoders import FeaturePyramid

__all__ = [
    "DenseSchedule",
    "build_dense_optimizer",
    "check_data_bands",
    "check_dense_inputs",
    "crop_size_for",
    "encoder_pyramid",
    "random_crop_batch",
    "steps_for",
    "value_scale_for",
]

logger = logging.getLogger("rspretrain")


#: what standardises a dense task's inputs (:attr:`DenseSchedule.input_statistics`)
INPUT_STATISTICS = ("encoder", "train")


@dataclass
class DenseSchedule:
    """One training schedule for a dense task, identical for every backbone of a comparison.

    Attributes:
        epochs: passes of ``crops_per_image`` crops per training image.
        crops_per_image: random crops per training image and epoch.
        batch_size: crops (or detection images) per step.
        crop_size: training crop side and inference window side (transformers: forced to their input size).
        lr: AdamW lr of the decoder / heads.
        backbone_lr: AdamW lr of the backbone (ignored when frozen).
        weight_decay: AdamW weight decay.
        warmup_fraction: share of steps with linear lr warm-up.
        freeze_backbone: train the decoder only, on frozen backbone features (BatchNorm statistics fixed).
        norm_eval: fine-tune the backbone with its BatchNorm layers in eval mode (pretrained running statistics; see
            :class:`~rspretrain.nn.decoders.FeaturePyramid`).
        input_statistics: what standardises the inputs: ``encoder`` (the mean/std the backbone was pretrained with)
            or ``train`` (the task's training images' own per-band statistics: for a backbone pretrained on other
            imagery, e.g. Landsat reflectance fine-tuned on RGB aerial photographs).
        decoder_channels: width of the UPerNet decoder / FPN.
        overlap: sliding-window overlap in pixels at test time (None: a quarter of the window).
        seed: seed of crops, augmentation and head initialisation.
        device: torch device (``cpu``, ``cuda``, ``cuda:N``).
        devices: training processes (DDP); each draws ``batch_size`` crops of its own per step, and an epoch keeps
            ``crops_per_image`` crops per image over all of them. Rank 0 scores the test set.
        precision: Lightning precision of training (``32-true``, ``bf16-mixed``, ``16-mixed``, or ``auto``: bf16-mixed
            where the hardware computes in bf16; :mod:`rspretrain.training.fast_step`).
        progress: show progress bars.
    """

    epochs: int = 5
    crops_per_image: int = 8
    batch_size: int = 8
    crop_size: int = 128
    lr: float = 1e-3
    backbone_lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    freeze_backbone: bool = False
    norm_eval: bool = False
    input_statistics: str = "encoder"
    decoder_channels: int = 64
    overlap: int | None = None
    seed: int = 0
    device: str = "cpu"
    devices: int = 1
    precision: str = "32-true"
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "crops_per_image", "batch_size", "crop_size", "decoder_channels", "devices"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.batch_size < 2:
            raise ConfigError("batch_size must be >= 2 (BatchNorm in the decoder needs two samples)")
        if self.lr <= 0 or self.backbone_lr < 0 or self.weight_decay < 0:
            raise ConfigError(f"need lr > 0, backbone_lr >= 0, weight_decay >= 0 (got {self.lr}, "
                              f"{self.backbone_lr}, {self.weight_decay})")
        if not 0 <= self.warmup_fraction < 1:
            raise ConfigError(f"warmup_fraction must lie in [0, 1), got {self.warmup_fraction}")
        if self.input_statistics not in INPUT_STATISTICS:
            raise ConfigError(f"input_statistics must be one of {', '.join(INPUT_STATISTICS)}, got "
                              f"{self.input_statistics!r}")
        if self.overlap is not None and not 0 <= self.overlap < self.crop_size:
            raise ConfigError(f"overlap must lie in [0, crop_size), got {self.overlap}")
        from rspretrain.training.fast_step import check_precision
        from rspretrain.training.trainer import trainer_device

        self.precision = check_precision(self.precision, "precision")
        trainer_device(self.device)  # an unknown device fails here, not after data loading

    def window_overlap(self, window: int) -> int:
        return self.overlap if self.overlap is not None and self.overlap < window else window // 4

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def value_scale_for(spec: EncoderSpec, data_value_scale: float) -> float:
    """The encoder's pretraining value scale when it has one, else the data's (e.g. 255 for 8-bit images)."""
    if spec.value_scale is not None and spec.value_scale != data_value_scale:
        logger.info("%s: raw values divided by the model's value scale %g (the data's dtype suggests %g)",
                    spec.name, spec.value_scale, data_value_scale)
    return float(spec.value_scale if spec.value_scale is not None else data_value_scale)


def check_data_bands(spec: EncoderSpec, band_names: Sequence[str] | None, count: int, where: str) -> None:
    """Refuse data whose band count or order differs from the encoder's (BandMismatchError naming ``where``).

    Files that do not name their bands (e.g. a GeoTIFF without band descriptions) are checked by count only.
    """
    check_bands(spec.band_names, band_names, f"{where} (model {spec.name})", in_chans=len(spec.mean),
                actual_count=count)


def check_dense_inputs(
    specs: Sequence[EncoderSpec],
    band_names: Sequence[str] | None,
    count: int,
    where: str,
    rasters: Sequence[str | os.PathLike] = (),
    out_dir: str | os.PathLike | None = None,
) -> list[str]:
    """Everything that can be wrong before minutes of training: unique model names, the data's
    bands against every encoder, and the bands of any raster to predict. Returns the names."""
    from rspretrain.downstream.dense.sliding_window import raster_inputs_info

    names = [s.name for s in specs]
    if len(set(names)) != len(names) or not names:
        raise ConfigError(f"model names must be unique and at least one, got {names}")
    if rasters and out_dir is None:
        raise ConfigError("predicting rasters needs an output folder")
    for spec in specs:
        check_data_bands(spec, band_names, count, where)
    for raster in rasters:
        n, bands = raster_inputs_info([raster])
        check_data_bands(specs[0], bands, n, str(raster))
    return names


def encoder_arch(encoder: nn.Module) -> str | None:
    """timm architecture name of an encoder: a Backbone's ``arch``, an export's metadata, or timm's config."""
    if isinstance(getattr(encoder, "arch", None), str):
        return encoder.arch
    meta = getattr(encoder, "rs_meta", None)
    if isinstance(meta, dict) and meta.get("arch"):
        return str(meta["arch"])
    if isinstance(getattr(encoder, "rs_arch", None), str):
        return encoder.rs_arch
    cfg = getattr(encoder, "pretrained_cfg", None)
    return str(cfg["architecture"]) if isinstance(cfg, dict) and cfg.get("architecture") else None


def crop_size_for(spec: EncoderSpec, crop_size: int) -> int:
    """Transformers are built for one input size (position embeddings, windows): their crops take that size."""
    arch = encoder_arch(spec.encoder)
    if arch and is_transformer(str(arch)) and crop_size != spec.image_size:
        logger.info("%s: %s is a transformer built for %d px; crops and windows use %d px", spec.name, arch,
                    spec.image_size, spec.image_size)
        return int(spec.image_size)
    return crop_size


def encoder_pyramid(spec: EncoderSpec, freeze: bool, norm_eval: bool = False) -> FeaturePyramid:
    """A :class:`FeaturePyramid` over a private copy of the encoder (the spec's own weights stay untouched)."""
    return FeaturePyramid(copy.deepcopy(spec.encoder), freeze=freeze, norm_eval=norm_eval)


def build_dense_optimizer(
    head_parameters: Sequence[nn.Parameter],
    backbone_parameters: Sequence[nn.Parameter],
    schedule: DenseSchedule,
    total_steps: int,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with the decoder and backbone lrs (backbone group left out when frozen), warm-up + cosine per step."""
    groups = [{"params": [p for p in head_parameters if p.requires_grad], "lr": schedule.lr}]
    backbone = [p for p in backbone_parameters if p.requires_grad]
    if backbone and not schedule.freeze_backbone:
        groups.append({"params": backbone, "lr": schedule.backbone_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=schedule.weight_decay)
    cfg = OptimConfig(schedule="cosine", warmup_steps=int(schedule.warmup_fraction * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(cfg, step, total_steps))
    return optimizer, scheduler


def _dihedral(array: np.ndarray, k: int, flip: bool) -> np.ndarray:
    out = np.rot90(array, k, axes=(-2, -1))
    return out[..., ::-1] if flip else out


def random_crop_batch(
    items: Sequence[Sequence[np.ndarray]],
    crop_size: int,
    batch_size: int,
    rng: np.random.Generator,
    pad_values: Sequence[float],
) -> list[torch.Tensor]:
    """A batch of random square crops with random dihedral flips / rotations, the same for every array of an item.

    Args:
        items: per image a tuple of co-registered arrays, ``(C, H, W)`` or ``(H, W)`` (e.g. image + mask, or
            before + after + mask).
        crop_size: crop side; smaller images are padded at the bottom / right.
        batch_size: crops to draw; images are drawn with probability proportional to their area.
        rng: numpy random generator (the caller's seed makes the crops reproducible).
        pad_values: fill value of each array of an item where padding is needed (e.g. ignore_index for masks).

    Returns:
        One stacked tensor per array of an item: ``(B, C, crop, crop)`` or ``(B, crop, crop)``.
    """
    areas = np.array([item[0].shape[-2] * item[0].shape[-1] for item in items], np.float64)
    picks = rng.choice(len(items), size=batch_size, p=areas / areas.sum())
    out: list[list[np.ndarray]] = [[] for _ in items[0]]
    for i in picks:
        item = items[i]
        height, width = item[0].shape[-2:]
        top = int(rng.integers(0, max(0, height - crop_size) + 1))
        left = int(rng.integers(0, max(0, width - crop_size) + 1))
        k, flip = int(rng.integers(0, 4)), bool(rng.integers(0, 2))
        for j, (array, fill) in enumerate(zip(item, pad_values)):
            crop = array[..., top : top + crop_size, left : left + crop_size]
            if crop.shape[-2:] != (crop_size, crop_size):
                padded = np.full((*crop.shape[:-2], crop_size, crop_size), fill, dtype=crop.dtype)
                padded[..., : crop.shape[-2], : crop.shape[-1]] = crop
                crop = padded
            out[j].append(np.ascontiguousarray(_dihedral(crop, k, flip)))
    return [torch.from_numpy(np.stack(arrays)) for arrays in out]


def steps_for(n_images: int, schedule: DenseSchedule) -> int:
    """Optimiser steps per epoch: ``crops_per_image`` crops per training image, in batches of ``batch_size`` on
    each of ``devices`` processes."""
    return max(1, math.ceil(n_images * schedule.crops_per_image / (schedule.batch_size * schedule.devices)))
