"""Frozen-encoder feature extraction for scene-classification protocols.

The frozen-feature protocols (weighted kNN, linear probe) of self-supervised learning papers -- Wu et al. 2018
("Unsupervised Feature Learning via Non-Parametric Instance Discrimination"), He et al. 2020 (MoCo), Chen et al. 2020
(SimCLR), Caron et al. 2021 (DINO) -- all score a *fixed* encoder: images are pre-processed exactly like at
pretraining time, passed once through the encoder in eval mode, and the pooled features are handed to a cheap
classifier. This module does that one pass.

A dataset is anything following the scene-dataset contract of :mod:`rspretrain.data`: ``__len__``,
``__getitems__(indices) -> {"image": uint8 (B, C, H, W), "label": int64 (B,)}``, ``value_scale`` (images are divided
by it to land in [0, 1]) and optionally ``band_names``.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from rspretrain.core.bands import check_bands
from rspretrain.core.errors import ConfigError, DataError
from rspretrain.views.functional import preprocess_images

__all__ = ["EncoderSpec", "SceneDataset", "extract_features", "preprocess_images"]


class SceneDataset(Protocol):
    """Structural type of the scene datasets this package consumes (see :mod:`rspretrain.data`)."""

    value_scale: float

    def __len__(self) -> int: ...

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]: ...


@dataclass
class EncoderSpec:
    """A frozen encoder together with the pre-processing it was trained with.

    Attributes:
        name: Label used for this model in results, tables and plots.
        encoder: Module mapping a normalised float batch (B, C, H, W) to pooled features (B, D).
        mean: Per-band mean in the [0, 1] value range, subtracted before the encoder.
        std: Per-band standard deviation in the [0, 1] value range, divided out before the encoder.
        image_size: Side length (pixels) images are resized to before the encoder.
        band_names: Band order the encoder expects, or None to only check the band count against ``mean``.
        value_scale: Divisor mapping raw values to [0, 1] at pretraining time (e.g. 10,000 for Sentinel-2
            reflectance), or None to use the dataset's own (dense tasks read it; scene protocols use the dataset's).
    """

    name: str
    encoder: nn.Module
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int
    band_names: tuple[str, ...] | None = None
    value_scale: float | None = None

    def __post_init__(self) -> None:
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        if self.band_names is not None:
            self.band_names = tuple(self.band_names)
        if not self.name:
            raise ConfigError("EncoderSpec.name must be a non-empty string")
        if len(self.mean) == 0 or len(self.mean) != len(self.std):
            raise ConfigError(
                f"EncoderSpec '{self.name}': mean ({len(self.mean)} values) and std ({len(self.std)} values) "
                "must have one value per band"
            )
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"EncoderSpec '{self.name}': std values must be > 0, got {list(self.std)}")
        size = self.image_size
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise ConfigError(f"EncoderSpec '{self.name}': image_size must be a positive integer, got {size!r}")
        self.image_size = int(size)
        if self.band_names is not None and len(self.band_names) != len(self.mean):
            raise ConfigError(
                f"EncoderSpec '{self.name}': {len(self.band_names)} band_names {list(self.band_names)} "
                f"but {len(self.mean)} mean/std values"
            )


def _check_bands(spec: EncoderSpec, dataset_bands: Sequence[str] | None, num_channels: int | None) -> None:
    """Raise BandMismatchError when the dataset's bands cannot be fed to ``spec`` as they are (the one band check,
    :func:`rspretrain.core.bands.check_bands`; the band count is checked against the encoder's mean/std)."""
    check_bands(spec.band_names, dataset_bands, f"encoder '{spec.name}'", len(spec.mean), num_channels)


def _check_finite_weights(spec: EncoderSpec) -> None:
    """A DataError naming the model and its first parameter or buffer that holds NaN or inf (a diverged run's
    checkpoint, a damaged export), before any compute."""
    for name, tensor in [*spec.encoder.named_parameters(), *spec.encoder.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise DataError(f"encoder '{spec.name}': its weights are not finite ({name}: {bad} of {tensor.numel()} "
                            "values are NaN or inf)")


def _module_device(module: nn.Module) -> torch.device | None:
    """Device of the module's first parameter or buffer, or None for a stateless module."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return None


def extract_features(
    spec: EncoderSpec,
    dataset: SceneDataset,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Run a frozen encoder over a scene dataset once and collect pooled features.

    Images are taken in dataset order through ``__getitems__``, scaled by ``dataset.value_scale``, resized to
    ``spec.image_size`` if needed, normalised with ``spec.mean``/``spec.std`` and encoded under
    ``torch.inference_mode()`` with the encoder in eval mode (BatchNorm uses running statistics, dropout is off), as in
    the frozen-feature protocols of Wu et al. 2018, MoCo (He et al. 2020) and DINO (Caron et al. 2021). The encoder's
    train/eval mode and device are restored afterwards so the caller's training loop is not disturbed.

    Args:
        spec: Encoder and its pre-processing.
        dataset: Scene dataset (see module docstring).
        batch_size: Images per forward pass.
        device: Device to run the encoder on.
        progress: Show a tqdm progress bar.

    Returns:
        ``(features, labels)``: float32 array (N, D) and int64 array (N,), in dataset order.

    Raises:
        BandMismatchError: The dataset's band names or band count differ from what the encoder expects.
        DataError: The dataset is empty; the encoder's weights or features hold NaN or inf (named).
        ConfigError: ``batch_size`` < 1, or the encoder does not return (B, D) features.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    dataset_bands = getattr(dataset, "band_names", None)
    # Check before any compute: a wrong band order silently produces plausible-looking but meaningless numbers.
    _check_bands(spec, dataset_bands, len(dataset_bands) if dataset_bands is not None else None)
    n = len(dataset)
    if n == 0:
        raise DataError("cannot extract features from an empty dataset")
    _check_finite_weights(spec)

    device = torch.device(device)
    encoder = spec.encoder
    was_training = encoder.training
    original_device = _module_device(encoder)
    if original_device is not None and original_device != device:
        encoder.to(device)
    encoder.eval()

    features: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    try:
        with torch.inference_mode(), tqdm(
            total=n, desc=f"features {spec.name}", unit="img", disable=not progress, leave=False
        ) as bar:
            for start in range(0, n, batch_size):
                batch: dict[str, Any] = dataset.__getitems__(list(range(start, min(start + batch_size, n))))
                images = batch["image"]
                _check_bands(spec, None, images.shape[1])
                x = preprocess_images(images.to(device), dataset.value_scale, spec.mean, spec.std, spec.image_size)
                out = encoder(x)
                if out.ndim != 2 or out.shape[0] != images.shape[0]:
                    raise ConfigError(
                        f"encoder '{spec.name}' must return pooled features (B, D), got shape {tuple(out.shape)}"
                    )
                finite = torch.isfinite(out).all(dim=1)
                if not bool(finite.all()):
                    # A kNN over NaN features scores a constant class (a plausible-looking 50 %), and the linear probe
                    # crashes later: stop here, naming the model and the images.
                    first = start + int((~finite).nonzero()[0, 0])
                    raise DataError(f"encoder '{spec.name}' gives non-finite features for {int((~finite).sum())} of "
                                    f"{len(finite)} images in the batch from sample {start} (first: sample {first})")
                features.append(out.float().cpu())
                labels.append(torch.as_tensor(batch["label"]).long().cpu())
                bar.update(images.shape[0])
    finally:
        encoder.train(was_training)
        if original_device is not None and original_device != device:
            encoder.to(original_device)
    return torch.cat(features).numpy(), torch.cat(labels).numpy()
