"""Frozen-feature evaluation of backbones on remote-sensing scene classification.

Small parts, each usable alone:

- :mod:`~rspretrain.evaluation.features`: :class:`EncoderSpec` and :func:`extract_features` (one frozen pass).
- :mod:`~rspretrain.evaluation.knn`: :func:`knn_predict`, the weighted kNN of Wu et al. 2018 / DINO.
- :mod:`~rspretrain.evaluation.linear_probe`: :func:`linear_probe_predict`, logistic regression on frozen features.
- :mod:`~rspretrain.evaluation.image_statistics`: :func:`image_statistics_features`, the colour-statistics baseline.
- :mod:`~rspretrain.evaluation.bootstrap`: :func:`bootstrap_accuracy`, accuracy with a percentile-bootstrap CI.
- :mod:`~rspretrain.evaluation.report`: :class:`EvalResult`, JSON, bar chart and Markdown table.
- :mod:`~rspretrain.evaluation.scene_classification`: :func:`evaluate_scene_classification`, the whole benchmark.
"""

from rspretrain.evaluation.bootstrap import bootstrap_accuracy
from rspretrain.evaluation.features import EncoderSpec, SceneDataset, extract_features, preprocess_images
from rspretrain.evaluation.image_statistics import (
    IMAGE_STATISTICS_NAMES,
    image_statistics_feature_names,
    image_statistics_features,
)
from rspretrain.evaluation.knn import knn_predict
from rspretrain.evaluation.linear_probe import linear_probe_predict
from rspretrain.evaluation.report import (
    BASELINE_MODEL,
    EvalResult,
    format_table,
    plot_accuracy,
    read_metrics_json,
    write_metrics_json,
)
from rspretrain.evaluation.scene_classification import (
    PROTOCOLS,
    SceneSubset,
    evaluate_scene_classification,
    load_scene_splits,
    run_protocol,
    scene_split_plan,
    subsample_per_class,
)

__all__ = [
    "BASELINE_MODEL",
    "IMAGE_STATISTICS_NAMES",
    "PROTOCOLS",
    "EncoderSpec",
    "EvalResult",
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
    "plot_accuracy",
    "preprocess_images",
    "read_metrics_json",
    "run_protocol",
    "scene_split_plan",
    "subsample_per_class",
    "write_metrics_json",
]
