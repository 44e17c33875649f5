"""The CIFAR-10 subset read from its archive (shared/data/cifar10_subset, see its MANIFEST.md)."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from rspretrain.core.errors import ConfigError
from rspretrain.data import CIFAR10Subset

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.mark.parametrize("split, per_class", [("train", 800), ("test", 200)])
def test_splits(data_root, split, per_class):
    ds = CIFAR10Subset(data_root, split=split)
    assert ds.classes == CLASSES
    assert len(ds) == 10 * per_class and ds.class_counts() == {c: per_class for c in CLASSES}
    assert ds.images.shape == (10 * per_class, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert all(f.split("cifar10_subset.zip:")[1].startswith(f"{split}/") for f in ds.files)
    for name, label in zip(ds.files, ds.labels.tolist()):
        assert name.split("/")[-2] == CLASSES[label]
    with zipfile.ZipFile(data_root / "cifar10_subset" / "cifar10_subset.zip") as archive:
        member = ds.files[-1].split("cifar10_subset.zip:")[1]
        expected = np.asarray(Image.open(io.BytesIO(archive.read(member))).convert("RGB"))
    assert np.array_equal(ds[len(ds) - 1]["image"].permute(1, 2, 0).numpy(), expected)


def test_all(data_root, fake_decode):
    ds = CIFAR10Subset(data_root, split="all", cache=False)
    assert len(ds) == 10000 and ds.class_counts() == {c: 1000 for c in CLASSES}


def test_bad_split(data_root):
    with pytest.raises(ConfigError, match="unknown split 'val'"):
        CIFAR10Subset(data_root, split="val")
