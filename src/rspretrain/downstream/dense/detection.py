"""Object detection with any backbone: Faster R-CNN + FPN fine-tuned at native scale; AP50 and AP[.5:.95].

For every encoder: torchvision's Faster R-CNN on an FPN over a copy of it (:func:`~rspretrain.nn.detectors.
build_faster_rcnn`), trained with its own RPN + box losses on random crops of the training images (boxes clipped,
kept when half visible; random flips / 90-degree rotations), then every test image is predicted whole at its native
scale and scored with COCO AP (torchmetrics ``MeanAveragePrecision``). Writes ``metrics.json``, ``detections.png``
(test images with true boxes in green and each model's k best-scored boxes in red, k = the true count, so short
CPU runs whose scores are not yet calibrated still show what the model ranks first) and ``scores.png``.

Data (``data``): ``None`` / ``"neon"`` / the ``deepforest_neon_trees`` folder -> :class:`NeonTreeCrowns` (one class,
region split), or any COCO json / VOC folder / folder of images with CSV or XML boxes
(:class:`~rspretrain.data.dense.detection.DetectionFolder`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rspretrain.core.errors import ConfigError
from rspretrain.data.dense.detection import DetectionFolder, NeonTreeCrowns, crop_boxes
from rspretrain.downstream.dense.dense_task import DenseTask, train_comparison_model
from rspretrain.downstream.dense.metrics import detection_scores
from rspretrain.downstream.dense.schedule import DenseSchedule, check_dense_inputs
from rspretrain.downstream.frozen.features import EncoderSpec
from rspretrain.downstream.report.display import display_rgb
from rspretrain.downstream.report.record import Result
from rspretrain.downstream.report.writer import report_meta, write_report
from rspretrain.nn.backbones import is_transformer
from rspretrain.nn.decoders import FeaturePyramid
from rspretrain.nn.detectors import build_faster_rcnn

__all__ = ["DetectionTask", "detection_schedule", "dihedral_boxes", "evaluate_detection", "load_detection_data",
           "random_box_crop"]

logger = logging.getLogger("rspretrain")

NEON_NAMES = ("neon", "deepforest_neon_trees")


def detection_schedule(**overrides) -> DenseSchedule:
    """The default detection schedule (192 px crops, 8 per image and epoch, batches of 4, 10 epochs, FPN width 64 --
    CPU-sized; torchvision uses 256), with overrides."""
    return DenseSchedule(**{"epochs": 10, "crop_size": 192, "crops_per_image": 8, "batch_size": 4,
                            "decoder_channels": 64, **overrides})


def load_detection_data(data: str | os.PathLike | None = None) -> tuple[DetectionFolder, DetectionFolder, str]:
    """``(train, test, dataset label)`` for ``data`` (see the module docstring)."""
    path = None if data is None or str(data) in NEON_NAMES else Path(data)
    if path is None or path.name == "deepforest_neon_trees":
        return NeonTreeCrowns(path, "train"), NeonTreeCrowns(path, "test"), "neon_trees"
    return DetectionFolder(path, "train"), DetectionFolder(path, "test"), path.stem


def dihedral_boxes(xyxy: np.ndarray, height: int, width: int, k: int, flip: bool) -> np.ndarray:
    """Boxes of an ``height x width`` image after ``np.rot90(image, k, axes=(-2, -1))`` and then a left-right flip."""
    boxes = xyxy.astype(np.float32).copy()
    h, w = height, width
    for _ in range(k % 4):  # one counter-clockwise quarter turn: (x, y) -> (y, w - x); the image becomes w x h
        boxes = np.stack([boxes[:, 1], w - boxes[:, 2], boxes[:, 3], w - boxes[:, 0]], axis=1)
        h, w = w, h
    if flip:
        boxes = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], axis=1)
    return boxes.reshape(-1, 4)


def random_box_crop(
    image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, crop_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random ``crop_size`` window (the whole image if smaller) with a random dihedral transform, and its boxes."""
    height, width = image.shape[-2:]
    ch, cw = min(crop_size, height), min(crop_size, width)
    top = int(rng.integers(0, height - ch + 1))
    left = int(rng.integers(0, width - cw + 1))
    crop = image[:, top : top + ch, left : left + cw]
    kept_boxes, kept = crop_boxes(boxes, (top, left, ch, cw))
    k, flip = int(rng.integers(0, 4)), bool(rng.integers(0, 2))
    crop = np.rot90(crop, k, axes=(-2, -1))
    if flip:
        crop = crop[..., ::-1]
    return np.ascontiguousarray(crop), dihedral_boxes(kept_boxes, ch, cw, k, flip), labels[kept]


