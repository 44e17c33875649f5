"""EuroSAT read from the stored archive (shared/data/eurosat_rgb, see its MANIFEST.md)."""

from __future__ import annotations

import csv
import io
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.data import EuroSAT

# Per-class image counts of the full dataset, from the MANIFEST (= the published dataset).
MANIFEST_COUNTS = {
    "AnnualCrop": 3000, "Forest": 3000, "HerbaceousVegetation": 3000, "Highway": 2500, "Industrial": 2500,
    "Pasture": 2000, "PermanentCrop": 2500, "Residential": 3000, "River": 2500, "SeaLake": 3000,
}


@pytest.fixture(scope="module")
def eurosat_all(data_root):
    """All 27,000 images, decoded for real (a few seconds; later constructions hit the cache)."""
    return EuroSAT(data_root, split="all")


@pytest.fixture(scope="module")
def table(data_root):
    with open(data_root / "eurosat_rgb" / "splits.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_all_images(eurosat_all, data_root):
    ds = eurosat_all
    assert len(ds) == 27000
    assert ds.images.shape == (27000, 3, 64, 64) and ds.images.dtype == torch.uint8
    assert ds.labels.shape == (27000,) and ds.labels.dtype == torch.int64
    assert ds.classes == (data_root / "eurosat_rgb" / "classes.txt").read_text().split()
    assert ds.class_counts() == MANIFEST_COUNTS
    assert ds.band_names == ("red", "green", "blue") and ds.skipped == []
    # every label matches the class folder of its archive member
    for name, label in zip(ds.files, ds.labels.tolist()):
        assert name.split(":")[-1].split("/")[1] == ds.classes[label]


def test_pixels_are_the_jpeg_pixels(eurosat_all, data_root):
    with zipfile.ZipFile(data_root / "eurosat_rgb" / "EuroSAT_RGB.zip") as archive:
        for index in (0, 13_500, 26_999):
            member = eurosat_all.files[index].split("EuroSAT_RGB.zip:")[1]
            expected = np.asarray(Image.open(io.BytesIO(archive.read(member))).convert("RGB"))
            assert np.array_equal(eurosat_all[index]["image"].permute(1, 2, 0).numpy(), expected)


@pytest.mark.parametrize(
    "split, fraction",
    [("train", (0.0, 0.6)), ("val", (0.6, 0.8)), ("test", (0.8, 1.0)), ("trainval", (0.0, 0.8))],
)
def test_split_sizes(data_root, table, fake_decode, split, fraction):
    ds = EuroSAT(data_root, split=split, cache=False)
    expected = {c: round((fraction[1] - fraction[0]) * n) for c, n in MANIFEST_COUNTS.items()}
    assert ds.class_counts() == expected
    assert len(ds) == {"train": 16200, "val": 5400, "test": 5400, "trainval": 21600}[split]
    wanted = {"trainval": ("train", "val")}.get(split, (split,))
    members = {f"EuroSAT_RGB/{r['class_name']}/{r['filename']}" for r in table if r["split"] in wanted}
    assert {f.split(":")[-1] for f in ds.files} == members


def test_splits_partition_the_dataset(data_root, fake_decode):
    files = {s: set(EuroSAT(data_root, split=s, cache=False).files) for s in ("train", "val", "test", "all")}
    assert not files["train"] & files["val"] and not files["train"] & files["test"] and not files["val"] & files["test"]
    assert files["train"] | files["val"] | files["test"] == files["all"] and len(files["all"]) == 27000


def test_max_per_class_uses_rank_in_class(data_root, table, fake_decode):
    rank = {f"EuroSAT_RGB/{r['class_name']}/{r['filename']}": int(r["rank_in_class"]) for r in table}
    train = EuroSAT(data_root, split="train", max_per_class=7, cache=False)
    assert train.class_counts() == {c: 7 for c in MANIFEST_COUNTS}
    assert sorted({rank[f.split(":")[-1]] for f in train.files}) == list(range(7))
    # in val, the k rows of lowest rank of each class: ranks 0.6 n .. 0.6 n + k - 1
    val = EuroSAT(data_root, split="val", max_per_class=3, cache=False)
    for name, label in zip(val.files, val.labels.tolist()):
        start = round(0.6 * MANIFEST_COUNTS[val.classes[label]])
        assert start <= rank[name.split(":")[-1]] < start + 3
    assert len(val) == 30
    # a smaller k is a subset of a larger one
    assert set(EuroSAT(data_root, split="train", max_per_class=3, cache=False).files) < set(train.files)


def test_small_subset_matches_full_set(data_root, eurosat_all, monkeypatch):
    small = EuroSAT(data_root, split="test", max_per_class=2)
    position = {f: i for i, f in enumerate(eurosat_all.files)}
    rows = [position[f] for f in small.files]
    assert torch.equal(small.images, eurosat_all.images[rows])
    assert torch.equal(small.labels, eurosat_all.labels[rows])
    from rspretrain.data.io import decode

    monkeypatch.setattr(decode, "decode_images", lambda *a, **k: pytest.fail("decoded despite the cache"))
    again = EuroSAT(data_root, split="test", max_per_class=2)
    assert torch.equal(again.images, small.images)


def test_order_is_label_then_rank(data_root, table, fake_decode):
    rank = {f"EuroSAT_RGB/{r['class_name']}/{r['filename']}": int(r["rank_in_class"]) for r in table}
    val = EuroSAT(data_root, split="val", cache=False)
    keys = [(label, rank[f.split(":")[-1]]) for f, label in zip(val.files, val.labels.tolist())]
    assert keys == sorted(keys)
    # so the first k of each class in dataset order are exactly the max_per_class=k selection
    first_four = [f for i, f in enumerate(val.files) if i - val.labels.tolist().index(val.labels[i].item()) < 4]
    assert first_four == EuroSAT(data_root, split="val", max_per_class=4, cache=False).files


def test_dataset_folder_itself_is_accepted(data_root, fake_decode):
    assert len(EuroSAT(data_root / "eurosat_rgb", split="val", max_per_class=1, cache=False)) == 10


def test_bad_arguments(data_root, tmp_path):
    with pytest.raises(ConfigError, match="unknown split 'validation'"):
        EuroSAT(data_root, split="validation")
    with pytest.raises(ConfigError, match="max_per_class"):
        EuroSAT(data_root, max_per_class=0)
    with pytest.raises(DataError, match="eurosat_rgb"):
        EuroSAT(tmp_path)


def _copy_with_table(data_root, tmp_path, edit):
    folder = tmp_path / "eurosat_rgb"
    folder.mkdir(parents=True)
    (folder / "EuroSAT_RGB.zip").symlink_to(data_root / "eurosat_rgb" / "EuroSAT_RGB.zip")
    (folder / "classes.txt").write_text((data_root / "eurosat_rgb" / "classes.txt").read_text())
    lines = (data_root / "eurosat_rgb" / "splits.csv").read_text().splitlines()
    (folder / "splits.csv").write_text("\n".join(edit(lines)) + "\n")
    return tmp_path


def test_inconsistent_table_is_reported(data_root, tmp_path, fake_decode):
    # line 2 is AnnualCrop_1.jpg,0,AnnualCrop,test,...
    root = _copy_with_table(data_root, tmp_path / "a", lambda ls: [ls[0], ls[1].replace("AnnualCrop_1.jpg", "x.jpg")])
    with pytest.raises(DataError, match="1 member.*missing, e.g. EuroSAT_RGB/AnnualCrop/x.jpg"):
        EuroSAT(root, split="test", cache=False)
    root = _copy_with_table(
        data_root, tmp_path / "b", lambda ls: [ls[0], ls[1].replace(",0,AnnualCrop,", ",3,AnnualCrop,")]
    )
    with pytest.raises(DataError, match=r"splits.csv:2: label 3 does not match class 'AnnualCrop'"):
        EuroSAT(root, split="test", cache=False)
    root = _copy_with_table(data_root, tmp_path / "c", lambda ls: [ls[0].replace("rank_in_class", "rank")] + ls[1:])
    with pytest.raises(DataError, match="missing column"):
        EuroSAT(root, cache=False)
