"""Small files in the layouts of torchgeo's datasets, written in a test's tmp_path (torchgeo's own tests do the same:
``tests/data/<dataset>/data.py``): nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import timm
import torch
from rasterio.transform import from_origin

#: torchgeo's EuroSAT band order (B8A last), as its GeoTIFFs store them.
EUROSAT_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A")
EUROSAT_DIR = Path("ds/images/remote_sensing/otherDatasets/sentinel_2/tif")


def write_eurosat(root: Path, classes: tuple[str, ...] = ("AnnualCrop", "Forest", "SeaLake"), train: int = 8,
                  test: int = 4, size: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """torchgeo's EuroSAT layout: 13-band uint16 GeoTIFFs in class folders and ``eurosat-{train,val,test}.txt``.

    Each class has its own spectrum (class c is bright in band c + 1: B02 blue, B03 green, B04 red, ...) plus noise and
    a smooth texture, so classes are separable by colour but no two images are alike.

    Returns:
        ``{file name: (13, size, size) uint16 array}`` of every image written.
    """
    rng = np.random.default_rng(seed)
    folder = root / EUROSAT_DIR
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    arrays = {}
    yy, xx = np.mgrid[0:size, 0:size] / size
    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        spectrum = 800 + 120 * np.arange(13, dtype=np.float64)
        spectrum[(c + 1) % 13] += 2500
        for i in range(train + test):
            texture = 300 * np.sin(2 * np.pi * (rng.uniform(0.5, 2) * xx + rng.uniform(0, 1) * yy))
            array = spectrum[:, None, None] + texture[None] + rng.normal(0, 80, (13, size, size))
            array = np.clip(array, 0, 65535).astype(np.uint16)
            file = f"{name}_{i + 1}.tif"
            with rasterio.open(folder / name / file, "w", driver="GTiff", count=13, height=size, width=size,
                               dtype="uint16", crs="EPSG:32632",
                               transform=from_origin(500000 + 1000 * i, 5000000, 10, 10)) as dst:
                dst.write(array)
            arrays[file] = array
            splits["train" if i < train else "test"].append(file.replace(".tif", ".jpg"))
    for split, files in splits.items():
        (root / f"eurosat-{split}.txt").write_text("".join(f + "\n" for f in files))
    return arrays


def write_sentinel2(folder: Path, bands: tuple[str, ...] = ("B02", "B03", "B04", "B08"), size: int = 48,
                    left: float = 600000.0, top: float = 5200000.0) -> dict[str, np.ndarray]:
    """One Sentinel-2 tile as torchgeo's ``Sentinel2`` finds it: a single-band uint16 GeoTIFF per band, named
    ``T32ULU_20200101T100000_<band>.tif``, 10 m pixels in EPSG:32632, top-left corner at (``left``, ``top``).

    Band k's pixel (r, c) holds ``1000 (k + 1) + r size + c``, so every chip's values say where it was cut from.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rows, cols = np.mgrid[0:size, 0:size]
    arrays = {}
    for k, band in enumerate(bands):
        array = (1000 * (k + 1) + rows * size + cols).astype(np.uint16)
        with rasterio.open(folder / f"T32ULU_20200101T100000_{band}.tif", "w", driver="GTiff", count=1, height=size,
                           width=size, dtype="uint16", crs="EPSG:32632",
                           transform=from_origin(left, top, 10, 10)) as dst:
            dst.write(array[None])
        arrays[band] = array
    return arrays


def window_of(bounds, left: float = 600000.0, top: float = 5200000.0, res: float = 10.0) -> tuple[slice, slice]:
    """The (rows, cols) of the tile written by :func:`write_sentinel2` that a chip's (minx, miny, maxx, maxy) covers."""
    minx, miny, maxx, maxy = (float(v) for v in bounds)
    row0, col0 = round((top - maxy) / res), round((minx - left) / res)
    return slice(row0, row0 + round((maxy - miny) / res)), slice(col0, col0 + round((maxx - minx) / res))


def write_torchgeo_weights(path: Path, arch: str = "resnet18", in_chans: int = 3, seed: int = 1,
                           drop: str | None = None) -> dict[str, torch.Tensor]:
    """A weights file in the format of torchgeo's published ``.pth`` files: ``torch.save`` of a timm model's state
    dict (classifier included, as some of them have it), optionally without the key ``drop``."""
    torch.manual_seed(seed)
    state = timm.create_model(arch, pretrained=False, in_chans=in_chans).state_dict()
    if drop is not None:
        del state[drop]
    torch.save(state, path)
    return state
