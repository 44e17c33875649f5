"""SceneFolder (class-per-folder datasets, from a folder or a zip) and split_indices."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.data import SceneFolder, build_dataset, split_indices

# class -> number of images; written in unsorted order so the sorting is tested
LAYOUT = {"forest": 3, "airport": 2, "Beach": 4}


@pytest.fixture
def scene_tree(tmp_path, make_image) -> tuple[Path, dict[str, np.ndarray]]:
    """A tiny dataset ``root/<class>/<image>`` plus files and folders that must be ignored."""
    root = tmp_path / "scenes"
    arrays = {}
    for k, (name, count) in enumerate(LAYOUT.items()):
        for i in range(count):
            extension = ".PNG" if i == 0 else ".png"  # extensions match case-insensitively
            relative = f"{name}/{name}_{i}{extension}"
            arrays[relative] = make_image(root / relative, value=10 * k + i)
    (root / "forest" / "readme.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    make_image(root / ".hidden" / "x.png")
    (root / "forest" / ".DS_Store").write_bytes(b"\0\1")
    return root, arrays


def _zip(folder: Path, archive: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                handle.write(path, prefix + path.relative_to(folder).as_posix())
    return archive


def test_folder_layout(scene_tree):
    root, arrays = scene_tree
    ds = SceneFolder(root)
    assert ds.classes == ["Beach", "airport", "forest"]  # sorted(), as torchvision's ImageFolder
    assert ds.class_counts() == {"Beach": 4, "airport": 2, "forest": 3}
    assert len(ds) == 9 and ds.images.shape == (9, 3, 6, 8)
    for i, name in enumerate(ds.files):
        relative = Path(name).relative_to(root).as_posix()
        assert ds.classes[int(ds[i]["label"])] == relative.split("/")[0]
        assert np.array_equal(ds[i]["image"].permute(1, 2, 0).numpy(), arrays[relative])


@pytest.mark.parametrize("prefix", ["", "NWPU-RESISC45/", "PatternNet/images/"])
def test_zip_equals_folder(scene_tree, tmp_path, prefix):
    root, _ = scene_tree
    folder = SceneFolder(root, cache=False)
    zipped = SceneFolder(_zip(root, tmp_path / "scenes.zip", prefix), cache=False)
    assert zipped.classes == folder.classes
    assert torch.equal(zipped.images, folder.images) and torch.equal(zipped.labels, folder.labels)
    assert zipped.files[0] == f"{tmp_path / 'scenes.zip'}:{prefix}Beach/Beach_0.PNG"


def test_real_images_from_ucmerced(data_root, tmp_path):
    # a published-layout folder made of real UC Merced JPEGs, shrunk on decoding
    with zipfile.ZipFile(data_root / "ucmerced" / "UCMerced_LandUse_jpg_q85.zip") as archive:
        members = [m for m in archive.namelist() if m.endswith(("beach00.jpg", "beach01.jpg", "river00.jpg"))]
        for member in members:
            target = tmp_path / "ucm" / Path(member).parent.name / Path(member).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(member))
    ds = SceneFolder(tmp_path / "ucm", image_size=32, cache=False)
    assert ds.classes == ["beach", "river"] and ds.class_counts() == {"beach": 2, "river": 1}
    expected = Image.open(tmp_path / "ucm" / "river" / "river00.jpg").convert("RGB")
    expected = np.asarray(expected.resize((32, 32), Image.Resampling.BILINEAR))
    assert np.array_equal(ds[2]["image"].permute(1, 2, 0).numpy(), expected)


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="no such file or folder") as info:
        SceneFolder(tmp_path / "absent")
    assert "absent" in str(info.value)


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no class folders with images \(searched for .jpg, .jpeg, .png"):
        SceneFolder(tmp_path / "empty")
    (tmp_path / "empty" / "cls").mkdir()
    (tmp_path / "empty" / "cls" / "a.txt").write_text("x")
    with pytest.raises(DataError, match="empty: no class folders with images"):
        SceneFolder(tmp_path / "empty")


def test_class_folder_without_images(scene_tree):
    root, _ = scene_tree
    (root / "glacier").mkdir()
    (root / "glacier" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="class folder has no images") as info:
        SceneFolder(root)
    assert str(root / "glacier") in str(info.value)


def test_empty_class_folder_in_zip(scene_tree, tmp_path):
    root, _ = scene_tree
    archive = _zip(root, tmp_path / "s.zip", "wrap/")
    with zipfile.ZipFile(archive, "a") as handle:
        handle.writestr("wrap/glacier/", "")
    with pytest.raises(DataError, match=r"s.zip:wrap/glacier/: class folder has no images"):
        SceneFolder(archive)


def test_misplaced_images(scene_tree, make_image):
    root, _ = scene_tree
    make_image(root / "forest" / "sub" / "deep.png")
    with pytest.raises(DataError, match="deep.png: image nested below class folder 'forest'"):
        SceneFolder(root)
    (root / "forest" / "sub" / "deep.png").unlink()
    make_image(root / "loose.png")
    with pytest.raises(DataError, match="loose.png: image outside a class folder"):
        SceneFolder(root)


def test_not_a_folder_or_zip(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="neither a folder nor a zip"):
        SceneFolder(tmp_path / "x.csv")


def test_mixed_sizes_need_image_size(scene_tree, make_image):
    root, _ = scene_tree
    make_image(root / "airport" / "big.png", size=(16, 16))
    with pytest.raises(DataError, match="pass image_size"):
        SceneFolder(root, cache=False)
    assert SceneFolder(root, image_size=12, cache=False).images.shape == (10, 3, 12, 12)


def test_corrupt_image_in_folder(scene_tree, jpeg_bytes):
    root, _ = scene_tree
    (root / "airport" / "broken.jpg").write_bytes(jpeg_bytes[:200])
    with pytest.raises(DataError, match="broken.jpg: cannot decode image"):
        SceneFolder(root, cache=False)
    ds = SceneFolder(root, cache=False, skip_corrupt=True)
    assert len(ds) == 9 and ds.skipped == [str(root / "airport" / "broken.jpg")]


def test_split_indices_stratified_and_deterministic():
    labels = [0] * 50 + [1] * 30 + [2] * 7
    train, test = split_indices(labels, train_fraction=0.8, seed=0)
    assert sorted(train + test) == list(range(len(labels))) and not set(train) & set(test)
    labels_np = np.asarray(labels)
    assert [int((labels_np[train] == c).sum()) for c in range(3)] == [40, 24, 6]  # round-half-up of 0.8 n
    assert split_indices(labels, 0.8, 0) == (train, test)
    assert split_indices(labels, 0.8, 1) != (train, test)
    half_train, _ = split_indices(torch.tensor(labels), train_fraction=0.5)
    assert [int((labels_np[half_train] == c).sum()) for c in range(3)] == [25, 15, 4]
    with pytest.raises(ConfigError):
        split_indices(labels, train_fraction=1.0)


def test_build_folder_spec(scene_tree):
    root, _ = scene_tree
    full = build_dataset(f"folder:{root}", split="all")
    train = build_dataset(f"folder:{root}", split="train")
    test = build_dataset(f"folder:{root}", split="test", train_fraction=0.5)
    assert len(full) == 9 and isinstance(full, SceneFolder)
    # per class round(0.8 n): Beach 4 -> 3, airport 2 -> 2, forest 3 -> 2
    assert train.class_counts() == {"Beach": 3, "airport": 2, "forest": 2}
    assert train.rows is not None and torch.equal(train.images, full.images[train.rows])  # a subset of all images
    # per class n - round(0.5 n): 4 -> 2, 2 -> 1, 3 -> 1
    assert test.class_counts() == {"Beach": 2, "airport": 1, "forest": 1}
    with pytest.raises(ConfigError, match="unknown split 'val'"):
        build_dataset(f"folder:{root}", split="val")


def test_zip_member_bytes_are_read_without_extracting(scene_tree, tmp_path):
    root, arrays = scene_tree
    archive = _zip(root, tmp_path / "s.zip")
    before = sorted(tmp_path.rglob("*"))
    ds = SceneFolder(archive, cache=False)
    with zipfile.ZipFile(archive) as handle:
        member = ds.files[4].split("s.zip:")[1]
        image = np.asarray(Image.open(io.BytesIO(handle.read(member))).convert("RGB"))
    assert np.array_equal(ds[4]["image"].permute(1, 2, 0).numpy(), image)
    assert sorted(tmp_path.rglob("*")) == before  # nothing was extracted
