"""Scene-classification benchmark: frozen encoders x datasets x protocols, with a colour-statistics baseline.

For each dataset the train and test splits are built once; for each encoder the features of both splits are extracted
once and every protocol is run on them -- the weighted kNN of Wu et al. 2018 (as in DINO) and the linear probe (as in
MoCo / SimCLR). Every accuracy gets a 95 % percentile-bootstrap interval over test samples. The same protocols are
applied to hand-crafted per-band colour statistics (model ``"image-statistics"``), so each table shows how much a
backbone adds over colour alone.

Splits (ours, deterministic; see ``shared/data/MANIFEST.md``):

- ``eurosat``: ``train`` (60 %) vs ``test`` (20 %) at the native 64 px.
- ``ucmerced``: ``trainval`` (80 %) vs ``test`` (20 %) -- the common "80 % train" protocol -- decoded at 256 px
  (44 of the 2,100 originals are a few pixels smaller).
- ``folder:PATH``: the datasets package's ``train`` vs ``test`` split of an image folder, at native size.
- ``torchgeo:CLASS{key: value, ...}``: the torchgeo dataset class's own ``train`` vs ``test`` split, at native size
  (a labelled NonGeoDataset; :mod:`rspretrain.data.torchgeo_source`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.downstream.frozen.features import EncoderSpec, SceneDataset, extract_features
from rspretrain.downstream.frozen.image_statistics import image_statistics_features
from rspretrain.downstream.frozen.knn import knn_predict
from rspretrain.downstream.frozen.linear_probe import linear_probe_predict
from rspretrain.downstream.report.bootstrap import bootstrap_accuracy
from rspretrain.downstream.report.embedding_plot import embedding_subsample, plot_embeddings
from rspretrain.downstream.report.record import BASELINE_MODEL, Result
from rspretrain.downstream.report.writer import report_meta, write_report

__all__ = [
    "PROTOCOLS",
    "SceneSubset",
    "embedding_map_path",
    "evaluate_scene_classification",
    "load_scene_splits",
    "run_protocol",
    "scene_split_plan",
    "subsample_per_class",
]

logger = logging.getLogger(__name__)

PROTOCOLS: tuple[str, ...] = ("knn", "linear")

# name -> (train split, test split, image_size passed to build_dataset); None keeps the native size.
_SPLIT_PLANS: dict[str, tuple[str, str, int | None]] = {
    "eurosat": ("train", "test", None),
    "ucmerced": ("trainval", "test", 256),
}
_FOLDER_PREFIX = "folder:"
_TORCHGEO_PREFIX = "torchgeo:"


def scene_split_plan(name: str) -> tuple[str, str, int | None]:
    """``(train_split, test_split, image_size)`` used to evaluate on dataset ``name``.

    Raises:
        ConfigError: ``name`` is not ``"eurosat"``, ``"ucmerced"`` or ``"folder:PATH"``.
    """
    if name in _SPLIT_PLANS:
        return _SPLIT_PLANS[name]
    if name.startswith((_FOLDER_PREFIX, _TORCHGEO_PREFIX)) and len(name.partition(":")[2].strip()) > 0:
        return ("train", "test", None)
    raise ConfigError(f"unknown evaluation dataset '{name}'; valid: {', '.join(_SPLIT_PLANS)}, folder:PATH, "
                      "torchgeo:CLASS{key: value, ...}")


def subsample_per_class(labels: np.ndarray | torch.Tensor, n_per_class: int) -> np.ndarray:
    """Indices of the first ``n_per_class`` samples of every class, in dataset order.

    Deterministic on purpose (no RNG): our splits are already randomly permuted per class, so "first n" is a random
    stratified subset that is identical across runs and models.
    """
    if n_per_class < 1:
        raise ConfigError(f"max_train_per_class must be >= 1, got {n_per_class}")
    labels = np.asarray(labels)
    seen: dict[int, int] = {}
    keep = []
    for i, label in enumerate(labels.tolist()):
        if seen.get(label, 0) < n_per_class:
            seen[label] = seen.get(label, 0) + 1
            keep.append(i)
    return np.asarray(keep, dtype=np.int64)


class SceneSubset:
    """A view of a scene dataset restricted to ``indices``, following the same scene-dataset contract."""

    def __init__(self, dataset: Any, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = [int(i) for i in indices]
        self.classes: list[str] = list(dataset.classes)
        self.band_names: tuple[str, ...] | None = getattr(dataset, "band_names", None)
        self.value_scale: float = float(dataset.value_scale)
        self.labels: torch.Tensor = torch.as_tensor(dataset.labels)[self.indices]

    @property
    def images(self) -> torch.Tensor:
        """Images of the subset (N, C, H, W); indexed on access so the subset does not hold a copy."""
        return self.dataset.images[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        return self.dataset.__getitems__([self.indices[i] for i in indices])


def load_scene_splits(
    name: str,
    root: str | os.PathLike | None = None,
    max_train_per_class: int | None = None,
    test_split: str | None = None,
) -> tuple[SceneDataset, SceneDataset]:
    """Build the ``(train, test)`` scene datasets of an evaluation dataset (see module docstring for the splits).

    Args:
        name: ``"eurosat"``, ``"ucmerced"`` or ``"folder:PATH"``.
        root: Data root passed to ``rspretrain.data.build_dataset``; None lets that package use its default.
        max_train_per_class: Keep only the first n training samples per class (quick runs); the test side is never
            subsampled so scores stay comparable.
        test_split: score another split than the plan's test split (``"val"`` for model selection: a sweep that
            picked its settings on the test split would report an optimistic score).

    Raises:
        ConfigError: Unknown dataset name or bad ``max_train_per_class``.
        DataError: Train and test disagree on the class list.
    """
    train_split, plan_test_split, image_size = scene_split_plan(name)
    test_split = test_split or plan_test_split
    if max_train_per_class is not None and max_train_per_class < 1:
        raise ConfigError(f"max_train_per_class must be >= 1, got {max_train_per_class}")
    # Imported here so the evaluation package (and its tests) do not need the datasets package at import time.
    from rspretrain.data import build_dataset

    kwargs: dict[str, Any] = {"image_size": image_size}
    if root is not None:
        kwargs["root"] = root
    train = build_dataset(name, split=train_split, **kwargs)
    test = build_dataset(name, split=test_split, **kwargs)
    if getattr(train, "classes", None) is None or getattr(test, "classes", None) is None:
        raise DataError(f"{name}: its samples carry no class label (scene evaluation needs one integer label per "
                        "image and the class names)")
    if list(train.classes) != list(test.classes):
        raise DataError(f"{name}: train classes {list(train.classes)} differ from test classes {list(test.classes)}")
    if max_train_per_class is not None:
        train = SceneSubset(train, subsample_per_class(train.labels, max_train_per_class))
    return train, test


def run_protocol(
    protocol: str,
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    num_classes: int,
    seed: int = 0,
    knn_k: int = 20,
    knn_temperature: float = 0.07,
    linear_C: float = 1.0,
) -> np.ndarray:
    """Predict test labels with one frozen-feature protocol (``"knn"`` or ``"linear"``).

    Raises:
        ConfigError: Unknown protocol.
    """
    if protocol == "knn":
        return knn_predict(
            train_features, train_labels, test_features, num_classes, k=knn_k, temperature=knn_temperature
        )
    if protocol == "linear":
        return linear_probe_predict(train_features, train_labels, test_features, C=linear_C, seed=seed)
    raise ConfigError(f"unknown evaluation protocol '{protocol}'; valid: {', '.join(PROTOCOLS)}")


def embedding_map_path(out_dir: str | os.PathLike, dataset_name: str) -> Path:
    """``<out_dir>/embeddings_<dataset>.png``, the dataset's name made a file name (``folder:/a/b`` -> ``folder_a_b``)."""
    slug = re.sub(r"[^A-Za-z0-9]+", "_", dataset_name).strip("_")[-60:] or "dataset"
    return Path(out_dir) / f"embeddings_{slug}.png"


