"""The run's loggers by name: CSV and TensorBoard by default, Weights & Biases (offline) and MLflow (local) by choice.

``trainer.loggers: [csv, tensorboard, wandb, mlflow]`` picks Lightning's own loggers (``CSVLogger``,
``TensorBoardLogger``, ``WandbLogger``, ``MLFlowLogger``), all writing under the run folder so that a run is one
folder whatever it logs to:

- ``csv``: ``<out>/logs/metrics.csv``, always on: it is the run's record (the loss plot reads it, ``--resume`` keeps
  its rows up to the checkpoint's step, see :func:`csv_logger`), so leaving it out is a config error.
- ``tensorboard``: ``<out>/logs/events.*``.
- ``wandb``: offline by default (``<out>/wandb/offline-run-*``; ``wandb sync`` uploads it later). The machines this
  toolkit is tested on have no network, and a run must never wait on one; ``trainer.logger_options: {wandb:
  {offline: false, project: ..., entity: ...}}`` logs online.
- ``mlflow``: a local store at ``<out>/mlruns`` (``mlflow ui --backend-store-uri <out>/mlruns``). MLflow 3 keeps its
  file store in maintenance mode and refuses it unless ``MLFLOW_ALLOW_FILE_STORE`` is set; the file store is the one
  local store that needs no database or server, so this module sets that variable for a ``file:`` URI (only then).
  ``trainer.logger_options: {mlflow: {tracking_uri: http://...}}`` logs to a server.

``trainer.logger_options`` holds keyword arguments per logger, checked against that Lightning logger's signature
(an unknown one is one :class:`ConfigError` line). A resumed run continues the same W&B and MLflow runs: their ids are
kept in ``<out>/logs/logger_runs.json`` when training starts (:class:`RecordLoggerRuns`).

Further loggers (Comet, Neptune, a user's own) still plug in through ``trainer.lightning.logger`` as
``{class_path, init_args}`` specs.
"""

from __future__ import annotations

import csv
import importlib.util
import inspect
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from rspretrain.core.checkpoint_io import atomic_write_text
from rspretrain.core.errors import ConfigError

__all__ = ["LOGGERS", "RecordLoggerRuns", "build_loggers", "check_loggers", "csv_logger"]

#: logger name -> (Lightning logger class, the package it needs).
LOGGERS: dict[str, tuple[type[Logger], str | None]] = {
    "csv": (CSVLogger, None),
    "tensorboard": (TensorBoardLogger, "tensorboard"),
    "wandb": (WandbLogger, "wandb"),
    "mlflow": (MLFlowLogger, "mlflow"),
}
RUNS_FILE = "logger_runs.json"


def check_loggers(names: Sequence[str], options: Mapping[str, Any]) -> list[str]:
    """Validate ``trainer.loggers`` and ``trainer.logger_options``; returns the names (order kept, duplicates gone)."""
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ConfigError(f"trainer.loggers: expected a list of {', '.join(LOGGERS)}, got {names!r}")
    unknown = [n for n in names if n not in LOGGERS]
    if unknown:
        raise ConfigError(f"trainer.loggers: {', '.join(map(repr, unknown))} is not one of {', '.join(LOGGERS)}")
    if "csv" not in names:
        raise ConfigError("trainer.loggers: csv cannot be left out (logs/metrics.csv is the run's record: the loss "
                          "plot reads it and --resume keeps its rows)")
    for name in names:
        package = LOGGERS[name][1]
        if package and importlib.util.find_spec(package) is None:
            raise ConfigError(f"trainer.loggers: {name} needs the {package} package "
                              f"(pip install 'rspretrain[loggers]')")
    if not isinstance(options, Mapping):
        raise ConfigError(f"trainer.logger_options: expected {{logger: {{argument: value}}}}, got {options!r}")
    for name, kwargs in options.items():
        if name not in names:
            raise ConfigError(f"trainer.logger_options.{name}: not a chosen logger (trainer.loggers: "
                              f"{', '.join(names)})")
        if not isinstance(kwargs, Mapping):
            raise ConfigError(f"trainer.logger_options.{name}: expected {{argument: value}}, got {kwargs!r}")
        cls = LOGGERS[name][0]
        params = inspect.signature(cls.__init__).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            bad = sorted(set(kwargs) - set(params) - {"self"})
            if bad:
                raise ConfigError(f"trainer.logger_options.{name}: unknown argument(s) {', '.join(bad)} of "
                                  f"{cls.__name__}")
    return list(dict.fromkeys(names))


