"""Fine-tune a backbone for scene classification (plain or SSKDNet) and score it on the test split.

One run = build the splits, train a :mod:`rspretrain.downstream.finetune` LightningModule for ``epochs`` epochs (Lightning loop,
progress bar, CSV log), then score the INFERENCE network (backbone + fusion + classifier; SSKDNet's branch is not
used) on the test split: overall accuracy with a 95 % bootstrap interval, per-class accuracy and the confusion matrix.
No model selection happens on the test split: the model after the last epoch is scored.

Splits (deterministic, see ``shared/data/MANIFEST.md``):

- ``eurosat``: the manifest's ``train`` split (60 %) -> ``test`` split (20 %), native 64 px; ``train_ratio`` does not
  apply. ``max_train_per_class`` / ``max_test_per_class`` take the first k of each class's random ranking, a
  stratified random subset (for CPU budgets).
- ``ucmerced``: the literature's ratio protocol, ``train_ratio`` of each class trains (0.5 or 0.8; default 0.8) and
  the rest is the test set.
- ``folder:PATH``: a stratified ``train_ratio`` split of a class-per-folder dataset (default 0.8).

Input size (``image_size``): images are decoded once at this size (default 64 px, EuroSAT's native size). UC Merced's
256 px scenes are downsampled (antialiased) to it so a CPU run stays short -- at 64 px a ResNet-18 trains about
4x faster than at 128 px; pass 96 / 128 / 224 when compute allows. Training views: random resized crop (area
0.5-1) + horizontal/vertical flips, on the device (:mod:`rspretrain.views.finetune_views`).

Normalisation: a pretrained ``init`` brings its pretraining mean/std (the backbone learned on those); a random init
uses the training split's per-band statistics.

Optimiser (our default, :data:`rspretrain.downstream.finetune.scene_classification_task.FINETUNE_OPTIM`): SGD, momentum 0.9, lr 0.05,
weight decay 5e-4 (not on norms and biases), 20 warm-up steps then cosine to 0 over the run, batch 32.

Outputs in ``out_dir``: the one report (``metrics.json``: the result record with scores, timings and settings, and
provenance; ``results.md``; ``scores.png``), ``confusion_matrix.png``, ``predictions.json`` (each test image's
label and predicted class index, in the test split's order: paired comparisons bootstrap over them),
``model.safetensors`` (+ ``.json``: the inference network, reload with
:func:`rspretrain.pretrain.export.load_scene_classifier`), ``backbone.safetensors`` (+ ``.json``: the fine-tuned backbone as a
plain timm model, :func:`rspretrain.pretrain.export.load_backbone`), ``logs/metrics.csv``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rspretrain.core.errors import ConfigError, DataError
from rspretrain.downstream.report.record import Result
from rspretrain.downstream.report.writer import read_report

logger = logging.getLogger("rspretrain")

__all__ = ["FinetuneConfig", "finetune_summary", "load_finetune_splits", "read_finetune_summary", "run_finetune"]

DEFAULT_IMAGE_SIZE = 64
DEFAULT_TRAIN_RATIO = 0.8


@dataclass
class FinetuneConfig:
    """One fine-tuning run (``rspretrain finetune`` flags; ``model`` / ``optim`` / ``augment`` from ``--section.key``).

    Attributes:
        method: ``"finetune"`` (plain) or ``"sskdnet"``.
        dataset: ``"eurosat"``, ``"ucmerced"`` or ``"folder:PATH"``.
        root: data root (default: ``$RSPRETRAIN_DATA`` or ``../shared/data``).
        train_ratio: fraction of each class used for training (UC Merced / folders only).
        image_size: input side in pixels.
        max_train_per_class, max_test_per_class: stratified subsets for short runs (None: all).
        init: ``"random"``, a pretraining ``.ckpt`` or an exported ``.safetensors`` backbone.
        backbone: timm architecture (None: the pretrained one, or resnet18).
        epochs, batch_size, seed: training length, batch, seed (weights, data order, augmentation).
        out_dir: where outputs go.
        model: task constructor overrides (e.g. ``{"kd_weight": 0}``).
        optim: :class:`~rspretrain.core.optim.OptimConfig` overrides.
        augment: :class:`~rspretrain.views.finetune_views.AugmentConfig` overrides.
        accelerator: Lightning accelerator (``auto`` picks a GPU when there is one).
        precision: Lightning precision of training (``32-true``, ``bf16-mixed``, ``16-mixed``, or ``auto``: bf16-mixed
            where the hardware computes in bf16; :mod:`rspretrain.training.fast_step`).
        devices: training processes (DDP, under torchrun or spawned); ``batch_size`` is the global batch, split
            evenly over them. Rank 0 scores the test set and writes the outputs.
        progress: show progress bars.
        export: write ``model.safetensors`` and ``backbone.safetensors``.
        resume: continue from ``out_dir/checkpoints/last.ckpt`` (written after every epoch).
        trainer: further ``lightning.Trainer`` arguments (``gradient_clip_val``...; callbacks and loggers by
            ``class_path``), as in a pretraining config's ``trainer`` section.
    """

    method: str = "finetune"
    dataset: str = "ucmerced"
    root: str | None = None
    train_ratio: float | None = None
    image_size: int = DEFAULT_IMAGE_SIZE
    max_train_per_class: int | None = None
    max_test_per_class: int | None = None
    init: str = "random"
    backbone: str | None = None
    epochs: int = 30
    batch_size: int = 32
    seed: int = 0
    out_dir: str = "runs/finetune"
    model: dict[str, Any] = field(default_factory=dict)
    optim: dict[str, Any] = field(default_factory=dict)
    augment: dict[str, Any] = field(default_factory=dict)
    accelerator: str = "auto"
    precision: str = "32-true"
    devices: int = 1
    progress: bool = True
    export: bool = True
    resume: bool = False
    trainer: dict[str, Any] = field(default_factory=dict)


def _first_per_class(dataset, k: int | None):
    """The first ``k`` samples of each class in dataset order (a stratified random subset for our datasets)."""
    if k is None:
        return dataset
    from rspretrain.downstream.frozen.scene_benchmark import SceneSubset, subsample_per_class

    index = subsample_per_class(dataset.labels, k)
    return dataset.subset(index) if hasattr(dataset, "subset") else SceneSubset(dataset, index)


def load_finetune_splits(
    name: str,
    root: str | None = None,
    train_ratio: float | None = None,
    image_size: int = DEFAULT_IMAGE_SIZE,
    max_train_per_class: int | None = None,
    max_test_per_class: int | None = None,
):
    """``(train, test)`` scene datasets of a fine-tuning run (see the module docstring for the splits).

    Raises:
        ConfigError: unknown dataset, ``train_ratio`` given for EuroSAT or outside (0, 1), bad subset sizes.
        DataError: train and test disagree on the classes.
    """
    from rspretrain.data import build_dataset

    for key, k in (("max_train_per_class", max_train_per_class), ("max_test_per_class", max_test_per_class)):
        if k is not None and k < 1:
            raise ConfigError(f"{key} must be >= 1, got {k}")
    if image_size < 8:
        raise ConfigError(f"image_size must be >= 8, got {image_size}")
    kwargs: dict[str, Any] = {} if root is None else {"root": root}
    kind = name.split(":", 1)[0].lower()
    if kind == "eurosat" and ":" not in name:
        if train_ratio is not None:
            raise ConfigError("train_ratio does not apply to eurosat (it has a fixed train/test split)")
        size = None if image_size == 64 else image_size
        train = build_dataset("eurosat", split="train", image_size=size, max_per_class=max_train_per_class, **kwargs)
        test = build_dataset("eurosat", split="test", image_size=size, max_per_class=max_test_per_class, **kwargs)
    elif kind == "ucmerced" and ":" not in name:
        ratio = DEFAULT_TRAIN_RATIO if train_ratio is None else train_ratio
        options = {"image_size": image_size, "train_ratio": ratio, **kwargs}
        train = build_dataset("ucmerced", split="train", max_per_class=max_train_per_class, **options)
        test = build_dataset("ucmerced", split="test", max_per_class=max_test_per_class, **options)
    elif kind == "folder" and ":" in name:
        ratio = DEFAULT_TRAIN_RATIO if train_ratio is None else train_ratio
        train = _first_per_class(build_dataset(name, split="train", image_size=image_size, train_fraction=ratio),
                                 max_train_per_class)
        test = _first_per_class(build_dataset(name, split="test", image_size=image_size, train_fraction=ratio),
                                max_test_per_class)
    else:
        raise ConfigError(f"unknown fine-tuning dataset {name!r}; valid: eurosat, ucmerced, folder:PATH")
    if list(train.classes) != list(test.classes):
        raise DataError(f"{name}: train classes {list(train.classes)} differ from test classes {list(test.classes)}")
    return train, test


def _validate_model_overrides(task_cls, values: dict[str, Any]) -> dict[str, Any]:
    """Check ``--model.key`` overrides against the task's constructor (unknown key or wrong type: ConfigError)."""
    from rspretrain.core.config import coerce, constructor_parameters
    from rspretrain.downstream.finetune.scene_classification_task import DATA_DERIVED

    params = constructor_parameters(task_cls)
    set_by_driver = DATA_DERIVED + ("optim", "augment", "init", "backbone", "image_size")
    allowed = {k: v for k, v in params.items() if k not in set_by_driver}
    out = {}
    for key, value in values.items():
        if key in set_by_driver:
            raise ConfigError(f"model.{key} is set from the data or a finetune flag, not --model.{key}")
        if key not in allowed:
            raise ConfigError(f"unknown key 'model.{key}' for fine-tuning method {task_cls.method_name!r}; "
                              f"valid keys: {', '.join(sorted(allowed))}")
        out[key] = coerce(value, allowed[key], f"model.{key}")
    return out