def _write_embedding_map(out_path: Path, dataset_name: str, features: dict[str, np.ndarray], labels: np.ndarray,
                         classes: list[str], results: list[Result], seed: int) -> None:
    knn = {r.model: r for r in results if r.dataset == dataset_name and r.task == "knn"}
    subtitles = {m: f"kNN {100 * knn[m].value():.1f} %" for m in features if m in knn}
    path = embedding_map_path(out_path, dataset_name)
    logger.info("%s: t-SNE of %d test images for %d model(s)", dataset_name, len(labels), len(features))
    plot_embeddings(features, labels, classes, path, f"{dataset_name}: test features (t-SNE), by class", subtitles,
                    seed)
    logger.info("wrote %s", path)


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Z-score both sides with train statistics (constant columns are left centred, not divided by zero)."""
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std[std == 0] = 1.0
    return (train - mean) / std, (test - mean) / std


def evaluate_scene_classification(
    specs: list[EncoderSpec],
    datasets: list[str],
    protocols: Sequence[str] = PROTOCOLS,
    root: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    max_train_per_class: int | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    include_image_statistics: bool = True,
    seed: int = 0,
    *,
    knn_k: int = 20,
    knn_temperature: float = 0.07,
    linear_C: float = 1.0,
    n_resamples: int = 1000,
    progress: bool = True,
    embedding_points: int = 0,
) -> list[Result]:
    """Score frozen encoders on scene-classification datasets with kNN and linear-probe protocols.

    Args:
        specs: Encoders to evaluate (names must be unique and differ from ``"image-statistics"``).
        datasets: Dataset names: ``"eurosat"``, ``"ucmerced"``, ``"folder:PATH"``.
        protocols: Subset of ``("knn", "linear")``.
        root: Data root for ``rspretrain.data.build_dataset`` (None: its default).
        out_dir: If given, the report (:func:`~rspretrain.downstream.report.writer.write_report`: ``metrics.json``
            rewritten after every model so a crash keeps finished scores, then ``results.md`` and ``scores.png``).
        max_train_per_class: Keep only the first n training images per class (quick runs); the test set is whole.
        batch_size: Images per encoder forward pass.
        device: Device for feature extraction.
        include_image_statistics: Also score the per-band colour-statistics baseline (model ``"image-statistics"``).
        seed: Seed of the linear probe and of the bootstrap resampling.
        knn_k: Neighbours of the weighted kNN (DINO: 20).
        knn_temperature: Vote temperature of the weighted kNN (DINO: 0.07).
        linear_C: Inverse L2 strength of the linear probe.
        n_resamples: Bootstrap resamples per 95 % interval.
        progress: Show tqdm bars during feature extraction.
        embedding_points: With ``out_dir``, also draw ``embeddings_<dataset>.png``: a t-SNE map per encoder of the
            same (at most) this many test images, side by side, coloured by class
            (:mod:`~rspretrain.downstream.report.embedding_plot`); 0: no map.

    Returns:
        One :class:`~rspretrain.downstream.report.record.Result` per (dataset, model, protocol; the task is the protocol), datasets outermost, the baseline first per dataset.

    Raises:
        ConfigError: Unknown protocol or dataset, duplicate model names, nothing to evaluate.
        BandMismatchError: A dataset's bands do not match an encoder's.
    """
    protocols = tuple(protocols)
    bad = [p for p in protocols if p not in PROTOCOLS]
    if bad or not protocols:
        raise ConfigError(f"unknown evaluation protocol(s) {bad or '(none given)'}; valid: {', '.join(PROTOCOLS)}")
    if not datasets:
        raise ConfigError("no evaluation datasets given; valid: eurosat, ucmerced, folder:PATH")
    for name in datasets:
        scene_split_plan(name)  # fail on a typo before minutes of feature extraction
    names = [s.name for s in specs]
    if len(set(names)) != len(names) or (include_image_statistics and BASELINE_MODEL in names):
        raise ConfigError(f"model names must be unique and not '{BASELINE_MODEL}', got {names}")
    if not specs and not include_image_statistics:
        raise ConfigError("nothing to evaluate: no encoders given and include_image_statistics is False")
    if max_train_per_class is not None and max_train_per_class < 1:
        raise ConfigError(f"max_train_per_class must be >= 1, got {max_train_per_class}")
    if isinstance(embedding_points, bool) or not isinstance(embedding_points, int) or embedding_points < 0:
        raise ConfigError(f"embedding_points must be an integer >= 0, got {embedding_points!r}")

    out_path = Path(out_dir) if out_dir is not None else None
    settings: dict[str, Any] = {
        "datasets": list(datasets),
        "protocols": list(protocols),
        "models": ([BASELINE_MODEL] if include_image_statistics else []) + names,
        "max_train_per_class": max_train_per_class,
        "knn": {"k": knn_k, "temperature": knn_temperature},
        "linear": {"C": linear_C, "solver": "lbfgs", "standardised": True},
        "bootstrap": {"n_resamples": n_resamples, "confidence": 0.95},
        "device": str(device),
    }
    meta = report_meta("scene_classification", settings, seed, **settings) if out_path is not None else {}
    results: list[Result] = []

    def score(model: str, dataset_name: str, train: tuple, test: tuple, num_classes: int, extra: dict) -> None:
        (train_x, train_y), (test_x, test_y) = train, test
        for protocol in protocols:
            pred = run_protocol(
                protocol, train_x, train_y, test_x, num_classes, seed, knn_k, knn_temperature, linear_C
            )
            acc, lo, hi = bootstrap_accuracy(pred == test_y, n_resamples=n_resamples, seed=seed)
            settings = {"k": knn_k, "temperature": knn_temperature} if protocol == "knn" else {"C": linear_C}
            result = Result.accuracy(
                model, dataset_name, protocol, acc, lo, hi, len(train_y), len(test_y),
                {**settings, "feature_dim": int(train_x.shape[1]), **extra},
            )  # fmt: skip
            results.append(result)
            logger.info(
                "%s | %s | %s: %.1f %% [%.1f, %.1f] (train %d, test %d)",
                dataset_name, model, protocol, 100 * acc, 100 * lo, 100 * hi, len(train_y), len(test_y),
            )  # fmt: skip
        if out_path is not None:
            write_report(out_path, results, meta, final=False)

    for dataset_name in datasets:
        logger.info("%s: building train/test splits", dataset_name)
        train_set, test_set = load_scene_splits(dataset_name, root, max_train_per_class)
        num_classes = len(train_set.classes)
        if include_image_statistics:
            logger.info("%s | %s: computing per-band colour statistics", dataset_name, BASELINE_MODEL)
            train_x, train_y = image_statistics_features(train_set)
            test_x, test_y = image_statistics_features(test_set)
            # Hand-crafted statistics mix scales (means ~0.4, stds ~0.05); z-scoring them keeps the cosine kNN from
            # being dominated by the largest columns, so the baseline is not artificially weak.
            train_x, test_x = _standardise(train_x, test_x)
            baseline_extra = {"standardised": True}
            score(BASELINE_MODEL, dataset_name, (train_x, train_y), (test_x, test_y), num_classes, baseline_extra)
        mapped: dict[str, np.ndarray] = {}
        shown = embedding_subsample(len(test_set), embedding_points, seed) if embedding_points else None
        for spec in specs:
            logger.info("%s | %s: extracting features at %d px", dataset_name, spec.name, spec.image_size)
            train = extract_features(spec, train_set, batch_size=batch_size, device=device, progress=progress)
            test = extract_features(spec, test_set, batch_size=batch_size, device=device, progress=progress)
            score(spec.name, dataset_name, train, test, num_classes, {"image_size": spec.image_size})
            if shown is not None:
                mapped[spec.name] = test[0][shown]
        if out_path is not None and mapped:
            _write_embedding_map(out_path, dataset_name, mapped, test[1][shown], list(train_set.classes), results,
                                 seed)

    if out_path is not None:
        write_report(out_path, results, meta, title="Scene classification (frozen features)")
        logger.info("wrote %s, %s and %s", out_path / "metrics.json", out_path / "results.md", out_path / "scores.png")
    logger.info("scene classification: %d results", len(results))
    return results
