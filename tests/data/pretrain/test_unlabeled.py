"""UnlabeledImages from a folder tree, a list file or a zip archive."""

from __future__ import annotations

import logging
import zipfile

import numpy as np
import pytest
import torch

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.data import UnlabeledImages, build_dataset


@pytest.fixture
def tree(tmp_path, make_image):
    root = tmp_path / "tiles"
    arrays = {
        "a.png": make_image(root / "a.png", value=1),
        "sub/b.bmp": make_image(root / "sub" / "b.bmp", value=2),
        "sub/deeper/c.tif": make_image(root / "sub" / "deeper" / "c.tif", value=3),
    }
    (root / "sub" / "notes.md").write_text("ignored")
    make_image(root / ".cache" / "hidden.png", value=4)
    return root, arrays


def _as_hwc(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).numpy()


def test_folder_is_read_recursively(tree):
    root, arrays = tree
    ds = UnlabeledImages(root)
    assert len(ds) == 3 and ds.labels is None and ds.classes is None
    assert ds.files == [str(root / name) for name in sorted(arrays)]
    assert set(ds[0]) == {"image"} and set(ds.__getitems__([0, 2])) == {"image"}
    for i, name in enumerate(sorted(arrays)):
        assert np.array_equal(_as_hwc(ds[i]["image"]), arrays[name])
    assert torch.equal(ds.__getitems__([2, 0])["image"], torch.stack([ds[2]["image"], ds[0]["image"]]))


def test_list_file(tree, tmp_path):
    root, arrays = tree
    listing = root / "list.txt"
    listing.write_text(f"# my tiles\nsub/deeper/c.tif\n\n{root / 'a.png'}\n  sub/b.bmp  \n")
    ds = UnlabeledImages(listing)
    assert ds.files == [str(root / "sub/deeper/c.tif"), str(root / "a.png"), str(root / "sub/b.bmp")]
    assert np.array_equal(_as_hwc(ds[0]["image"]), arrays["sub/deeper/c.tif"])
    listing.write_text("a.png\n\nmissing.png\n")
    with pytest.raises(DataError, match=r"list.txt:3: .*missing.png: no such file"):
        UnlabeledImages(listing)
    listing.write_text("# nothing\n\n")
    with pytest.raises(DataError, match="list.txt: lists no image paths"):
        UnlabeledImages(listing)


def test_zip(tree, tmp_path):
    root, arrays = tree
    archive = tmp_path / "tiles.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for name in arrays:
            handle.write(root / name, f"tiles/{name}")
        handle.writestr("tiles/readme.txt", "ignored")
    ds = UnlabeledImages(archive)
    assert ds.files == [f"{archive}:tiles/{name}" for name in sorted(arrays)]
    assert torch.equal(ds.images, UnlabeledImages(root).images)


def test_errors(tmp_path, make_image, jpeg_bytes, caplog):
    with pytest.raises(DataError, match="absent: no such file or folder"):
        UnlabeledImages(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"empty: no images found \(searched for .jpg"):
        UnlabeledImages(tmp_path / "empty")
    make_image(tmp_path / "mixed" / "good.png")
    (tmp_path / "mixed" / "zero.jpg").write_bytes(b"")
    (tmp_path / "mixed" / "half.jpg").write_bytes(jpeg_bytes[: len(jpeg_bytes) // 2])
    with pytest.raises(DataError, match="half.jpg: cannot decode image"):
        UnlabeledImages(tmp_path / "mixed", cache=False)
    with caplog.at_level(logging.WARNING, logger="rspretrain"):
        ds = UnlabeledImages(tmp_path / "mixed", cache=False, skip_corrupt=True)
    assert len(ds) == 1 and sorted(ds.skipped) == sorted(str(tmp_path / "mixed" / n) for n in ("zero.jpg", "half.jpg"))
    assert any("skipped 2 of 3" in r.getMessage() for r in caplog.records)


def test_build_unlabeled_spec(tree):
    root, _ = tree
    assert len(build_dataset(f"unlabeled:{root}")) == 3
    assert len(build_dataset(f"unlabeled:{root}", split="all", image_size=4)[0]["image"][0]) == 4
    with pytest.raises(ConfigError, match="no 'test' split"):
        build_dataset(f"unlabeled:{root}", split="test")
