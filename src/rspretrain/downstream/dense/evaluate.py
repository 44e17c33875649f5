"""One entry point for the dense tasks: ``rspretrain evaluate SOURCE --task segmentation|change|detection``.

``SOURCE`` is anything :func:`rspretrain.downstream.sources.encoder_specs` accepts (a pretraining checkpoint, an
exported backbone, ``random:ARCH``, ``timm:ARCH``); a random initialisation of the same architecture is scored beside
it with the same schedule. Results go to ``metrics.json`` plus the task's picture and a score chart.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from rspretrain.core.errors import ConfigError
from rspretrain.downstream.dense.schedule import DenseSchedule
from rspretrain.downstream.frozen.features import EncoderSpec
from rspretrain.downstream.report.record import Result, format_table

__all__ = ["DENSE_TASKS", "PICTURES", "default_schedule", "run_dense_task", "evaluate_dense_source"]

DENSE_TASKS: tuple[str, ...] = ("segmentation", "change", "detection")
#: The shared real dataset of each task: (folder under the data root, short names accepted for it).
SHARED_DATASETS = {
    "segmentation": ("dubai_aerial_seg", ("dubai",)),
    "change": ("levir_cd_samples", ("levir",)),
    "detection": ("deepforest_neon_trees", ("neon",)),
}
#: The picture each task writes beside ``metrics.json``.
PICTURES = {"segmentation": "segmentation.png", "change": "change.png", "detection": "detections.png"}


def default_schedule(task: str, **overrides) -> DenseSchedule:
    """The task's default schedule with ``overrides`` (None values are ignored)."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if task == "segmentation":
        from rspretrain.downstream.dense.segmentation import segmentation_schedule

        return segmentation_schedule(**overrides)
    if task == "change":
        from rspretrain.downstream.dense.change_detection import change_schedule

        return change_schedule(**overrides)
    if task == "detection":
        from rspretrain.downstream.dense.detection import detection_schedule

        return detection_schedule(**overrides)
    raise ConfigError(f"unknown dense task {task!r}; valid: {', '.join(DENSE_TASKS)}")


def run_dense_task(
    task: str,
    specs: Sequence[EncoderSpec],
    data: str | os.PathLike | None,
    out_dir: str | os.PathLike | None,
    schedule: DenseSchedule,
    predict_rasters: Sequence[str] = (),
    resume: bool = False,
    trainer: dict | None = None,
) -> list[Result]:
    """Run one dense task on ``specs`` with ``schedule`` (``trainer``: further ``lightning.Trainer`` arguments).

    ``predict_rasters``: segmentation -- GeoTIFFs to predict whole; change -- an even number of GeoTIFFs, read as
    (before, after) pairs; detection -- not supported. ``resume``: continue every model's training from its
    checkpoint under ``out_dir/training/`` when there is one.
    """
    if task == "segmentation":
        from rspretrain.downstream.dense.segmentation import evaluate_segmentation

        return evaluate_segmentation(specs, data, out_dir, schedule, predict_rasters=predict_rasters, resume=resume,
                                     trainer=trainer)
    if task == "change":
        from rspretrain.downstream.dense.change_detection import evaluate_change_detection

        if len(predict_rasters) % 2:
            raise ConfigError(f"change detection predicts BEFORE,AFTER pairs; got {len(predict_rasters)} rasters")
        pairs = list(zip(predict_rasters[0::2], predict_rasters[1::2]))
        return evaluate_change_detection(specs, data, out_dir, schedule, predict_pairs=pairs, resume=resume,
                                         trainer=trainer)
    if task == "detection":
        from rspretrain.downstream.dense.detection import evaluate_detection

        if predict_rasters:
            raise ConfigError("--predict-raster is for segmentation and change detection")
        return evaluate_detection(specs, data, out_dir, schedule, resume=resume, trainer=trainer)
    raise ConfigError(f"unknown dense task {task!r}; valid: {', '.join(DENSE_TASKS)}")


def evaluate_dense_source(
    source: str,
    task: str,
    data: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    epochs: int | None = None,
    freeze_backbone: bool = False,
    crop_size: int | None = None,
    batch_size: int | None = None,
    predict_rasters: Sequence[str] = (),
    with_random_init: bool = True,
    data_root: str | os.PathLike | None = None,
    precision: str | None = None,
    device: str | None = None,
    resume: bool = False,
    trainer: dict | None = None,
    devices: int | None = None,
    norm_eval: bool = False,
    input_statistics: str | None = None,
) -> list[Result]:
    """What ``rspretrain evaluate SOURCE --task TASK`` does: build the encoders, run the task, print the table.

    ``data`` None or the short name (``dubai``, ``levir``, ``neon``) means the task's shared dataset, found under
    ``data_root`` when given (else the default data root).
    """
    from rspretrain.downstream.sources import encoder_specs
    from rspretrain.training.trainer import TrainerConfig

    TrainerConfig(lightning=dict(trainer or {}))  # a bad trainer.* key fails before any data is read

    if task in SHARED_DATASETS and data_root is not None:
        folder, short = SHARED_DATASETS[task]
        if data is None or str(data) in short:
            data = Path(data_root) / folder

    schedule = default_schedule(task, epochs=epochs, freeze_backbone=freeze_backbone or None, crop_size=crop_size,
                                batch_size=batch_size, precision=precision, device=device, devices=devices,
                                norm_eval=norm_eval or None, input_statistics=input_statistics)
    specs = encoder_specs(source, with_random_init=with_random_init)
    results = run_dense_task(task, specs, data, out_dir, schedule, predict_rasters, resume, trainer)
    if not results:  # a DDP rank other than 0: it trained, rank 0 scores and reports
        return results
    out = Path(out_dir)
    print(format_table(results))
    print(f"metrics: {out / 'metrics.json'}")
    print(f"picture: {out / PICTURES[task]}")
    print(f"table:   {out / 'results.md'}")
    print(f"plot:    {out / 'scores.png'}")
    for r in results:
        for raster in r.extra.get("predicted_rasters", []):
            print(f"raster:  {raster}")
    return results