class DetectionTask(DenseTask):
    """torchvision's Faster R-CNN on an FPN over the encoder, its own RPN + box losses, on random crops with
    dihedral transforms (boxes clipped, kept when half visible) of images drawn uniformly."""

    method_name = "detection"

    def build_model(self, pyramid: FeaturePyramid) -> torch.nn.Module:
        return build_faster_rcnn(pyramid, len(self.train_data.classes), self.mean, self.std,
                                 fpn_channels=self.schedule.decoder_channels, rois_per_image=128,
                                 rpn_proposals_train=1000)

    def draw(self, rng: np.random.Generator) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
        train = self.train_data
        images, targets = [], []
        for i in rng.choice(len(train), size=self.schedule.batch_size):
            image, boxes, labels = random_box_crop(train.images[i], train.boxes[i], train.labels[i], self.crop_size,
                                                   rng)
            images.append(torch.from_numpy(image))
            # label 0 is torchvision's background
            targets.append({"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels + 1)})
        return images, targets

    def loss(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images, targets = batch
        losses = self.model([image.float() / self.value_scale for image in images], targets)
        return sum(losses.values()), {k: v.detach() for k, v in losses.items()}


def evaluate_detection(
    specs: Sequence[EncoderSpec],
    data: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    schedule: DenseSchedule | None = None,
    n_examples: int = 3,
    resume: bool = False,
    trainer: dict[str, Any] | None = None,
) -> list[Result]:
    """Fine-tune and score Faster R-CNN + FPN on every encoder in ``specs`` with one schedule.

    Args:
        specs: encoders (unique names).
        data: dataset (see the module docstring).
        out_dir: where ``metrics.json``, ``detections.png`` and ``scores.png`` go (None: nothing written).
        schedule: the shared schedule (default :func:`detection_schedule`; ``decoder_channels`` is the FPN width).
        n_examples: test images shown in the picture.
        resume: continue each model's training from ``out_dir/training/<model>/checkpoints/last.ckpt`` when there.
        trainer: further ``lightning.Trainer`` arguments for every model's training (e.g. ``gradient_clip_val``).

    Returns:
        One :class:`Result` per encoder.

    Raises:
        BandMismatchError: the data's bands differ from an encoder's.
        ConfigError: duplicate model names.
    """
    schedule = schedule or detection_schedule()
    train, test, dataset = load_detection_data(data)
    names = check_dense_inputs(specs, train.band_names, train.images[0].shape[0], str(train.path))
    for spec in specs:
        arch = str(getattr(spec.encoder, "arch", getattr(spec.encoder, "rs_arch", "")))
        if is_transformer(arch):
            # Faster R-CNN feeds whole images of any size; our ViT/Swin encoders are built for one input size
            # (position embeddings, windows), so they are refused here rather than failing mid-training.
            raise ConfigError(f"detection: {spec.name} is a {arch} encoder built for one input size; detection "
                              "takes CNN backbones (ResNet family) for now")
    device = torch.device(schedule.device)
    out = Path(out_dir) if out_dir is not None else None
    meta = report_meta(
        "detection", schedule.to_dict(), schedule.seed, dataset=dataset, data=str(train.path), classes=train.classes,
        split=train.split_mode,
        n_train=len(train), n_test=len(test), train_boxes=train.num_boxes, test_boxes=test.num_boxes,
        test_images=test.names, schedule=schedule.to_dict(), models=names,
    )
    results: list[Result] = []
    examples: dict[str, list[dict[str, np.ndarray]]] = {}
    shown = list(range(min(n_examples, len(test))))
    targets = [{"boxes": torch.from_numpy(b), "labels": torch.from_numpy(lab)}
               for b, lab in zip(test.boxes, test.labels)]
    for spec in specs:
        task = DetectionTask(spec, train, schedule)
        fit = train_comparison_model(task, out, resume, trainer)
        if fit is None:
            continue  # DDP: the other ranks only train; rank 0 scores and writes the report
        model, value_scale = task.model, task.value_scale
        predictions = []
        with torch.no_grad():
            for image in test.images:
                found = model([torch.from_numpy(image).to(device).float() / value_scale])[0]
                predictions.append({"boxes": found["boxes"].cpu(), "scores": found["scores"].cpu(),
                                    "labels": found["labels"].cpu() - 1})
        examples[spec.name] = [{k: v.numpy() for k, v in predictions[i].items()} for i in shown]
        metrics = detection_scores(predictions, targets, train.classes)
        metrics["boxes_predicted"] = int(sum(len(p["boxes"]) for p in predictions))
        results.append(Result(spec.name, "detection", dataset, metrics, len(train), len(test), fit))
        logger.info("detection | %s | %s: AP50 %.1f %%, AP %.1f %%", dataset, spec.name, 100 * metrics["ap50"],
                    100 * metrics["ap"])
        if out is not None:
            write_report(out, results, meta, final=False)
    if out is not None and results:
        write_report(out, results, meta, title=f"Object detection on {dataset}")
        plot_detection_examples(test, shown, examples, out / "detections.png")
        logger.info("wrote %s, %s and %s", out / "metrics.json", out / "detections.png", out / "scores.png")
    return results


def plot_detection_examples(
    test: DetectionFolder, indices: Sequence[int], predictions: dict[str, list[dict[str, np.ndarray]]], path: Path
) -> Path:
    """Rows: test images; columns: models. True boxes green; each model's k best boxes (k = true count) red."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    models = list(predictions)
    first = test.images[indices[0]]
    aspect = first.shape[1] / first.shape[2]
    width = max(5.0, 3.6 * len(models))
    fig = Figure(figsize=(width, width / len(models) * aspect * len(indices) + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(indices), len(models), squeeze=False)
    for row, index in enumerate(indices):
        rgb = display_rgb(test.images[index], test.band_names)
        for col, model in enumerate(models):
            ax = axes[row][col]
            ax.imshow(rgb, interpolation="nearest")
            for x0, y0, x1, y1 in test.boxes[index]:
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="#39ff14", lw=1.0))
            found = predictions[model][row]
            keep = np.argsort(-found["scores"], kind="stable")[: len(test.boxes[index])]
            for x0, y0, x1, y1 in found["boxes"][keep]:
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="#ff2a2a", lw=1.0, ls="--"))
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(model, fontsize=10)
            shown = found["scores"][keep]
            low = f", scores {shown.min():.2f}-{shown.max():.2f}" if len(shown) else ""
            ax.text(2, 2, f"{test.names[index]}: {len(test.boxes[index])} true{low}",
                    va="top", fontsize=6,
                    color="white", bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "lw": 0})
    fig.suptitle("green: ground truth\nred dashed: k best-scored predictions (k = true boxes)", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
