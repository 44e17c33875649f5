"""Whole images and label maps of any band count, read for dense tasks (segmentation, change detection, detection).

Dense-task datasets keep every image whole (sizes differ, and test images are scored whole), so they cannot use the
fixed-size ``uint8`` stack of :class:`~rspretrain.data.InMemoryImageDataset`. This module reads one file into a
``(C, H, W)`` array with what the model check needs beside it:

- JPEG / PNG / BMP through Pillow, as RGB (bands ``red, green, blue``, value scale 255);
- GeoTIFF (and other GDAL formats) through :mod:`rasterio`, with all bands in the file's dtype. Band names come from
  the band descriptions when every band has one, else from the colour interpretation when it is exactly red, green,
  blue (as in 3-band aerial GeoTIFFs), else they are unknown (``None``) and only the band count can be checked.

The value scale maps raw values to [0, 1]: 255 for ``uint8``, the dtype's maximum for other integers, 1 for floats. A
model that knows its own scale (an exported backbone's ``value_scale``, e.g. 10,000 for Sentinel-2 reflectance)
overrides it; see :func:`rspretrain.downstream.dense.schedule.value_scale_for`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.errors
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from rasterio.enums import ColorInterp

from rspretrain.core.errors import DataError
from rspretrain.data.io.in_memory import RGB_BANDS

#: Suffixes read with rasterio (any band count and dtype); everything else goes through Pillow as RGB.
RASTER_SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".vrt", ".img", ".jp2")
#: Suffixes accepted as images and label maps by the dense-task folder readers.
DENSE_IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", *RASTER_SUFFIXES)


@dataclass(frozen=True, eq=False)
class ImageArray:
    """One image in memory.

    Attributes:
        array: pixels ``(C, H, W)`` in the file's dtype.
        band_names: band names in order, or None when the file does not say.
        value_scale: divisor that maps the raw values to [0, 1].
        path: the file read.
    """

    array: np.ndarray
    band_names: tuple[str, ...] | None
    value_scale: float
    path: Path


def dtype_value_scale(dtype: np.dtype) -> float:
    """Default divisor mapping raw values of ``dtype`` to [0, 1] (255 for uint8; 1 for floats)."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        return float(np.iinfo(dtype).max)
    return 1.0


def raster_band_names(source: rasterio.io.DatasetReader) -> tuple[str, ...] | None:
    """Band names of an open raster: its descriptions, else ``red, green, blue`` from an RGB colour interpretation."""
    descriptions = tuple(source.descriptions)
    if descriptions and all(descriptions):
        return tuple(str(d) for d in descriptions)
    if tuple(source.colorinterp) == (ColorInterp.red, ColorInterp.green, ColorInterp.blue):
        return RGB_BANDS
    return None


def _open_raster(path: Path) -> rasterio.io.DatasetReader:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        return rasterio.open(path)


def read_image_file(path: str | Path) -> ImageArray:
    """Read one image file whole (see the module docstring for formats and band names).

    Raises:
        DataError: the file is missing or not a readable image.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such image file")
    if path.suffix.lower() in RASTER_SUFFIXES:
        try:
            with _open_raster(path) as source:
                array = source.read()
                names = raster_band_names(source)
        except (rasterio.errors.RasterioError, OSError, ValueError) as error:
            raise DataError(f"{path}: not a readable raster ({' '.join(str(error).split())})") from None
        return ImageArray(array, names, dtype_value_scale(array.dtype), path)
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise DataError(f"{path}: not a readable image ({' '.join(str(error).split())})") from None
    return ImageArray(np.ascontiguousarray(array.transpose(2, 0, 1)), RGB_BANDS, 255.0, path)


def read_label_file(path: str | Path, colour: bool = False) -> np.ndarray:
    """Read a label map: ``(H, W)`` integer ids, or with ``colour=True`` an ``(H, W, 3)`` uint8 RGB colour mask.

    Palette PNGs are expanded to RGB for colour masks (their palette index is not the class id) and read as the
    palette index otherwise (the common way class-id PNGs are stored).

    Raises:
        DataError: the file is missing, unreadable, or (for ids) has more than one band.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such label file")
    try:
        if path.suffix.lower() in RASTER_SUFFIXES:
            with _open_raster(path) as source:
                array = source.read()
            if colour:
                if array.shape[0] < 3:
                    raise DataError(f"{path}: colour mask needs 3 bands, has {array.shape[0]}")
                return np.ascontiguousarray(array[:3].transpose(1, 2, 0).astype(np.uint8))
            if array.shape[0] != 1:
                raise DataError(f"{path}: a class-id mask must have one band, has {array.shape[0]}")
            return array[0]
        with Image.open(path) as image:
            if colour:
                return np.asarray(image.convert("RGB"))
            if image.mode not in ("L", "P", "I", "I;16", "1"):
                raise DataError(f"{path}: a class-id mask must be single-channel, got mode {image.mode}")
            return np.asarray(image)
    except (UnidentifiedImageError, rasterio.errors.RasterioError, OSError, ValueError) as error:
        raise DataError(f"{path}: not a readable label map ({' '.join(str(error).split())})") from None


def resize_image(array: np.ndarray, scale: float) -> np.ndarray:
    """Resize ``(C, H, W)`` by ``scale`` (bilinear, antialiased), keeping the dtype (integers are rounded)."""
    if scale == 1.0:
        return array
    size = (max(1, round(array.shape[1] * scale)), max(1, round(array.shape[2] * scale)))
    x = torch.from_numpy(array.astype(np.float32))[None]
    out = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)[0].numpy()
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(array.dtype)


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an ``(H, W)`` label map to ``size`` by nearest neighbour (labels must not be interpolated)."""
    if labels.shape == tuple(size):
        return labels
    # Source pixel whose centre is nearest each target pixel centre (torch's "nearest-exact"), by index arithmetic.
    rows = np.minimum(((np.arange(size[0]) + 0.5) * labels.shape[0] / size[0]).astype(np.int64), labels.shape[0] - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * labels.shape[1] / size[1]).astype(np.int64), labels.shape[1] - 1)
    return labels[np.ix_(rows, cols)]


def find_partner(folder: Path, stem: str, suffixes: tuple[str, ...] = DENSE_IMAGE_SUFFIXES) -> Path | None:
    """The file in ``folder`` named ``stem`` + one of ``suffixes`` (case-insensitive), or None."""
    for suffix in suffixes:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def list_images(folder: Path, suffixes: tuple[str, ...] = DENSE_IMAGE_SUFFIXES) -> list[Path]:
    """Image files directly in ``folder``, sorted by name (hidden files skipped)."""
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith(".")
    )
