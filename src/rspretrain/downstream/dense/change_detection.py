"""Change detection with any backbone: a siamese UPerNet fine-tuned on bitemporal pairs; F1 / IoU / precision / recall.

For every encoder: a :class:`~rspretrain.nn.decoders.SiameseChangeDetector` on a copy of it (shared weights for both
dates), trained on random co-located crops of the training pairs with binary cross-entropy plus soft Dice on the
change logit -- Dice counters the rarity of change pixels (10-20 % in LEVIR-CD), as in many CD baselines (e.g.
ChangeFormer, W. G. C. Bandara, V. M. Patel, IGARSS 2022, uses CE; SNUNet-CD, S. Fang et al., GRSL 2021, CE + Dice).
Test pairs are predicted whole by overlapping sliding windows and thresholded at probability 0.5; precision, recall,
F1 and IoU of the change class come from pixel counts summed over the test set, F1 / IoU with a bootstrap interval
over test pairs. Writes ``metrics.json``, ``change.png`` (before, after, truth, each model's change map) and
``scores.png``; optionally predicts a whole pair of GeoTIFFs with the first encoder's model.

Data (``data``): ``None`` / ``"levir"`` / the ``levir_cd_samples`` folder (the crops the LEVIR-CD authors publish:
train + val vs test by name), or any folder in the LEVIR-CD layout
(:class:`~rspretrain.data.dense.change_detection.ChangeDetectionFolder`).
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

from rspretrain.data.dense.change_detection import ChangeDetectionFolder
from rspretrain.downstream.dense.dense_task import DenseTask, train_comparison_model
from rspretrain.downstream.dense.metrics import binary_counts, bootstrap_interval, change_scores
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
from rspretrain.nn.decoders import FeaturePyramid, SiameseChangeDetector

__all__ = ["ChangeDetectionTask", "change_loss", "change_schedule", "evaluate_change_detection", "load_change_data"]

logger = logging.getLogger("rspretrain")

LEVIR_NAMES = ("levir", "levir_cd_samples")
THRESHOLD = 0.5


def change_schedule(**overrides) -> DenseSchedule:
    """The default change-detection schedule (128 px crops, 16 per pair and epoch, 10 epochs), with overrides."""
    return DenseSchedule(**{"epochs": 10, "crop_size": 128, "crops_per_image": 16, "batch_size": 8, **overrides})


def load_change_data(
    data: str | os.PathLike | None = None, scale: float = 1.0
) -> tuple[ChangeDetectionFolder, ChangeDetectionFolder, str]:
    """``(train, test, dataset label)``; train is ``trainval`` when the data has a val split."""
    path = None if data is None or str(data) in LEVIR_NAMES else Path(data)
    label = "levir_cd" if path is None or path.name == "levir_cd_samples" else path.name
    test = ChangeDetectionFolder(path, "test", scale=scale)
    train_split = "trainval" if test.layout in ("split_folders", "name_prefix") else "train"
    return ChangeDetectionFolder(path, train_split, scale=scale), test, label


def change_loss(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Binary cross-entropy + soft Dice of the change logit ``(B, 1, H, W)`` against a 0/1 mask ``(B, H, W)``."""
    target = target.float().unsqueeze(1)
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits)
    dice = 1 - (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
    return bce + dice, {"bce": float(bce.detach()), "dice": float(dice.detach())}


class ChangeDetectionTask(DenseTask):
    """A siamese UPerNet (shared encoder weights for both dates), :func:`change_loss` on co-located random crops of
    the training pairs (the same crop and flip / rotation for before, after and mask)."""

    method_name = "change"

    def build_model(self, pyramid: FeaturePyramid) -> SiameseChangeDetector:
        train = self.train_data
        self.items = list(zip(train.images_a, train.images_b, train.masks))
        return SiameseChangeDetector(pyramid, self.mean, self.std, self.value_scale, self.schedule.decoder_channels)

    def training_images(self, train: ChangeDetectionFolder) -> list[np.ndarray]:
        return [*train.images_a, *train.images_b]  # both dates of every pair

    def draw(self, rng: np.random.Generator) -> list[torch.Tensor]:
        return random_crop_batch(self.items, self.crop_size, self.schedule.batch_size, rng, (0, 0, 0))

    def loss(self, batch: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        before, after, mask = batch
        loss, terms = change_loss(self.model(before.float(), after.float()), mask)
        return loss, {f"loss_{name}": value for name, value in terms.items()}


def _change_probability(model: SiameseChangeDetector, device: torch.device):
    def predictor(windows: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.sigmoid(model(windows[0].to(device).float(), windows[1].to(device).float()))

    return predictor


def evaluate_change_detection(
    specs: Sequence[EncoderSpec],
    data: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    schedule: DenseSchedule | None = None,
    scale: float = 1.0,
    n_examples: int = 3,
    predict_pairs: Sequence[tuple[str | os.PathLike, str | os.PathLike]] = (),
    n_resamples: int = 1000,
    resume: bool = False,
    trainer: dict[str, Any] | None = None,
) -> list[Result]:
    """Fine-tune and score a siamese change detector on every encoder in ``specs`` with one schedule.

    Args:
        specs: encoders (unique names).
        data: dataset (see the module docstring).
        out_dir: where ``metrics.json``, ``change.png`` and ``scores.png`` go (None: nothing written).
        schedule: the shared schedule (default :func:`change_schedule`).
        scale: image resize factor.
        n_examples: test pairs shown in the picture.
        predict_pairs: ``(before.tif, after.tif)`` pairs to predict whole with the first encoder's model.
        n_resamples: bootstrap resamples.
        resume: continue each model's training from ``out_dir/training/<model>/checkpoints/last.ckpt`` when there.
        trainer: further ``lightning.Trainer`` arguments for every model's training (e.g. ``gradient_clip_val``).

    Returns:
        One :class:`Result` per encoder.

    Raises:
        BandMismatchError: the data's bands differ from an encoder's.
        ConfigError: duplicate model names, or pairs to predict without ``out_dir``.
    """
    schedule = schedule or change_schedule()
    train, test, dataset = load_change_data(data, scale)
    rasters = [raster for pair in predict_pairs for raster in pair]
    names = check_dense_inputs(specs, train.band_names, train.images_a[0].shape[0], str(train.root), rasters, out_dir)
    device = torch.device(schedule.device)
    out = Path(out_dir) if out_dir is not None else None
    meta = report_meta(
        "change", schedule.to_dict(), schedule.seed, dataset=dataset, data=str(train.root), train_split=train.split,
        n_train=len(train),
        n_test=len(test), test_pairs=test.names, threshold=THRESHOLD,
        change_fraction={"train": train.change_fraction(), "test": test.change_fraction()},
        schedule=schedule.to_dict(), models=names,
    )
    results: list[Result] = []
    examples: dict[str, list[np.ndarray]] = {}
    shown = _example_indices(test, n_examples)
    for k, spec in enumerate(specs):
        task = ChangeDetectionTask(spec, train, schedule)
        fit = train_comparison_model(task, out, resume, trainer)
        if fit is None:
            continue  # DDP: the other ranks only train; rank 0 scores and writes the report
        crop, value_scale = task.crop_size, task.value_scale
        overlap = fit["overlap"] = schedule.window_overlap(crop)
        predictor = _change_probability(task.model, device)
        per_pair, predictions = [], []
        for i in range(len(test)):
            probability = predict_image(predictor, [torch.from_numpy(test.images_a[i]),
                                                    torch.from_numpy(test.images_b[i])], crop, overlap,
                                        schedule.batch_size)[0]
            pred = (probability > THRESHOLD).numpy()
            per_pair.append(binary_counts(pred, test.masks[i]))
            if i in shown:
                predictions.append(pred)
        examples[spec.name] = predictions
        counts = np.sum(per_pair, axis=0)
        metrics: dict = {**change_scores(counts), "counts": {"tp": int(counts[0]), "fp": int(counts[1]),
                                                             "fn": int(counts[2]), "tn": int(counts[3])}}
        for name in ("f1", "iou"):
            metrics[f"{name}_ci"] = list(bootstrap_interval(np.stack(per_pair), lambda c, n=name: change_scores(c)[n],
                                                            n_resamples, seed=schedule.seed))
        results.append(Result(spec.name, "change", dataset, metrics, len(train), len(test), fit))
        logger.info("change | %s | %s: F1 %.1f %% [%.1f, %.1f], IoU %.1f %%, precision %.1f %%, recall %.1f %%",
                    dataset, spec.name, 100 * metrics["f1"], 100 * metrics["f1_ci"][0], 100 * metrics["f1_ci"][1],
                    100 * metrics["iou"], 100 * metrics["precision"], 100 * metrics["recall"])
        if out is not None:
            write_report(out, results, meta, final=False)
            if k == 0:
                for before, after in predict_pairs:
                    target = out / f"{Path(before).stem}_change.tif"
                    predict_raster(
                        predictor, [before, after], target, crop, overlap, 1,
                        to_labels=lambda s: (s[0] > THRESHOLD).to(torch.uint8),
                        fill_values=[m * value_scale for m in task.mean], batch_size=schedule.batch_size,
                        progress=schedule.progress, tags={"classes": "no change,change", "model": spec.name},
                    )
                    results[-1].extra.setdefault("predicted_rasters", []).append(str(target))
    if out is not None and results:
        write_report(out, results, meta, title=f"Change detection on {dataset}")
        plot_change_examples(test, shown, examples, out / "change.png")
        logger.info("wrote %s, %s and %s", out / "metrics.json", out / "change.png", out / "scores.png")
    return results


def _example_indices(test: ChangeDetectionFolder, n: int) -> list[int]:
    """The test pairs with the most change first (a picture of an unchanged pair shows nothing to compare)."""
    order = sorted(range(len(test)), key=lambda i: -int(test.masks[i].sum()))
    return sorted(order[:n])


def plot_change_examples(
    test: ChangeDetectionFolder, indices: Sequence[int], predictions: dict[str, list[np.ndarray]], path: Path
) -> Path:
    """Rows: test pairs; columns: before, after, truth, each model's change map (white hit, red false alarm,
    blue miss)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    models = list(predictions)
    ncols = 3 + len(models)
    fig = Figure(figsize=(2.6 * ncols, 2.6 * len(indices) + 0.7), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(indices), ncols, squeeze=False)
    for row, index in enumerate(indices):
        truth = test.masks[index].astype(bool)
        panels = [("before (A)", display_rgb(test.images_a[index], test.band_names)),
                  ("after (B)", display_rgb(test.images_b[index], test.band_names)),
                  ("ground truth", np.repeat(truth[..., None], 3, axis=2).astype(np.float32))]
        for model in models:
            pred = predictions[model][row].astype(bool)
            picture = np.zeros((*truth.shape, 3), np.float32)
            picture[pred & truth] = (1, 1, 1)
            picture[pred & ~truth] = (0.9, 0.15, 0.15)
            picture[~pred & truth] = (0.2, 0.45, 1.0)
            panels.append((model, picture))
        for ax, (label, picture) in zip(axes[row], panels):
            ax.imshow(picture, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(label, fontsize=10)
        axes[row][0].set_ylabel(test.names[index], fontsize=8)
    handles = [Patch(color=(1, 1, 1), label="change found", ec="k"),
               Patch(color=(0.9, 0.15, 0.15), label="false alarm"),
               Patch(color=(0.2, 0.45, 1.0), label="missed change")]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
