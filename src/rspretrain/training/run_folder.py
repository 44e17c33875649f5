"""Run folders that cannot be clobbered: one writer at a time, an explicit ``--resume`` or ``--overwrite``, a resumed
run checked against the run it continues, and no temp files left from killed writes.

- :class:`RunFolderLock`: an exclusive ``fcntl.flock`` on ``<out>/.rspretrain.lock`` for the run's lifetime. The
  kernel drops it when the process ends, however it ends, so a killed run never leaves a stale lock; a second run
  into the same folder stops at once with one line naming the holder's pid.
- :func:`prepare_run_folder`: a folder that holds a run (a checkpoint, a config or a metrics log) is continued with
  ``--resume`` or replaced with ``--overwrite`` (its run files are removed first, so nothing of the old run mixes
  with the new one); anything else is refused. Temp files of killed atomic writes (``.NAME.*.tmp``,
  :func:`~rspretrain.core.checkpoint_io.atomic_write`) are removed.
- :func:`config_changes`: what a resumed run changes in the data, model, views, optimiser and global batch of the
  run its checkpoint holds; the run is refused unless told (``--allow-config-change``).

Only the first process of a run does this (rank 0): the other ranks of a DDP run start after it, into the folder it
already prepared (Lightning's launcher re-runs the command for them).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from rspretrain.core.config import flatten
from rspretrain.core.errors import ConfigError, DataError

log = logging.getLogger("rspretrain")

LOCK_NAME = ".rspretrain.lock"
#: What a run writes in its folder (removed by ``--overwrite``).
RUN_FILES = ("checkpoints", "logs", "config.yaml", "provenance.json")
#: Settings a resumed run may change without changing what it trains (workers, caches, where the data is cached).
OPERATIONAL_KEYS = frozenset({"data.num_workers", "data.shard_cache", "data.storage_options", "data.loading",
                              "data.memory_limit_gb", "data.skip_corrupt"})
#: The trainer settings that change what is trained: the global batch.
BATCH_KEYS = ("trainer.devices", "trainer.num_nodes")


def is_first_process() -> bool:
    """True in the process that owns the run folder (rank 0 of torchrun / SLURM / Lightning's launcher)."""
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"):
        value = os.environ.get(name)
        if value not in (None, "", "0"):
            return False
    return True


class RunFolderLock:
    """Hold ``<out>/.rspretrain.lock`` exclusively (a context manager; see the module docstring)."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.fd: int | None = None

    def __enter__(self) -> RunFolderLock:
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataError(f"{self.out}: another run is writing to this folder (pid {holder}); wait for it to end "
                            "or choose another trainer.out_dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def holds_run(out: Path) -> bool:
    """True when ``out`` holds (part of) a run: a checkpoint, its config or its metrics log."""
    out = Path(out)
    return any(p.exists() for p in (out / "checkpoints" / "last.ckpt", out / "config.yaml",
                                    out / "logs" / "metrics.csv"))


def prepare_run_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to start over a run unless ``resume`` or ``overwrite``; with ``overwrite`` remove the old run's files;
    always remove the temp files killed writes left. Call it holding the :class:`RunFolderLock`."""
    out = Path(out)
    if resume and overwrite:
        raise ConfigError("--resume continues the run in the folder and --overwrite replaces it: give one")
    if holds_run(out) and not resume and not overwrite:
        raise DataError(f"{out} holds a run already: continue it with --resume, or replace it with --overwrite "
                        "(or choose another trainer.out_dir)")
    if overwrite:
        for name in RUN_FILES:
            path = out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    remove_stale_temp_files(out)


def remove_stale_temp_files(out: Path) -> list[Path]:
    """Remove ``.NAME.*.tmp`` files (atomic writes that a kill interrupted) from ``out`` and its checkpoints; returns
    them. Only call it holding the folder's lock: a live writer's temp file has the same name."""
    removed = []
    for folder in (Path(out), Path(out) / "checkpoints"):
        if not folder.is_dir():
            continue
        for path in folder.glob(".*.tmp"):
            if path.is_file() and not path.is_symlink():
                size = path.stat().st_size
                path.unlink()
                removed.append(path)
                log.info("removed %s (%.1f MB) left by an interrupted write", path, size / 1e6)
    return removed


def config_changes(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``key: before -> now`` for every setting that changes what is trained: method, seed, data, model, views,
    optimiser and the global batch (devices, nodes); operational settings (workers, caches) may change."""
    a, b = flatten(before), flatten(now)
    keys = [k for k in sorted(set(a) | set(b))
            if (k.split(".")[0] in ("method", "seed", "data", "model", "optim", "views") or k in BATCH_KEYS)
            and k not in OPERATIONAL_KEYS]
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]
