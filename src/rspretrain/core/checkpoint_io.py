"""Checkpoints that a kill can never leave truncated.

Lightning writes checkpoints through a ``CheckpointIO`` plugin. :class:`AtomicCheckpointIO`
writes to a temporary file in the target directory, flushes and fsyncs it, then renames it
over the target with ``os.replace`` (atomic on POSIX): a reader sees the old file or the new
one, never half of one. A write that fails for want of space (a full disk, a quota, a file-size limit) is one
:class:`~rspretrain.core.errors.DataError` line naming the file and the free space, and the earlier file stays.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from rspretrain.core.errors import DataError


def default_file_mode() -> int:
    """The mode ``open(..., "w")`` would give a new file under this process's umask (``0o644`` under ``022``)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb",
                 size: int | None = None) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``.

    A reader (or a process killed mid-write) sees the old file or the new one, never half of one. ``size`` (bytes,
    when the caller knows it) is what a full disk's message says the file needed; without it the message gives
    the lower bound it reached.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_file_mode())  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException as err:
        try:
            written = os.path.getsize(tmp)
        except OSError:
            written = 0
        Path(tmp).unlink(missing_ok=True)
        interrupt = next((e for e in _chain(err) if isinstance(e, (KeyboardInterrupt, SystemExit))), None)
        if interrupt is not None and interrupt is not err:
            # torch.save's zip writer closes itself after the interrupt and fails on the half-written archive
            # ("unexpected pos ..."), which would hide Ctrl-C / SIGTERM behind a RuntimeError.
            raise interrupt from None
        failed = next((e for e in _chain(err) if _write_failed(e)), None)
        if failed is not None:
            free = shutil.disk_usage(path.parent).free / 2**30
            first = str(failed).strip().splitlines()[0] if str(failed).strip() else type(failed).__name__
            kept = "the earlier file is kept" if path.exists() else "nothing was written"
            needs = (f"it needs about {size / 2**20:.1f} MB, {written / 2**20:.1f} MB were written"
                     if size is not None and size > written else
                     f"it needs more than the {written / 2**20:.1f} MB written")
            raise DataError(f"{path}: could not be written ({first}; {needs}; {free:.2f} GB free on its disk); "
                            f"{kept}") from None
        raise


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and the exceptions it was raised while handling (``__context__``), newest first."""
    seen: list[BaseException] = []
    while err is not None and all(err is not e for e in seen):
        seen.append(err)
        err = err.__context__
    return seen


def _write_failed(err: BaseException) -> bool:
    """A full disk, a quota or a file-size limit: ``OSError`` from Python's writes (torch.save into a file object
    raises it, then its zip writer's close fails with "unexpected pos", so callers look down the chain), or the zip
    writer's own ``RuntimeError`` ("... file write failed") when it writes to a path."""
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    return isinstance(err, RuntimeError) and "file write failed" in str(err)


def tensor_bytes(obj: Any) -> int:
    """The bytes of the tensors in a nested dict/list/tuple: a checkpoint's size, less its small pickled rest."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically."""
    atomic_write(path, lambda f: torch.save(obj, f), size=tensor_bytes(obj))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    atomic_write(path, lambda f: f.write(text), mode="w", size=len(text.encode()))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that saves with :func:`atomic_torch_save`."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        atomic_torch_save(checkpoint, path)