def _train_loader(dataset, global_batch: int, seed: int, task, rank: int = 0, world_size: int = 1):
    """Shuffled batches keyed on the training step (:class:`StepIndexedBatchSampler`): ``resume`` continues the
    uninterrupted run's data order (a last partial batch is dropped, as in pretraining); under DDP each rank reads
    its slice of ``global_batch`` (a multiple of ``world_size``)."""
    from torch.utils.data import DataLoader

    from rspretrain.data.io.collate import collate_batched
    from rspretrain.data.step_indexed_sampler import StepIndexedBatchSampler

    sampler = StepIndexedBatchSampler(len(dataset), global_batch // world_size, seed=seed, rank=rank,
                                      world_size=world_size, name="fine-tuning train split",
                                      position=lambda: task.trainer.global_step if task._trainer is not None else 0)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_batched)


def run_finetune(cfg: FinetuneConfig, splits: tuple[Any, Any] | None = None, callbacks: Sequence[Any] = ()
                 ) -> dict[str, Any]:
    """Train and score one fine-tuning run; returns the ``metrics.json`` payload.

    Args:
        cfg: the run.
        splits: pre-built ``(train, test)`` datasets (a benchmark reuses them across runs); None builds them from
            ``cfg`` with :func:`load_finetune_splits`.
        callbacks: Lightning callbacks added to the trainer's (monitors in tests and benchmarks).
    """
    import lightning as L

    from rspretrain.core import provenance
    from rspretrain.core.json_io import write_json
    from rspretrain.core.rng_state import StepSeededRNG
    from rspretrain.data.band_statistics import band_statistics
    from rspretrain.downstream.finetune import get_task
    from rspretrain.downstream.finetune.backbone_init import resolve_init
    from rspretrain.downstream.report.classification import classification_scores, plot_confusion_matrix
    from rspretrain.downstream.report.writer import report_meta, write_report
    from rspretrain.pretrain.export import export_backbone, export_scene_classifier
    from rspretrain.training.fast_step import check_precision
    from rspretrain.training.trainer import TrainerConfig, build_trainer, fit, resume_checkpoint

    cfg.precision = check_precision(cfg.precision, "precision")
    TrainerConfig(lightning=dict(cfg.trainer))  # a bad trainer.* key fails here, before any data is read
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise ConfigError(f"epochs and batch_size must be >= 1, got {cfg.epochs} and {cfg.batch_size}")
    task_cls = get_task(cfg.method)
    model_overrides = _validate_model_overrides(task_cls, cfg.model)
    out = Path(cfg.out_dir)
    train, test = splits if splits is not None else load_finetune_splits(
        cfg.dataset, cfg.root, cfg.train_ratio, cfg.image_size, cfg.max_train_per_class, cfg.max_test_per_class
    )
    in_chans = int(train.__getitems__([0])["image"].shape[1])
    band_names = getattr(train, "band_names", None)
    source = resolve_init(cfg.init, band_names, in_chans)  # fail on a band mismatch before any training
    if source.mean is not None:
        mean, std, norm_from = list(source.mean), list(source.std), "init"
    else:
        mean, std = band_statistics(train)
        norm_from = "train split"
    del source

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    task = task_cls(
        num_classes=len(train.classes), backbone=cfg.backbone, init=cfg.init, in_chans=in_chans,
        band_names=band_names, mean=mean, std=std, value_scale=float(train.value_scale), classes=list(train.classes),
        image_size=cfg.image_size, optim=cfg.optim, augment=cfg.augment, **model_overrides,
    )  # fmt: skip
    if len(train) < 2:
        raise DataError(f"{len(train)} training images: fine-tuning needs at least 2")
    global_batch = min(cfg.batch_size, len(train))
    if global_batch % cfg.devices:
        raise ConfigError(f"batch_size {global_batch} does not split evenly over {cfg.devices} devices")
    steps_per_epoch = len(train) // global_batch
    resume_from = resume_checkpoint(out, cfg.resume)
    out.mkdir(parents=True, exist_ok=True)
    task.provenance = provenance.collect(asdict(cfg), cfg.seed)
    # A checkpoint after every epoch; under DDP rank 0 scores the test set after training.
    trainer = build_trainer(
        TrainerConfig(max_steps=cfg.epochs * steps_per_epoch, ckpt_every_n_steps=steps_per_epoch,
                      log_every_n_steps=max(1, min(10, steps_per_epoch)), accelerator=cfg.accelerator,
                      devices=cfg.devices, precision=cfg.precision, progress_bar=cfg.progress,
                      lightning=dict(cfg.trainer)),
        out, max_epochs=cfg.epochs, resume_from=resume_from, tensorboard=False,
        callbacks=[StepSeededRNG(cfg.seed), *callbacks],  # augmentation draws keyed on the step: exact resume
    )
    # Built after the trainer: under torchrun (or in a spawned rank) it knows this process's rank.
    loader = _train_loader(train, global_batch, cfg.seed, task, trainer.global_rank, trainer.world_size)
    logger.info("%s on %s: %d train / %d test images, %d classes, %d epochs of %d steps, init %s",
                cfg.method, cfg.dataset, len(train), len(test), len(train.classes), cfg.epochs, steps_per_epoch,
                cfg.init)
    start = time.perf_counter()
    fit(trainer, task, out, resume_from, train_dataloaders=loader)
    train_seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return {}  # DDP: the other ranks only train; rank 0 scores and writes the outputs
    task.to(trainer.strategy.root_device)  # Lightning hands the module back on the CPU; score where it trained
    last = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")}

    start = time.perf_counter()
    logits, labels = task.predict_logits(test, progress=cfg.progress)
    test_seconds = time.perf_counter() - start
    predicted = logits.argmax(1).numpy()
    scores = classification_scores(labels.numpy(), predicted, list(train.classes), seed=cfg.seed)
    write_json(out / "predictions.json", {"classes": list(train.classes), "label": labels.tolist(),
                                          "prediction": predicted.tolist()})

    result = Result(
        model=init_label(cfg.init), task=cfg.method, dataset=cfg.dataset,
        metrics={k: v for k, v in scores.items() if k != "n_test"}, n_train=len(train), n_test=int(scores["n_test"]),
        extra={
            "epochs": cfg.epochs, "steps": int(trainer.global_step), "train_seconds": round(train_seconds, 2),
            "train_images_per_s": round(trainer.global_step * global_batch / max(train_seconds, 1e-9), 1),
            "world_size": trainer.world_size,
            "test_seconds": round(test_seconds, 2), "final_train_metrics": last,
            **({"resumed_from": str(resume_from)} if resume_from else {}),
        },
    )  # fmt: skip
    meta = report_meta(
        "scene_finetuning", asdict(cfg), cfg.seed, method=cfg.method, dataset=cfg.dataset,
        train_ratio=_effective_train_ratio(cfg), init=task.init_source.describe(),
        normalisation={"mean": mean, "std": std, "from": norm_from},
        inference_parameters=sum(p.numel() for p in task.net.parameters()),
        training_parameters=sum(p.numel() for p in task.parameters()), hyper_parameters=dict(task.hparams),
    )  # fmt: skip
    oa, (lo, hi) = scores["overall_accuracy"], scores["overall_accuracy_ci"]
    title = f"{cfg.method} on {cfg.dataset}: OA {100 * oa:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}] (n={len(labels)})"
    plot_confusion_matrix(scores["confusion_matrix"], list(train.classes), out / "confusion_matrix.png", title)
    if cfg.export:
        task.cpu()
        export_scene_classifier(task, out / "model.safetensors", source=f"rspretrain finetune --method {cfg.method}")
        export_backbone(task, out / "backbone.safetensors", source=f"rspretrain finetune --method {cfg.method}")
    # The report last: its metrics.json marks a finished run (benchmarks skip such runs on re-run).
    write_report(out, [result], meta, title=title)
    logger.info("%s", title)
    return finetune_summary(meta, result)


