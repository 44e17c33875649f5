import json

import numpy as np
import pytest
import torch

import rspretrain.data
from rspretrain.core.errors import BandMismatchError, ConfigError
from rspretrain.downstream.frozen import BASELINE_MODEL, EncoderSpec, evaluate_scene_classification
from rspretrain.downstream.frozen.scene_benchmark import (
    SceneSubset,
    load_scene_splits,
    scene_split_plan,
    subsample_per_class,
)

from ._fakes import MeanPool, colour_clusters


class _Builder:
    """Stand-in for rspretrain.data.build_dataset that records how it was called."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, name, split, image_size=None, **kwargs):
        self.calls.append({"name": name, "split": split, "image_size": image_size, **kwargs})
        train = split in ("train", "trainval")
        return colour_clusters(n_per_class=6 if train else 4, size=8, seed=0 if train else 1)


@pytest.fixture
def builder(monkeypatch) -> _Builder:
    b = _Builder()
    monkeypatch.setattr(rspretrain.data, "build_dataset", b, raising=False)
    return b


def _spec(name: str = "pool") -> EncoderSpec:
    return EncoderSpec(name, MeanPool(), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), image_size=6)


def test_split_plans():
    assert scene_split_plan("eurosat") == ("train", "test", None)
    assert scene_split_plan("ucmerced") == ("trainval", "test", 256)
    assert scene_split_plan("folder:/data/scenes") == ("train", "test", None)
    with pytest.raises(ConfigError, match="eurosat, ucmerced, folder:PATH"):
        scene_split_plan("resisc45")


def test_subsample_per_class_takes_first_n_in_order():
    np.testing.assert_array_equal(subsample_per_class(np.array([0, 1, 0, 2, 1, 0, 2, 2]), 2), [0, 1, 2, 3, 4, 6])
    np.testing.assert_array_equal(subsample_per_class(torch.tensor([1, 1, 1]), 5), [0, 1, 2])
    with pytest.raises(ConfigError):
        subsample_per_class(np.array([0]), 0)


def test_scene_subset_follows_the_dataset_contract():
    base = colour_clusters(4)
    subset = SceneSubset(base, [5, 0, 7])
    assert len(subset) == 3 and subset.classes == base.classes and subset.band_names == base.band_names
    np.testing.assert_array_equal(subset.labels.numpy(), [2, 0, 1])
    batch = subset.__getitems__([0, 2])
    assert base.calls == [[5, 7]]
    torch.testing.assert_close(batch["image"], base.images[[5, 7]])
    torch.testing.assert_close(subset.images, base.images[[5, 0, 7]])


def test_load_scene_splits_passes_split_size_and_root(builder):
    train, test = load_scene_splits("ucmerced", root="/data", max_train_per_class=2)
    assert builder.calls == [
        {"name": "ucmerced", "split": "trainval", "image_size": 256, "root": "/data"},
        {"name": "ucmerced", "split": "test", "image_size": 256, "root": "/data"},
    ]
    assert len(train) == 6 and len(test) == 12
    np.testing.assert_array_equal(train.labels.numpy(), [0, 1, 2, 0, 1, 2])
    load_scene_splits("eurosat")
    assert builder.calls[2] == {"name": "eurosat", "split": "train", "image_size": None}  # no root: builder default


def test_evaluate_end_to_end(builder, tmp_path):
    results = evaluate_scene_classification(
        [_spec("pool")], ["eurosat"], out_dir=tmp_path, max_train_per_class=3, progress=False, n_resamples=200
    )
    assert [(r.model, r.task) for r in results] == [
        (BASELINE_MODEL, "knn"), (BASELINE_MODEL, "linear"), ("pool", "knn"), ("pool", "linear"),
    ]  # fmt: skip
    for r in results:
        assert r.dataset == "eurosat" and r.n_train == 9 and r.n_test == 12
        # Colour clusters are separated by 160 grey levels against +-20 noise: every protocol must be perfect.
        assert (r.value(), r.interval()) == (1.0, (1.0, 1.0))
    assert results[2].extra == {"k": 20, "temperature": 0.07, "feature_dim": 3, "image_size": 6}
    assert results[0].extra["feature_dim"] == 21 and results[0].extra["standardised"] is True

    payload = json.loads((tmp_path / "metrics.json").read_text())
    assert payload["meta"]["datasets"] == ["eurosat"] and payload["meta"]["protocols"] == ["knn", "linear"]
    assert payload["meta"]["models"] == [BASELINE_MODEL, "pool"] and payload["meta"]["max_train_per_class"] == 3
    assert [r["metrics"]["accuracy"] for r in payload["results"]] == [1.0] * 4
    record = payload["meta"]["provenance"]
    assert record["seed"] == 0 and record["rspretrain_version"] and "git_commit" in record
    assert record["config"]["protocols"] == ["knn", "linear"]
    assert (tmp_path / "scores.png").stat().st_size > 5_000
    assert "| pool | 100.0 [100.0, 100.0] |" in (tmp_path / "results.md").read_text()


def test_uninformative_encoder_scores_near_chance(builder):
    # A constant encoder cannot separate anything: every test point gets the same prediction -> exactly 1/3.
    class Constant(torch.nn.Module):
        def forward(self, x):
            return torch.ones(x.shape[0], 4)

    spec = EncoderSpec("const", Constant(), (0.5,) * 3, (0.25,) * 3, 8)
    (knn,) = evaluate_scene_classification(
        [spec], ["eurosat"], protocols=["knn"], include_image_statistics=False, progress=False
    )
    low, high = knn.interval()
    assert knn.value() == pytest.approx(1 / 3) and low < 1 / 3 < high


def test_multiple_datasets_and_models_without_baseline(builder):
    results = evaluate_scene_classification(
        [_spec("a"), _spec("b")], ["eurosat", "ucmerced"], protocols=("linear",), include_image_statistics=False,
        progress=False,
    )  # fmt: skip
    expected = [("eurosat", "a"), ("eurosat", "b"), ("ucmerced", "a"), ("ucmerced", "b")]
    assert [(r.dataset, r.model) for r in results] == expected
    assert all(r.task == "linear" and r.n_train == 18 for r in results)
    assert len(builder.calls) == 4  # each split built once per dataset, shared by both models


def test_bad_configuration_fails_before_loading_data(builder):
    with pytest.raises(ConfigError, match="knn, linear"):
        evaluate_scene_classification([_spec()], ["eurosat"], protocols=("knn", "finetune"))
    with pytest.raises(ConfigError, match="unknown evaluation dataset 'eurosatt'"):
        evaluate_scene_classification([_spec()], ["eurosatt"])
    with pytest.raises(ConfigError, match="unique"):
        evaluate_scene_classification([_spec("x"), _spec("x")], ["eurosat"])
    with pytest.raises(ConfigError, match="unique"):
        evaluate_scene_classification([_spec(BASELINE_MODEL)], ["eurosat"])
    with pytest.raises(ConfigError, match="nothing to evaluate"):
        evaluate_scene_classification([], ["eurosat"], include_image_statistics=False)
    assert builder.calls == []


def test_band_mismatch_propagates(builder):
    spec = EncoderSpec("bgr", MeanPool(), (0.5,) * 3, (0.25,) * 3, 6, band_names=("blue", "green", "red"))
    with pytest.raises(BandMismatchError):
        evaluate_scene_classification([spec], ["eurosat"], include_image_statistics=False, progress=False)


def test_baseline_only(builder):
    results = evaluate_scene_classification([], ["eurosat"], protocols=["knn"], progress=False)
    assert [(r.model, r.value()) for r in results] == [(BASELINE_MODEL, 1.0)]

