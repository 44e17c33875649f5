import numpy as np
import pytest
from PIL import Image

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.data.dense.change_detection import ChangeDetectionFolder


def test_real_levir_crops_split_by_name_prefix(data_root):
    root = data_root / "levir_cd_samples"
    test = ChangeDetectionFolder(root, "test")
    trainval = ChangeDetectionFolder(root, "trainval")
    assert test.layout == "name_prefix"
    assert len(test) == 7 and all(n.startswith("test_") for n in test.names)
    assert trainval.names == ["train_36_0512_0512", "train_386_0512_0768", "train_412_0512_0768", "val_27_0000_0256"]
    assert test.images_a[0].shape == (3, 256, 256) and test.images_b[0].shape == (3, 256, 256)
    # 0/255 labels become 0/1; the one crop without change (manifest) has an all-zero mask.
    assert set(np.unique(np.concatenate([m.ravel() for m in test.masks])).tolist()) == {0, 1}
    assert trainval.masks[1].sum() == 0
    raw = np.asarray(Image.open(root / "label" / "test_2_0000_0000.png"))
    np.testing.assert_array_equal(test.masks[test.names.index("test_2_0000_0000")], (raw > 0).astype(np.uint8))
    assert 0.15 < test.change_fraction() < 0.22


def _pair(root, name, size=(8, 8), change=True):
    for folder in ("A", "B", "label"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((*size, 3), np.uint8)).save(root / "A" / f"{name}.png")
    Image.fromarray(np.full((*size, 3), 200, np.uint8)).save(root / "B" / f"{name}.png")
    Image.fromarray(np.full(size, 255 if change else 0, np.uint8)).save(root / "label" / f"{name}.png")


def test_published_split_folders_and_random_split(tmp_path):
    for split, n in (("train", 2), ("val", 1), ("test", 1)):
        for i in range(n):
            _pair(tmp_path / "levir" / split, f"{i}")
    assert len(ChangeDetectionFolder(tmp_path / "levir", "trainval")) == 3
    assert ChangeDetectionFolder(tmp_path / "levir", "test").layout == "split_folders"
    for i in range(5):
        _pair(tmp_path / "flat", f"pair{i}")
    train = ChangeDetectionFolder(tmp_path / "flat", "train", test_fraction=0.4)
    test = ChangeDetectionFolder(tmp_path / "flat", "test", test_fraction=0.4)
    assert train.layout == "random" and len(train) == 3 and len(test) == 2
    assert not set(train.names) & set(test.names)
    with pytest.raises(ConfigError, match="no val split"):
        ChangeDetectionFolder(tmp_path / "flat", "val")


def test_missing_partner_and_size_mismatch_name_the_file(tmp_path):
    _pair(tmp_path, "test_1")
    _pair(tmp_path, "train_1")
    (tmp_path / "label" / "test_1.png").unlink()
    with pytest.raises(DataError, match="test_1.png: no change label"):
        ChangeDetectionFolder(tmp_path, "test")
    _pair(tmp_path, "test_1")
    Image.fromarray(np.zeros((4, 8, 3), np.uint8)).save(tmp_path / "B" / "test_1.png")
    with pytest.raises(DataError, match="test_1.png: date B has shape"):
        ChangeDetectionFolder(tmp_path, "test")
    with pytest.raises(DataError, match="not in the LEVIR-CD layout"):
        ChangeDetectionFolder(tmp_path / "A", "test")
