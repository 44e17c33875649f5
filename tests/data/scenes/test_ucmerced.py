"""UC Merced read from the stored archive (shared/data/ucmerced, see its MANIFEST.md)."""

from __future__ import annotations

import csv
import io
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.data import UCMerced


@pytest.fixture(scope="module")
def table(data_root):
    with open(data_root / "ucmerced" / "splits.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _member(name: str) -> str:
    return name.split("UCMerced_LandUse_jpg_q85.zip:")[1]


def test_all_images_per_class(data_root):
    ds = UCMerced(data_root, split="all", image_size=64)
    assert len(ds) == 2100 and ds.images.shape == (2100, 3, 64, 64) and ds.images.dtype == torch.uint8
    assert ds.classes == (data_root / "ucmerced" / "classes.txt").read_text().split() and len(ds.classes) == 21
    assert ds.class_counts() == {c: 100 for c in ds.classes}


def test_smaller_images_are_resized_to_256(data_root, table):
    odd = {r["filename"]: (int(r["width"]), int(r["height"])) for r in table
           if r["split"] == "test" and (r["width"], r["height"]) != ("256", "256")}
    assert odd, "the manifest says some test images are smaller than 256x256"
    ds = UCMerced(data_root, split="test")
    assert ds.images.shape == (420, 3, 256, 256)
    # check one smaller image against Pillow's own bilinear resize of the stored JPEG
    index = next(i for i, f in enumerate(ds.files) if f.rsplit("/", 1)[1] in odd)
    with zipfile.ZipFile(data_root / "ucmerced" / "UCMerced_LandUse_jpg_q85.zip") as archive:
        image = Image.open(io.BytesIO(archive.read(_member(ds.files[index])))).convert("RGB")
    assert image.size == odd[ds.files[index].rsplit("/", 1)[1]]
    expected = np.asarray(image.resize((256, 256), Image.Resampling.BILINEAR))
    assert np.array_equal(ds[index]["image"].permute(1, 2, 0).numpy(), expected)


def test_no_image_size_fails_on_mixed_sizes(data_root):
    with pytest.raises(DataError, match="pass image_size"):
        UCMerced(data_root, split="test", image_size=None, cache=False)


@pytest.mark.parametrize("split, per_class", [("train", 60), ("val", 20), ("test", 20), ("trainval", 80)])
def test_manifest_splits(data_root, table, fake_decode, split, per_class):
    ds = UCMerced(data_root, split=split, cache=False)
    assert ds.class_counts() == {c: per_class for c in ds.classes}
    wanted = {"trainval": ("train", "val")}.get(split, (split,))
    expected = {f"UCMerced_LandUse/Images/{r['class_name']}/{r['filename']}" for r in table if r["split"] in wanted}
    assert {_member(f) for f in ds.files} == expected


def test_train_ratio_protocols(data_root, table, fake_decode):
    rank = {f"UCMerced_LandUse/Images/{r['class_name']}/{r['filename']}": int(r["rank_in_class"]) for r in table}
    half_train = UCMerced(data_root, split="train", train_ratio=0.5, cache=False)
    half_test = UCMerced(data_root, split="test", train_ratio=0.5, cache=False)
    assert half_train.class_counts() == {c: 50 for c in half_train.classes}
    assert half_test.class_counts() == {c: 50 for c in half_test.classes}
    assert all(rank[_member(f)] < 50 for f in half_train.files)
    assert all(rank[_member(f)] >= 50 for f in half_test.files)
    # 80% train = the manifest's train + val; its test = the manifest's test
    assert set(UCMerced(data_root, split="train", train_ratio=0.8, cache=False).files) == set(
        UCMerced(data_root, split="trainval", cache=False).files
    )
    assert set(UCMerced(data_root, split="test", train_ratio=0.8, cache=False).files) == set(
        UCMerced(data_root, split="test", cache=False).files
    )
    assert len(UCMerced(data_root, split="all", train_ratio=0.8, cache=False)) == 2100


def test_max_per_class_and_order(data_root, table, fake_decode):
    rank = {f"UCMerced_LandUse/Images/{r['class_name']}/{r['filename']}": int(r["rank_in_class"]) for r in table}
    ds = UCMerced(data_root, split="train", max_per_class=4, cache=False)
    assert ds.class_counts() == {c: 4 for c in ds.classes}
    keys = [(label, rank[_member(f)]) for f, label in zip(ds.files, ds.labels.tolist())]
    assert keys == [(label, r) for label in range(21) for r in range(4)]  # label, then rank_in_class


def test_bad_arguments(data_root):
    with pytest.raises(ConfigError, match="unknown split 'val'"):
        UCMerced(data_root, split="val", train_ratio=0.5)
    with pytest.raises(ConfigError, match="train_ratio"):
        UCMerced(data_root, train_ratio=1.0)
    with pytest.raises(ConfigError, match="unknown split"):
        UCMerced(data_root, split="training")