def build_loggers(names: Sequence[str], options: Mapping[str, Any], out: Path,
                  resume_from: Path | None = None) -> list[Logger]:
    """The chosen loggers, writing under ``out`` (a resumed run continues its W&B and MLflow runs)."""
    runs = _recorded_runs(out) if resume_from is not None else {}
    loggers: list[Logger] = []
    for name in names:
        kwargs = dict(options.get(name) or {})
        if name == "csv":
            loggers.append(csv_logger(out, resume_from))
        elif name == "tensorboard":
            loggers.append(TensorBoardLogger(**{"save_dir": out, "name": "logs", "version": "", **kwargs}))
        elif name == "wandb":
            if "wandb" in runs:
                kwargs = {"id": runs["wandb"], **kwargs}  # Lightning's WandbLogger resumes an id ("allow")
            logger = WandbLogger(**{"save_dir": str(out), "offline": True, "project": "rspretrain", "name": out.name,
                                    **kwargs})
            if logger._wandb_init.get("anonymous", True) is None:
                # Lightning 2.6 always passes anonymous=None, which wandb >= 0.19 warns about on every run
                # ("The anonymous setting has no effect"); None is wandb's own default, so dropping it changes nothing.
                del logger._wandb_init["anonymous"]
            loggers.append(logger)
        elif name == "mlflow":
            kwargs = {"experiment_name": "rspretrain", "run_name": out.name,
                      "tracking_uri": f"file:{(out / 'mlruns').resolve()}", **kwargs}
            if "mlflow" in runs and "run_id" not in kwargs:
                kwargs["run_id"] = runs["mlflow"]
            if str(kwargs["tracking_uri"]).startswith("file:"):
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # see the module docstring
            loggers.append(MLFlowLogger(**kwargs))
    return loggers


class RecordLoggerRuns(L.Callback):
    """Keeps the W&B and MLflow run ids in ``<out>/logs/logger_runs.json`` when training starts, so that ``--resume``
    continues those runs instead of starting new ones; finishes the W&B run when training ends (Lightning's
    ``WandbLogger`` leaves it open, so its offline file would be complete only at the process's exit)."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)

    @rank_zero_only
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        runs = {name: str(lg.version) for lg in trainer.loggers
                for name, (cls, _) in LOGGERS.items() if name in ("wandb", "mlflow") and isinstance(lg, cls)}
        if runs:
            atomic_write_text(self.out / "logs" / RUNS_FILE, json.dumps(runs, indent=1))

    @rank_zero_only
    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for lg in trainer.loggers:
            if isinstance(lg, WandbLogger) and lg._experiment is not None:
                lg._experiment.finish()


def _recorded_runs(out: Path) -> dict[str, str]:
    path = out / "logs" / RUNS_FILE
    try:
        runs = json.loads(path.read_text())
    except (OSError, ValueError):  # none yet, or unreadable: new logger runs; the CSV log and checkpoint are unaffected
        return {}
    return {k: v for k, v in runs.items() if isinstance(v, str)} if isinstance(runs, dict) else {}


def csv_logger(out: Path, resume_from: Path | None) -> CSVLogger:
    """``logs/metrics.csv``; on resume it keeps the rows of the steps the checkpoint holds.

    Lightning's CSV writer deletes an existing ``metrics.csv`` when it starts; a resumed run
    would lose its history. The rows logged before the checkpoint's step are read first and
    written back (rows after it were lost with the kill and are logged again).
    """
    logger = CSVLogger(out, name="logs", version="")
    path = Path(logger.log_dir) / "metrics.csv"
    if resume_from is None or not path.is_file() or rank_zero_only.rank != 0:
        return logger
    step = int(torch.load(resume_from, map_location="cpu", weights_only=True, mmap=True)["global_step"])
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        keys, rows = list(reader.fieldnames or []), [r for r in reader if r.get("step") and int(r["step"]) < step]
    writer = logger.experiment  # this removes the old file
    with open(writer.metrics_file_path, "w", newline="") as f:
        out_csv = csv.DictWriter(f, fieldnames=keys)
        out_csv.writeheader()
        out_csv.writerows(rows)
    writer.metrics_keys = keys
    return logger