def init_label(init: str) -> str:
    """A short model label for a fine-tuning init: ``random-init``, a pretraining run's folder name, a file stem."""
    if init == "random":
        return "random-init"
    path = Path(init)
    return path.parent.parent.name if path.parent.name == "checkpoints" and path.parent.parent.name else path.stem


def finetune_summary(meta: dict[str, Any], result: Result) -> dict[str, Any]:
    """One flat dict of a fine-tuning run's report (scores, timings, settings, provenance): what
    :func:`run_finetune` returns and benchmarks tabulate."""
    fields = {k: v for k, v in meta.items() if k not in ("task", "provenance")}
    record = meta.get("provenance", {})
    return {**result.metrics, **result.extra, **fields, "n_train": result.n_train, "n_test": result.n_test,
            "seed": record.get("seed"), "config": record.get("config"), "provenance": record}


def read_finetune_summary(path: str | Path) -> dict[str, Any]:
    """:func:`finetune_summary` of a finished run's ``metrics.json``."""
    meta, results = read_report(path, complete=True)
    return finetune_summary(meta, results[0])


def _effective_train_ratio(cfg: FinetuneConfig) -> float | None:
    """The train fraction a run used (None for EuroSAT, whose split is fixed)."""
    if cfg.dataset == "eurosat":
        return None
    return DEFAULT_TRAIN_RATIO if cfg.train_ratio is None else cfg.train_ratio
