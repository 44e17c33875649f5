"""default_data_root() and build_dataset() spec strings (rspretrain.data.__init__)."""

from __future__ import annotations

import pytest

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.data import (
    SPEC_FORMS,
    CIFAR10Subset,
    EuroSAT,
    UCMerced,
    build_dataset,
    default_data_root,
)


def test_default_data_root(monkeypatch, data_root, tmp_path):
    monkeypatch.setenv("RSPRETRAIN_DATA", str(tmp_path))
    assert default_data_root() == tmp_path
    monkeypatch.setenv("RSPRETRAIN_DATA", str(tmp_path / "typo"))
    with pytest.raises(DataError, match="typo: RSPRETRAIN_DATA names a folder that does not exist"):
        default_data_root()
    monkeypatch.delenv("RSPRETRAIN_DATA")
    monkeypatch.chdir(tmp_path)  # no ../shared/data here: found by walking up from the package
    assert default_data_root() == data_root.resolve()
    (tmp_path / "repo").mkdir()
    (tmp_path / "shared" / "data").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "repo")  # ../shared/data relative to the current folder wins
    assert default_data_root() == (tmp_path / "shared" / "data").resolve()


def test_named_specs(data_root, fake_decode):
    eurosat = build_dataset("EuroSAT", root=data_root, split="val", max_per_class=2, cache=False)
    assert isinstance(eurosat, EuroSAT) and eurosat.split == "val" and len(eurosat) == 20
    ucm = build_dataset("ucmerced", root=data_root, split="test", train_ratio=0.5, max_per_class=1, cache=False)
    assert isinstance(ucm, UCMerced) and len(ucm) == 21 and ucm.train_ratio == 0.5
    cifar = build_dataset("cifar10", root=data_root, split="test", cache=False)
    assert isinstance(cifar, CIFAR10Subset) and len(cifar) == 2000


def test_named_specs_pass_image_size(data_root):
    assert build_dataset("ucmerced", root=data_root, max_per_class=1).image_shape == (3, 256, 256)  # its default
    assert build_dataset("ucmerced", root=data_root, max_per_class=1, image_size=48).image_shape == (3, 48, 48)
    assert build_dataset("eurosat", root=data_root, max_per_class=1, image_size=32).image_shape == (3, 32, 32)


def test_spec_errors(data_root):
    with pytest.raises(DataError, match="unknown dataset spec 'imagenet'; valid forms: eurosat, ucmerced") as info:
        build_dataset("imagenet")
    assert all(form in str(info.value) for form in SPEC_FORMS)
    with pytest.raises(DataError, match="unknown dataset spec 'folder:'"):
        build_dataset("folder:")
    with pytest.raises(DataError, match="unknown dataset spec 'eurosat:x'"):
        build_dataset("eurosat:x")
    with pytest.raises(ConfigError, match="unexpected option.*max_per_clas.*accepted: .*max_per_class"):
        build_dataset("eurosat", root=data_root, max_per_clas=3)
    with pytest.raises(ConfigError, match="unexpected option"):
        build_dataset("eurosat", root=data_root, split="train", path="x")
    with pytest.raises(ConfigError, match="unknown split"):
        build_dataset("cifar10", root=data_root, split="val")
