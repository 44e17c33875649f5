"""Decode one stored image into training input in a DataLoader worker: random-resized crops taken from the original.

The papers' view recipes (MoCo v2 [0], BYOL [1], GeRSP [2]) crop each view from the image as stored, at whatever
size it has, and resize the crop to the training size (torchvision's ``RandomResizedCrop``). At the papers' scale
(Million-AID's images run from 100 to over 30,000 px a side) the images cannot be held decoded, nor stretched to one
size first without changing what a crop shows, so the crop is taken here, at decode time, one box per view:

* the boxes are drawn as ``RandomResizedCrop`` draws them (area fraction uniform in ``scale``, log aspect ratio
  uniform in ``log(ratio)``, ten attempts, then torchvision's fallback: the centre crop of clamped ratio), in the
  image's own pixels, from a NumPy generator seeded by (seed, epoch, sample) -- so a resumed run draws the same boxes;
* JPEGs are decoded reduced (Pillow's ``draft``: the DCT scaled by 1/2, 1/4 or 1/8) as far as every box still keeps
  at least the output size in pixels, so a small crop of a 4000-px photo costs a fraction of a full decode;
* each box is resized to the output size with Pillow's antialiased bilinear filter (``resize(box=...)``, which
  crops and resizes in one pass).

The rest of a recipe (flip, colour, blur, masks) stays batched on the model's device; the boxes travel with the crops
so position-aware recipes (CMID's cell matching) still know where each view lies in the source.

With no per-view scales (:attr:`DecodePlan.crop_scales` empty) the whole image is resized to the output size instead
("resize before crop": CMID's released code, and the in-memory fast path), and the device recipe crops from that.

Pixel limit: Pillow refuses images above ``Image.MAX_IMAGE_PIXELS`` as possible decompression bombs. Here that check
is replaced by :attr:`DecodePlan.max_image_pixels` (``data.max_image_pixels``, default 2**28, e.g. 16384 x 16384):
an image within it is read (reduced where the crops allow), one above it is a :class:`DataError` naming the file
and the key (or is skipped and counted with ``skip_corrupt``). Written by hand: no library crops from a JPEG's
reduced decode by box.

References:
    - [0] MoCo v2, Chen et al. 2020, https://arxiv.org/abs/2003.04297
    - [1] BYOL, Grill et al. 2020, https://arxiv.org/abs/2006.07733
    - [2] GeRSP, Huang et al., IEEE TGRS 2024, https://arxiv.org/abs/2401.04614
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from rspretrain.core.errors import DataError
from rspretrain.data.io.decode import DEFAULT_MAX_IMAGE_PIXELS, EIGHT_BIT_MODES, pixel_limit_off


@dataclass(frozen=True)
class DecodePlan:
    """What a worker makes of one stored image.

    Attributes:
        size: side of every output image in pixels.
        crop_scales: per view, the (min, max) area fraction of its random-resized crop; empty: resize the whole
            image to ``size`` x ``size`` (the device recipe crops afterwards).
        ratio: aspect-ratio range of the crops.
        max_image_pixels: largest image (width x height) that is read; see the module docstring.
    """

    size: int
    crop_scales: tuple[tuple[float, float], ...] = ()
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS

    def __post_init__(self) -> None:
        if int(self.size) < 1:
            raise ValueError(f"size must be positive, got {self.size}")
        for low, high in self.crop_scales:
            if not 0 < low <= high <= 1:
                raise ValueError(f"crop scale ({low}, {high}) must satisfy 0 < min <= max <= 1")
        if int(self.max_image_pixels) < 1:
            raise ValueError(f"max_image_pixels must be positive, got {self.max_image_pixels}")


def sample_crop_box(
    rng: np.random.Generator, width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> tuple[int, int, int, int]:
    """One ``(x0, y0, w, h)`` box drawn as torchvision's ``RandomResizedCrop.get_params``."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    # Fallback: the centre crop whose aspect ratio is clamped into ``ratio``.
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def open_image(data: bytes, name: str, max_image_pixels: int) -> Image.Image:
    """Open stored image bytes lazily (header only), checking the pixel limit and the sample depth."""
    if not data:
        raise DataError(f"{name}: empty image record")
    try:
        with pixel_limit_off():
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise DataError(f"{name}: not a recognised image format") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad bytes
        raise DataError(f"{name}: not a readable image ({' '.join(str(exc).split()) or type(exc).__name__})") from None
    width, height = image.size
    if width * height > max_image_pixels:
        raise DataError(f"{name}: {width}x{height} px is above max_image_pixels={max_image_pixels} "
                        "(raise data.max_image_pixels to read it, or skip such images with skip_corrupt)")
    if image.mode not in EIGHT_BIT_MODES:
        raise DataError(f"{name}: {image.mode} image (more than 8 bits per sample) cannot be read as 8-bit RGB "
                        "without losing values")
    return image


def load_rgb(image: Image.Image, name: str, min_size: tuple[int, int]) -> tuple[Image.Image, float, float]:
    """Decode (reduced for JPEG, to no less than ``min_size``) as RGB; returns the image and its x/y scale."""
    width, height = image.size
    if image.format == "JPEG":
        image.draft("RGB", (max(1, min_size[0]), max(1, min_size[1])))
    try:
        with pixel_limit_off():
            image.load()
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt data
        raise DataError(f"{name}: cannot decode ({' '.join(str(exc).split()) or type(exc).__name__})") from None
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return rgb, rgb.size[0] / width, rgb.size[1] / height


def decode_crops(
    data: bytes, plan: DecodePlan, rng: np.random.Generator, name: str = "image"
) -> tuple[np.ndarray, np.ndarray]:
    """The plan's input from one stored image.

    Returns:
        ``(images, boxes)``: uint8 ``(V, 3, S, S)`` crops and float32 ``(V, 4)`` boxes ``(x0, y0, w, h)`` in the
        stored image's pixels, one per ``plan.crop_scales``; with no crop scales, ``(1, 3, S, S)`` of the whole
        image resized, and its whole-image box.

    Raises:
        DataError: unreadable bytes, an image above ``plan.max_image_pixels``, or more than 8 bits per sample.
    """
    image = open_image(data, name, plan.max_image_pixels)
    width, height = image.size
    size = int(plan.size)
    if plan.crop_scales:
        boxes = [sample_crop_box(rng, width, height, scale, plan.ratio) for scale in plan.crop_scales]
    else:
        boxes = [(0, 0, width, height)]
    # Reduce as far as the smallest box side still spans ``size`` pixels after reduction.
    shrink = max(1.0, min(min(w, h) for _, _, w, h in boxes) / size)
    decoded, sx, sy = load_rgb(image, name, (math.ceil(width / shrink), math.ceil(height / shrink)))
    out = np.empty((len(boxes), 3, size, size), dtype=np.uint8)
    for v, (x0, y0, w, h) in enumerate(boxes):
        crop = decoded.resize((size, size), Image.Resampling.BILINEAR,
                              box=(x0 * sx, y0 * sy, (x0 + w) * sx, (y0 + h) * sy))
        out[v] = np.asarray(crop, dtype=np.uint8).transpose(2, 0, 1)
    return out, np.asarray(boxes, dtype=np.float32)
