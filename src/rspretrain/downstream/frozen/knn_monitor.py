"""The online kNN monitor: a weighted kNN accuracy of the student backbone every N steps of a pretraining run.

The idea is the online kNN of the self-supervised libraries: solo-learn scores a weighted kNN
(``solo/utils/knn.py``, ``WeightedKNNClassifier``) on the validation set during training, lightly's
``BenchmarkModule`` (``lightly/utils/benchmarking``) runs ``knn_predict`` on it at the end of every epoch, and
Lightning Bolts has a ``KNNOnlineEvaluator`` callback; all of them use the weighted kNN of Wu et al. 2018
("Unsupervised Feature Learning via Non-Parametric Instance Discrimination", CVPR, Sec. 3.5). A kNN needs no training,
so a curve of it says whether the representation improves long before an offline evaluation would.

Our choices, and why:

- **A fixed, capped, held-out subset, re-encoded each time.** The kNN's memory is the first ``max_train_per_class``
  images per class of the dataset's train split, the scored images the first ``max_test_per_class`` of its
  validation split for the named sets (``eurosat``, ``ucmerced``: the test split stays unseen until the final
  evaluation), else of its test split (a ``folder:`` set's splits of
  :func:`~rspretrain.downstream.frozen.scene_benchmark.scene_split_plan`). Both are decoded once in ``setup`` and held as uint8 tensors (18 MB for
  EuroSAT's default 1,000 + 500 images), and at every evaluation both are encoded by the current weights, as
  lightly's ``BenchmarkModule`` re-encodes its kNN memory every validation epoch. solo-learn instead keeps the
  features its training forward passes produced (of augmented views, and as old as the epoch); re-encoding a small
  set costs a known, bounded time and gives features that all come from one set of weights.
- **Steps, not epochs.** Runs here are budgeted in steps or minutes and have no validation loop
  (``limit_val_batches=0``), so the monitor runs when training starts (step 0: the random-init reference), at every
  multiple of ``every_n_steps`` and once more after the last step. A step counts once under gradient accumulation.
  A resumed run is scored again at the step it continues from: ``--resume`` keeps the ``metrics.csv`` rows of the
  steps before the checkpoint's, and a point logged at that very step went with the rest.
- **Exactly the offline protocol.** Features come from :func:`~rspretrain.downstream.frozen.features.
  extract_features` (the run's bands, mean / std and input size; eval mode, no autocast: fp32) and the prediction
  from :func:`~rspretrain.downstream.frozen.knn.knn_predict` (cosine, ``exp(sim / T)`` votes; k = 20,
  T = 0.07 by default, DINO's). The monitor's last point is therefore the offline kNN of the final checkpoint on
  the same images, not an approximation of it (tested in an fp32 run; a channels_last backbone may round its
  features differently in the last bits from the reloaded one).
- **The student.** It scores ``pl_module.backbone``, the network the optimiser trains (the online network of
  BYOL, the student of CMID and GeoKR, although GeoKR exports its teacher). Every submodule's train / eval mode
  is restored afterwards (a part kept in eval mode on purpose stays so), and nothing random is drawn: a run with
  the monitor trains exactly the same weights as without it (tested).
- **Rank 0 computes.** Every rank decodes and band-checks the subset in ``setup`` (from the shared decode cache; a
  mismatch stops all ranks together), but only global rank 0 encodes and scores; the others go on to the next step
  and wait at its gradient all-reduce, so a DDP run pays the monitor's time once, as a single-device run does. The
  monitor calls no collective, so it cannot deadlock. Splitting the images over the ranks would gain a factor of
  the world size on a cost that the caps keep to seconds.
- **Logged through Lightning's loggers.** ``monitor/knn_accuracy`` (a fraction, as the reports' accuracies) is
  written with ``logger.log_metrics(..., step=global_step)`` to every logger of the run (``logs/metrics.csv``,
  TensorBoard, a user's own), so it lands at its own step whatever ``trainer.log_every_n_steps`` is. At the end of
  fit, rank 0 draws ``training_curves.png`` in the run folder: the loss and, below it, the kNN accuracy against
  the step (:func:`~rspretrain.downstream.report.plot.plot_training_curves`).

Under a time budget (``trainer.budget_minutes``) the monitor's time is not in the step time the budget is fitted
to, so the run ends later by about the monitor's total time; ``benchmarks/knn_monitor_overhead.py`` measures it.

The stage order puts the kNN in ``downstream/`` and the run in ``pretrain/``, so the run cannot build this callback
itself: the run config's ``monitor:`` section (:class:`~rspretrain.pretrain.config.MonitorConfig`) is turned into it
by :func:`monitor_callbacks` where the run is started (``rspretrain pretrain``, ``rspretrain quickstart``), and
:func:`~rspretrain.pretrain.run.pretrain` refuses a set ``monitor.dataset`` without it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger

from rspretrain.core.bands import check_bands
from rspretrain.core.errors import ConfigError, RSPretrainError
from rspretrain.core.ranges import check_range
from rspretrain.downstream.frozen.features import EncoderSpec, extract_features
from rspretrain.downstream.frozen.knn import knn_predict
from rspretrain.downstream.frozen.scene_benchmark import SceneSubset, scene_split_plan, subsample_per_class

if TYPE_CHECKING:
    from rspretrain.pretrain.config import RunConfig

__all__ = ["CURVES_FILE", "KNN_METRIC", "KNNMonitor", "MonitorPoint", "monitor_callbacks"]

log = logging.getLogger("rspretrain")

#: Named datasets whose ``val`` split the monitor scores (memory: ``train``), leaving ``test`` to the evaluation.
MONITOR_VALIDATION_SETS = ("eurosat", "ucmerced")

#: The metric the monitor logs (a fraction in [0, 1]).
KNN_METRIC = "monitor/knn_accuracy"
#: The file the monitor draws in the run folder at the end of fit.
CURVES_FILE = "training_curves.png"


@dataclass
class MonitorPoint:
    """One evaluation: the step (optimiser steps done), the top-1 accuracy and the seconds it took."""

    step: int
    accuracy: float
    seconds: float


class _HeldScenes:
    """A scene subset decoded once and held as uint8 tensors (the scene-dataset contract of
    :mod:`rspretrain.downstream.frozen.features`)."""

    def __init__(self, dataset: Any) -> None:
        batch = dataset.__getitems__(list(range(len(dataset))))
        self.images: torch.Tensor = torch.as_tensor(batch["image"]).contiguous()
        self.labels: torch.Tensor = torch.as_tensor(batch["label"]).long()
        self.classes: list[str] = list(dataset.classes)
        self.band_names: tuple[str, ...] | None = getattr(dataset, "band_names", None)
        self.value_scale: float = float(dataset.value_scale)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return {"image": self.images[index], "label": self.labels[index]}


class KNNMonitor(L.Callback):
    """Score a weighted kNN of the student backbone on held-out labelled images every ``every_n_steps`` steps.

    See the module docstring for what is scored, when, on which rank and where it is logged.

    Args:
        dataset: a labelled scene dataset as ``rspretrain evaluate --dataset`` names it (``eurosat``, ``ucmerced``,
            ``folder:PATH``, ...).
        root: its data root (None: the default data root).
        every_n_steps: optimiser steps between evaluations.
        k: neighbours that vote.
        temperature: vote temperature (``exp(sim / temperature)``).
        max_train_per_class: the kNN's memory: at most this many images per class of the train split.
        max_test_per_class: the scored images: at most this many per class of the validation (named sets) or test split.
        batch_size: images per forward pass.
        plot: draw ``training_curves.png`` in the run folder at the end of fit.

    Raises:
        ConfigError: an unknown dataset name or a value out of range (one line naming ``monitor.<key>``).
    """

    #: The run-config section this callback implements (:func:`rspretrain.pretrain.run.pretrain` looks for it).
    config_section: ClassVar[str] = "monitor"

    def __init__(
        self,
        dataset: str,
        root: str | None = None,
        every_n_steps: int = 100,
        k: int = 20,
        temperature: float = 0.07,
        max_train_per_class: int = 100,
        max_test_per_class: int = 50,
        batch_size: int = 256,
        plot: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(dataset, str) or not dataset:
            raise ConfigError(f"monitor.dataset: expected a dataset name (eurosat, ucmerced, folder:PATH, ...), "
                              f"got {dataset!r}")
        try:
            train_split, test_split, image_size = scene_split_plan(dataset)
        except ConfigError as err:
            raise ConfigError(f"monitor.dataset: {err}") from None
        # A monitor watches; it must not look at the test set the final evaluation reports. The named sets have a
        # validation split: train is the memory and val is scored (UC Merced's evaluation memory, trainval, holds val).
        self.plan = (("train", "val", image_size) if dataset in MONITOR_VALIDATION_SETS
                     else (train_split, test_split, image_size))
        values = {"every_n_steps": every_n_steps, "k": k, "temperature": temperature,
                  "max_train_per_class": max_train_per_class, "max_test_per_class": max_test_per_class,
                  "batch_size": batch_size}
        for key, value in values.items():
            kind = float if key == "temperature" else int
            if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
                raise ConfigError(f"monitor.{key}: expected {kind.__name__}, got {value!r}")
            check_range(f"monitor.{key}", value)
        self.dataset, self.root = dataset, root
        self.every_n_steps, self.k, self.temperature = every_n_steps, k, float(temperature)
        self.max_train_per_class, self.max_test_per_class = max_train_per_class, max_test_per_class
        self.batch_size, self.plot = batch_size, plot
        self.train: _HeldScenes | None = None
        self.test: _HeldScenes | None = None
        #: Every evaluation of this process (rank 0), in order.
        self.history: list[MonitorPoint] = []
        #: ``(train_features, train_labels, test_features, test_labels)`` of the last evaluation.
        self.last_features: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._last_step: int | None = None

    # -- the held subset ---------------------------------------------------------------------------
    def load(self) -> None:
        """Decode the two subsets once (a no-op when held)."""
        if self.train is not None:
            return
        from rspretrain.data import build_dataset

        train_split, test_split, image_size = self.plan
        held = []
        for split, per_class in ((train_split, self.max_train_per_class), (test_split, self.max_test_per_class)):
            kwargs: dict[str, Any] = {"image_size": image_size}
            if self.root is not None:
                kwargs["root"] = self.root
            if ":" not in self.dataset:  # the named sets decode only the first n per class of their split
                data = build_dataset(self.dataset, split=split, max_per_class=per_class, **kwargs)
            else:
                data = build_dataset(self.dataset, split=split, **kwargs)
                if getattr(data, "classes", None) is None or getattr(data, "labels", None) is None:
                    raise ConfigError(f"monitor.dataset {self.dataset!r}: its images carry no class labels (the kNN "
                                      "monitor needs a labelled scene dataset)")
                data = SceneSubset(data, subsample_per_class(data.labels, per_class))
            held.append(_HeldScenes(data))
        self.train, self.test = held
        if self.train.classes != self.test.classes:
            raise ConfigError(f"monitor.dataset {self.dataset!r}: train classes {self.train.classes} differ from test "
                              f"classes {self.test.classes}")

    def check_bands(self, pl_module: Any) -> None:
        """The monitor's images must have the bands the run trains on (one line naming both)."""
        self.load()
        assert self.train is not None
        model_bands = getattr(pl_module, "band_names", None)
        data_bands = self.train.band_names
        where = f"monitor.dataset {self.dataset!r} vs the pretraining data"
        check_bands(model_bands, data_bands, where)
        check_bands(None, None, where, len(pl_module.mean), int(self.train.images.shape[1]))

    # -- Lightning hooks ---------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for name in ("backbone", "mean", "std", "input_size"):
            if not hasattr(pl_module, name):
                raise ConfigError(f"monitor: {type(pl_module).__name__} has no {name} (the kNN monitor scores a "
                                  "PretrainMethod's student backbone)")
        self.check_bands(pl_module)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._evaluate_and_log(trainer, pl_module)  # step 0, or the step a resumed run continues from

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            self._evaluate_and_log(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._evaluate_and_log(trainer, pl_module)  # the last step, unless it was just scored

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not (self.plot and trainer.is_global_zero):
            return
        csv_logger = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
        if csv_logger is None:
            return  # no run folder (an in-memory run): nothing to draw from
        for logger in trainer.loggers:
            logger.save()  # the CSV writer holds the last rows until it is finalised, after this hook
        from rspretrain.downstream.report.plot import plot_training_curves

        name = getattr(pl_module, "method_name", type(pl_module).__name__)
        title = (f"{name}: loss, and kNN top-1 on {self.dataset} (k={self.k}; {len(self.train or ())} {self.plan[0]} / "
                 f"{len(self.test or ())} {self.plan[1]} images)")
        try:
            path = plot_training_curves(Path(csv_logger.log_dir) / "metrics.csv",
                                        Path(csv_logger.save_dir) / CURVES_FILE, title=title)
        except (RSPretrainError, OSError) as err:  # a drawing must not fail a finished run
            log.warning("no training curves: %s", str(err).splitlines()[0] if str(err) else type(err).__name__)
            return
        log.info("training curves: %s", path)

    # -- the evaluation ------------------------------------------------------------------------------
    def _evaluate_and_log(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = int(trainer.global_step)
        if step == self._last_step:
            return  # scored already (gradient accumulation; the last step)
        self._last_step = step
        if not trainer.is_global_zero:
            return
        point = self.evaluate(pl_module, step)
        for logger in trainer.loggers:
            logger.log_metrics({KNN_METRIC: point.accuracy}, step=step)
        log.info("kNN monitor, step %d: %s top-1 %.1f %% (%d / %d images, %.1f s)", step, self.dataset,
                 100 * point.accuracy, len(self.train), len(self.test), point.seconds)

    def evaluate(self, pl_module: Any, step: int = 0) -> MonitorPoint:
        """Encode both subsets with ``pl_module.backbone`` and score the weighted kNN; appended to :attr:`history`.

        The backbone runs in eval mode under ``torch.inference_mode`` with autocast off; every submodule's mode is
        restored afterwards.
        """
        self.load()
        assert self.train is not None and self.test is not None
        start = time.perf_counter()
        backbone = pl_module.backbone
        modes = [(module, module.training) for module in backbone.modules()]
        spec = EncoderSpec("monitor", backbone, pl_module.mean, pl_module.std, int(pl_module.input_size()),
                           getattr(pl_module, "band_names", None))
        device = pl_module.device
        try:
            with torch.autocast(device_type=device.type, enabled=False):
                train_f, train_l = extract_features(spec, self.train, self.batch_size, device, progress=False)
                test_f, test_l = extract_features(spec, self.test, self.batch_size, device, progress=False)
        finally:
            for module, mode in modes:
                module.training = mode
        predictions = knn_predict(train_f, train_l, test_f, len(self.train.classes), k=self.k,
                                  temperature=self.temperature)
        accuracy = float((predictions == test_l).mean())
        self.last_features = (train_f, train_l, test_f, test_l)
        point = MonitorPoint(step, accuracy, time.perf_counter() - start)
        self.history.append(point)
        return point


def monitor_callbacks(cfg: RunConfig) -> list[L.Callback]:
    """The callbacks the run config's ``monitor:`` section asks for: ``[KNNMonitor(...)]``, or ``[]`` when
    ``monitor.dataset`` is None. The monitor's data root defaults to the run's ``data.root``."""
    m = cfg.monitor
    if m.dataset is None:
        return []
    return [KNNMonitor(m.dataset, m.root if m.root is not None else cfg.data.root, m.every_n_steps, m.k,
                       m.temperature, m.max_train_per_class, m.max_test_per_class, m.batch_size)]
