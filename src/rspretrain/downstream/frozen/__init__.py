"""Frozen-feature evaluation of backbones on remote-sensing scene classification.

Small parts, each usable alone:

- :mod:`~rspretrain.downstream.frozen.features`: :class:`EncoderSpec` and :func:`extract_features` (one frozen pass).
- :mod:`~rspretrain.downstream.frozen.knn`: :func:`knn_predict`, the weighted kNN of Wu et al. 2018 / DINO.
- :mod:`~rspretrain.downstream.frozen.linear_probe`: :func:`linear_probe_predict`, logistic regression on frozen features.
- :mod:`~rspretrain.downstream.frozen.image_statistics`: :func:`image_statistics_features`, the colour-statistics baseline.
- :mod:`~rspretrain.downstream.report.bootstrap`: :func:`bootstrap_accuracy`, accuracy with a percentile-bootstrap CI.
- :mod:`~rspretrain.downstream.report` (:class:`Result`, :func:`write_report`): the one record and report writer.
- :mod:`~rspretrain.downstream.frozen.scene_benchmark`: :func:`evaluate_scene_classification`, the whole benchmark.
"""

from rspretrain.downstream.frozen.features import EncoderSpec, SceneDataset, extract_features, preprocess_images
from rspretrain.downstream.frozen.image_statistics import (
    IMAGE_STATISTICS_NAMES,
    image_statistics_feature_names,
    image_statistics_features,
)
from rspretrain.downstream.frozen.knn import knn_predict
from rspretrain.downstream.frozen.linear_probe import linear_probe_predict
from rspretrain.downstream.frozen.scene_benchmark import (
    PROTOCOLS,
    SceneSubset,
    evaluate_scene_classification,
    load_scene_splits,
    run_protocol,
    scene_split_plan,
    subsample_per_class,
)
from rspretrain.downstream.report.bootstrap import bootstrap_accuracy
from rspretrain.downstream.report.record import BASELINE_MODEL, Result, format_table
from rspretrain.downstream.report.writer import read_report, write_report

__all__ = [
    "BASELINE_MODEL",
    "IMAGE_STATISTICS_NAMES",
    "PROTOCOLS",
    "Result",
    "EncoderSpec",
    "SceneDataset",
    "SceneSubset",
    "bootstrap_accuracy",
    "evaluate_scene_classification",
    "extract_features",
    "format_table",
    "image_statistics_feature_names",
    "image_statistics_features",
    "knn_predict",
    "linear_probe_predict",
    "load_scene_splits",
    "preprocess_images",
    "read_report",
    "run_protocol",
    "scene_split_plan",
    "subsample_per_class",
    "write_report",
]
