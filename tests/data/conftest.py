"""Helpers for the dataset tests: small image files written on the fly, and a stand-in decoder."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rspretrain.data.io import decode


def write_image(path: Path, size: tuple[int, int] = (8, 6), value: int = 0, mode: str = "RGB") -> np.ndarray:
    """Write a lossless image (PNG/BMP/TIFF by extension) with distinct pixels; return its (H, W, 3) RGB array."""
    width, height = size
    rng = np.random.RandomState(value)
    array = rng.randint(0, 256, size=(height, width, 3), dtype=np.uint8)
    array[0, 0] = (value % 256, 7, 9)  # the first pixel encodes `value`, to tell images apart
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path)
    return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="session")
def jpeg_bytes(data_root: Path) -> bytes:
    """The bytes of one real JPEG (a EuroSAT patch)."""
    with zipfile.ZipFile(data_root / "eurosat_rgb" / "EuroSAT_RGB.zip") as archive:
        return archive.read("EuroSAT_RGB/AnnualCrop/AnnualCrop_1.jpg")


@pytest.fixture
def fake_decode(monkeypatch):
    """Replace the JPEG decoder by one that returns zeros, to test split selection without decoding.

    Use it with ``cache=False`` only (a cached array of zeros would poison later tests). Returns the list of calls.
    """
    calls: list[int] = []

    def fake(sources, image_size=None, skip_corrupt=False, num_threads=2):
        calls.append(len(sources))
        return decode.DecodedImages(np.zeros((len(sources), 3, 2, 2), np.uint8), list(range(len(sources))), [])

    monkeypatch.setattr(decode, "decode_images", fake)
    return calls


@pytest.fixture
def no_decode(monkeypatch):
    """Make any decoding fail: for asserting that a dataset is served from the disk cache."""

    def refuse(*args, **kwargs):
        raise AssertionError("decode_images was called although the decoded array is cached")

    monkeypatch.setattr(decode, "decode_images", refuse)


@pytest.fixture
def make_image():
    """The :func:`write_image` helper, as a fixture (test modules should not import conftest)."""
    return write_image
