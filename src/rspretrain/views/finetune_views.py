"""Training and test views for supervised scene classification (fine-tuning), batched on the model's device.

Training: RandomResizedCrop (area ``crop_scale_min``-``crop_scale_max``, aspect 3/4-4/3) back to the input size,
horizontal and vertical flips (p = 0.5 each; aerial and satellite scenes have no canonical "up"), then per-band
standardisation. Test: standardisation only (the datasets are decoded at the training size, so nothing is cropped).
No colour jitter: fine-tuning recipes for RS scene classification (e.g. torchgeo's) keep colours, which carry class
information (water, vegetation) -- and the ops stay safe for any band count.

Crop and horizontal flip are one ``grid_sample`` (:func:`rspretrain.views.functional.crop_resize_flip`); the
vertical flip is a batched ``torch.where``. The crop's lower area bound defaults to 0.5 rather than torchvision's
0.08: our inputs are small (64-96 px), and a crop of 8 % of a 64 px scene is a 18 px patch that often holds no
evidence of the class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from rspretrain.core.errors import ConfigError
from rspretrain.views import functional as VF


@dataclass
class AugmentConfig:
    """The ``augment`` settings of fine-tuning (``--augment.key value`` on the command line)."""

    crop_scale_min: float = 0.5
    crop_scale_max: float = 1.0
    hflip_p: float = 0.5
    vflip_p: float = 0.5


class SceneClassificationViews(nn.Module):
    """uint8/raw batch -> standardised float batch, augmented in training.

    Args:
        image_size: output side in pixels.
        mean, std: per-band statistics in the [0, 1] value range.
        value_scale: divisor mapping raw values to [0, 1] (255 for uint8).
        config: augmentation parameters.
    """

    def __init__(
        self,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        value_scale: float = 255.0,
        config: AugmentConfig | None = None,
    ) -> None:
        super().__init__()
        self.image_size = int(image_size)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.value_scale = float(value_scale)
        self.cfg = config or AugmentConfig()
        c = self.cfg
        if not 0.0 < c.crop_scale_min <= c.crop_scale_max <= 1.0:
            raise ConfigError(f"augment.crop_scale_min/max must satisfy 0 < min <= max <= 1, got "
                              f"{c.crop_scale_min}/{c.crop_scale_max}")

    @torch.no_grad()
    def train_view(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augmented, standardised view of a raw batch ``(B, C, H, W)``."""
        c = self.cfg
        x = VF.to_float(images, self.value_scale)
        b, _, h, w = x.shape
        boxes = VF.sample_resized_crops(
            b, h, w, scale=(c.crop_scale_min, c.crop_scale_max), device=x.device, generator=generator
        )
        hflip = torch.rand(b, device=x.device, generator=generator) < c.hflip_p
        x = VF.crop_resize_flip(x, boxes, self.image_size, hflip)
        vflip = torch.rand(b, device=x.device, generator=generator) < c.vflip_p
        x = torch.where(vflip.view(b, 1, 1, 1), x.flip(-2), x)
        return VF.normalize(x, self.mean, self.std)

    @torch.no_grad()
    def test_view(self, images: torch.Tensor) -> torch.Tensor:
        """Standardised raw batch, resized (antialiased) to ``image_size`` if it is not already that size."""
        return VF.preprocess_images(images, self.value_scale, self.mean, self.std, self.image_size)

    def forward(self, images: torch.Tensor, train: bool = True) -> torch.Tensor:
        return self.train_view(images) if train else self.test_view(images)


__all__ = ["AugmentConfig", "SceneClassificationViews"]
