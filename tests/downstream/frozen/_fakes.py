"""Small in-memory scene datasets that follow the rspretrain.data scene-dataset contract."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class FakeSceneDataset:
    """``images`` uint8 (N, C, H, W), ``labels`` int64 (N,), ``classes``, ``band_names``, ``value_scale``."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: Sequence[int] | torch.Tensor,
        classes: Sequence[str] | None = None,
        band_names: tuple[str, ...] | None = ("red", "green", "blue"),
        value_scale: float = 255.0,
    ) -> None:
        self.images = images
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        n_classes = int(self.labels.max()) + 1 if len(self.labels) else 0
        self.classes = list(classes) if classes is not None else [f"class{i}" for i in range(n_classes)]
        if band_names is not None:
            self.band_names = tuple(band_names)
        self.value_scale = value_scale
        self.calls: list[list[int]] = []

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        self.calls.append(list(indices))
        return {"image": self.images[indices], "label": self.labels[indices]}


COLOURS = ((200, 40, 40), (40, 200, 40), (40, 40, 200))


def colour_clusters(
    n_per_class: int, size: int = 8, seed: int = 0, colours: Sequence[Sequence[int]] = COLOURS
) -> FakeSceneDataset:
    """One class per colour: every image is its class colour plus uniform noise in [-20, 20], labels 0,1,2,0,1,2,..."""
    g = torch.Generator().manual_seed(seed)
    n_classes = len(colours)
    labels = torch.arange(n_per_class * n_classes) % n_classes
    base = torch.tensor(colours, dtype=torch.int16)[labels].view(-1, 3, 1, 1)
    noise = torch.randint(-20, 21, (len(labels), 3, size, size), generator=g, dtype=torch.int16)
    return FakeSceneDataset((base + noise).clamp(0, 255).to(torch.uint8), labels)


class MeanPool(nn.Module):
    """Global average pool: (B, C, H, W) -> (B, C); makes expected features computable by hand."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class Flatten(nn.Module):
    """(B, C, H, W) -> (B, C*H*W); exposes every pre-processed pixel, so resizing can be checked exactly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)
