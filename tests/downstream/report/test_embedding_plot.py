"""The t-SNE picture: separated classes stay apart in the map, the same seed draws the same map, one panel per model
of the same images, and evaluate writes it beside its scores."""

import numpy as np
import pytest
from PIL import Image
from sklearn.neighbors import KNeighborsClassifier

import rspretrain.data
from rspretrain.core.errors import ConfigError, DataError
from rspretrain.downstream.frozen import EncoderSpec, evaluate_scene_classification
from rspretrain.downstream.frozen.scene_benchmark import embedding_map_path
from rspretrain.downstream.report.embedding_plot import embedding_subsample, plot_embeddings, tsne_map

from ..frozen._fakes import MeanPool, colour_clusters


def _clusters(n_per_class=50, dim=64, spread=1.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(3, dim))
    labels = np.repeat(np.arange(3), n_per_class)
    return centres[labels] + rng.normal(scale=spread, size=(len(labels), dim)), labels


def _map_knn_accuracy(xy, labels):
    half = np.arange(len(labels)) % 2 == 0
    return KNeighborsClassifier(5).fit(xy[half], labels[half]).score(xy[~half], labels[~half])


def test_separated_classes_stay_apart_in_the_map_and_the_seed_fixes_it():
    feats, labels = _clusters()
    xy = tsne_map(feats, seed=0)
    assert xy.shape == (150, 2)
    assert _map_knn_accuracy(xy, labels) == 1.0
    # features with no class structure give a map with none (chance is 1/3)
    noise = np.random.default_rng(1).normal(size=feats.shape)
    assert _map_knn_accuracy(tsne_map(noise, seed=0), labels) < 0.6
    np.testing.assert_array_equal(tsne_map(feats, seed=0), xy)


def test_the_subsample_is_seeded_sorted_and_whole_when_small():
    np.testing.assert_array_equal(embedding_subsample(5, 10), np.arange(5))
    picked = embedding_subsample(1000, 100, seed=3)
    assert len(picked) == 100 == len(set(picked)) and (np.diff(picked) > 0).all()
    np.testing.assert_array_equal(picked, embedding_subsample(1000, 100, seed=3))


def test_one_panel_per_model_and_bad_features_name_the_model(tmp_path):
    feats, labels = _clusters(n_per_class=20)
    path = plot_embeddings({"model": feats, "random-init": feats[::-1].copy()}, labels, ["a", "b", "c"],
                           tmp_path / "emb.png", "title", {"model": "kNN 99.0 %"})
    with Image.open(path) as img:
        assert img.size == (918, 360)  # two 4.2-inch panels + the legend column, at 90 dpi
    with pytest.raises(DataError, match="^bad: a t-SNE map of non-finite features"):
        plot_embeddings({"bad": np.full_like(feats, np.nan)}, labels, ["a", "b", "c"], tmp_path / "x.png")
    with pytest.raises(DataError, match="^short: 3 feature vectors for 60 labels"):
        plot_embeddings({"short": feats[:3]}, labels, ["a", "b", "c"], tmp_path / "x.png")


def test_evaluate_draws_the_map_of_every_model_beside_its_scores(monkeypatch, tmp_path):
    def build(name, split, image_size=None, **kwargs):
        train = split in ("train", "trainval")
        return colour_clusters(n_per_class=6 if train else 10, size=8, seed=0 if train else 1)

    monkeypatch.setattr(rspretrain.data, "build_dataset", build, raising=False)
    specs = [EncoderSpec(n, MeanPool(), mean=(0.5,) * 3, std=(0.25,) * 3, image_size=6) for n in ("pool", "pool2")]
    evaluate_scene_classification(specs, ["folder:/x/y"], out_dir=tmp_path, progress=False, n_resamples=50,
                                  embedding_points=20)
    path = embedding_map_path(tmp_path, "folder:/x/y")
    assert path == tmp_path / "embeddings_folder_x_y.png"
    with Image.open(path) as img:
        assert img.size == (918, 360)
    with pytest.raises(ConfigError, match="embedding_points must be an integer >= 0, got -1"):
        evaluate_scene_classification(specs, ["eurosat"], embedding_points=-1)
