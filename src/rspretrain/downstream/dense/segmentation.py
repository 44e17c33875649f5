"""Semantic segmentation with any backbone: UPerNet fine-tuning (or a frozen-backbone decoder), mIoU, overlay PNG.

For every encoder: a :class:`~rspretrain.nn.decoders.UPerNetSegmenter` on a copy of it, trained with pixel-wise
cross-entropy (unlabelled pixels ignored) on random crops of the training images (:mod:`.dense.schedule`), then
every test image is predicted whole by overlapping sliding windows (:func:`~.sliding_window.predict_image`) and
scored by per-class IoU and mIoU over all test pixels, with a bootstrap interval over test images. Writes
``metrics.json``, ``segmentation.png`` (test images, ground truth and each model's prediction overlaid) and
``scores.png``; optionally predicts whole GeoTIFFs with the first encoder's model.

Data (``data``): ``None`` / ``"dubai"`` / the ``dubai_aerial_seg`` folder -> :class:`DubaiAerialSegmentation`
(Tile 6 held out; images scaled by 0.5 by default, a CPU-sized choice), or any image/mask folder
(:class:`~rspretrain.data.dense.segmentation_folder.SegmentationFolder`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rspretrain.data.dense.segmentation_folder import DubaiAerialSegmentation, SegmentationFolder
from rspretrain.downstream.dense.dense_task import DenseTask, train_comparison_model
from rspretrain.downstream.dense.metrics import bootstrap_interval, confusion_matrix, iou_per_class, segmentation_scores
from rspretrain.downstream.dense.schedule import (
    DenseSchedule,
    check_dense_inputs,
    random_crop_batch,
)
from rspretrain.downstream.dense.sliding_window import predict_image, predict_raster
from rspretrain.downstream.frozen.features import EncoderSpec
from rspretrain.downstream.report.display import display_rgb
from rspretrain.downstream.report.record import Result
from rspretrain.downstream.report.writer import report_meta, write_report
from rspretrain.nn.decoders import FeaturePyramid, UPerNetSegmenter

__all__ = ["SegmentationTask", "evaluate_segmentation", "load_segmentation_data", "segmentation_schedule"]

logger = logging.getLogger("rspretrain")

DUBAI_NAMES = ("dubai", "dubai_aerial_seg")
#: Image scale of the Dubai set in the default (CPU-sized) protocol.
DUBAI_SCALE = 0.5


def segmentation_schedule(**overrides: Any) -> DenseSchedule:
    """The default segmentation schedule (128 px crops, 8 per image and epoch, 5 epochs), with overrides."""
    return DenseSchedule(**{"epochs": 5, "crop_size": 128, "crops_per_image": 8, "batch_size": 8, **overrides})


def load_segmentation_data(
    data: str | os.PathLike | None = None, scale: float | None = None
) -> tuple[SegmentationFolder, SegmentationFolder, str]:
    """``(train, test, dataset label)`` for ``data`` (see the module docstring)."""
    path = None if data is None or str(data) in DUBAI_NAMES else Path(data)
    if path is None or path.name == "dubai_aerial_seg":
        scale = DUBAI_SCALE if scale is None else scale
        return (DubaiAerialSegmentation(path, "train", scale=scale), DubaiAerialSegmentation(path, "test", scale=scale),
                "dubai")
    scale = 1.0 if scale is None else scale
    return SegmentationFolder(path, "train", scale=scale), SegmentationFolder(path, "test", scale=scale), path.name


def _predict_probabilities(model: UPerNetSegmenter, device: torch.device):
    def predictor(windows: Sequence[torch.Tensor]) -> torch.Tensor:
        return F.softmax(model(windows[0].to(device).float()), dim=1)

    return predictor


class SegmentationTask(DenseTask):
    """UPerNet on the encoder, pixel-wise cross-entropy (unlabelled pixels ignored) on random crops with dihedral
    flips / rotations of the training images."""

    method_name = "segmentation"

    def build_model(self, pyramid: FeaturePyramid) -> UPerNetSegmenter:
        train = self.train_data
        self.items = list(zip(train.images, train.masks))
        return UPerNetSegmenter(pyramid, train.num_classes, self.mean, self.std, self.value_scale,
                                self.schedule.decoder_channels)

    def draw(self, rng: np.random.Generator) -> list[torch.Tensor]:
        return random_crop_batch(self.items, self.crop_size, self.schedule.batch_size, rng,
                                 (0, self.train_data.ignore_index))

    def loss(self, batch: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images, masks = batch
        loss = F.cross_entropy(self.model(images.float()), masks.long(), ignore_index=self.train_data.ignore_index)
        return loss, {"loss_ce": loss.detach()}


def evaluate_segmentation(
    specs: Sequence[EncoderSpec],
    data: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    schedule: DenseSchedule | None = None,
    scale: float | None = None,
    n_examples: int = 3,
    predict_rasters: Sequence[str | os.PathLike] = (),
    n_resamples: int = 1000,
    resume: bool = False,
    trainer: dict[str, Any] | None = None,
) -> list[Result]:
    """Fine-tune and score a UPerNet on every encoder in ``specs`` with one schedule.

    Args:
        specs: encoders (unique names), e.g. from :func:`rspretrain.downstream.sources.encoder_specs`.
        data: dataset (see the module docstring).
        out_dir: where ``metrics.json``, ``segmentation.png`` and ``scores.png`` go (None: nothing written).
        schedule: the shared schedule (default :func:`segmentation_schedule`).
        scale: image resize factor (default 0.5 for Dubai, 1 otherwise).
        n_examples: test images shown in the overlay picture.
        predict_rasters: GeoTIFFs to predict whole with the first encoder's model (written to ``out_dir``).
        n_resamples: bootstrap resamples of the mIoU interval.
        resume: continue each model's training from ``out_dir/training/<model>/checkpoints/last.ckpt`` when there.
        trainer: further ``lightning.Trainer`` arguments for every model's training (e.g. ``gradient_clip_val``).

    Returns:
        One :class:`Result` per encoder.

    Raises:
        BandMismatchError: the data's bands differ from an encoder's.
        ConfigError: duplicate model names, or rasters to predict without ``out_dir``.
    """
    schedule = schedule or segmentation_schedule()
    train, test, dataset = load_segmentation_data(data, scale)
    names = check_dense_inputs(specs, train.band_names, train.images[0].shape[0], str(train.root), predict_rasters,
                               out_dir)
    device = torch.device(schedule.device)
    out = Path(out_dir) if out_dir is not None else None
    meta = report_meta(
        "segmentation", schedule.to_dict(), schedule.seed, dataset=dataset, data=str(train.root),
        classes=train.classes,
        ignore_index=train.ignore_index, scale=train.scale, n_train=len(train), n_test=len(test),
        test_images=test.names, schedule=schedule.to_dict(), models=names,
    )
    results: list[Result] = []
    examples: dict[str, list[np.ndarray]] = {}
    shown = list(range(min(n_examples, len(test))))
    for k, spec in enumerate(specs):
        task = SegmentationTask(spec, train, schedule)
        fit = train_comparison_model(task, out, resume, trainer)
        if fit is None:
            continue  # DDP: the other ranks only train; rank 0 scores and writes the report
        crop, value_scale = task.crop_size, task.value_scale
        overlap = fit["overlap"] = schedule.window_overlap(crop)
        predictor = _predict_probabilities(task.model, device)
        per_image = []
        predictions = []
        for i, image in enumerate(test.images):
            scores = predict_image(predictor, [torch.from_numpy(image)], crop, overlap, schedule.batch_size)
            pred = scores.argmax(0).numpy().astype(np.uint8)
            per_image.append(confusion_matrix(pred, test.masks[i], test.num_classes, test.ignore_index))
            if i in shown:
                predictions.append(pred)
        examples[spec.name] = predictions
        confusion = np.sum(per_image, axis=0)
        metrics = segmentation_scores(confusion, test.classes)

        def miou(cm):
            return float(np.nanmean(iou_per_class(cm)))

        metrics["miou_ci"] = list(bootstrap_interval(np.stack(per_image), miou, n_resamples, seed=schedule.seed))
        metrics["confusion_matrix"] = confusion.tolist()
        result = Result(spec.name, "segmentation", dataset, metrics, len(train), len(test), fit)
        results.append(result)
        logger.info("segmentation | %s | %s: mIoU %.1f %% [%.1f, %.1f], pixel accuracy %.1f %%", dataset, spec.name,
                    100 * metrics["miou"], 100 * metrics["miou_ci"][0], 100 * metrics["miou_ci"][1],
                    100 * metrics["pixel_accuracy"])
        if out is not None:
            write_report(out, results, meta, final=False)
            if k == 0:
                for raster in predict_rasters:
                    target = out / f"{Path(raster).stem}_segmentation.tif"
                    predict_raster(
                        predictor, [raster], target, crop, overlap, train.num_classes,
                        to_labels=lambda s: s.argmax(0), fill_values=[m * value_scale for m in task.mean],
                        batch_size=schedule.batch_size, progress=schedule.progress,
                        tags={"classes": ",".join(train.classes), "model": spec.name},
                    )
                    result.extra.setdefault("predicted_rasters", []).append(str(target))
    if out is not None and results:
        write_report(out, results, meta, title=f"Semantic segmentation on {dataset}")
        plot_segmentation_examples(test, shown, examples, out / "segmentation.png")
        logger.info("wrote %s, %s and %s", out / "metrics.json", out / "segmentation.png", out / "scores.png")
    return results


def plot_segmentation_examples(
    test: SegmentationFolder, indices: Sequence[int], predictions: dict[str, list[np.ndarray]], path: Path
) -> Path:
    """Rows: test images; columns: image, ground truth, each model's prediction, as class colours over the image."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    models = list(predictions)
    ncols = 2 + len(models)
    fig = Figure(figsize=(2.8 * ncols, 2.8 * len(indices) + 0.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(indices), ncols, squeeze=False)
    palette = test.palette.astype(np.float32) / 255

    def overlay(rgb: np.ndarray, labels: np.ndarray) -> np.ndarray:
        out = rgb.copy()
        known = labels != test.ignore_index
        out[known] = 0.35 * rgb[known] + 0.65 * palette[labels[known].astype(np.int64)]
        return out

    for row, index in enumerate(indices):
        rgb = display_rgb(test.images[index], test.band_names)
        panels = [("image", rgb), ("ground truth", overlay(rgb, test.masks[index]))]
        panels += [(m, overlay(rgb, predictions[m][row])) for m in models]
        for ax, (label, picture) in zip(axes[row], panels):
            ax.imshow(picture, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(label, fontsize=10)
        axes[row][0].set_ylabel(test.names[index], fontsize=8)
    handles = [Patch(color=palette[i], label=name) for i, name in enumerate(test.classes)]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
