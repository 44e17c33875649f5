"""Images for people: any band count to an RGB picture (the pictures of the dense-task reports)."""

from __future__ import annotations

import numpy as np

__all__ = ["display_rgb"]


def display_rgb(image: np.ndarray, band_names: tuple[str, ...] | None) -> np.ndarray:
    """``(H, W, 3)`` float image in [0, 1] for display: the RGB bands (else the first three, or the first band as
    grey), stretched between the 2nd and 98th percentile of each band."""
    from rspretrain.core.bands import rgb_indices

    rgb = rgb_indices(band_names, image.shape[0])
    if rgb is None:
        rgb = (0, 1, 2) if image.shape[0] >= 3 else (0, 0, 0)
    x = image[list(rgb)].astype(np.float32)
    low = np.percentile(x, 2, axis=(1, 2), keepdims=True)
    high = np.percentile(x, 98, axis=(1, 2), keepdims=True)
    x = (x - low) / np.maximum(high - low, 1e-6)
    return np.clip(x, 0, 1).transpose(1, 2, 0)
