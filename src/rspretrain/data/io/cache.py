"""Disk cache of decoded image arrays, so a dataset is decoded once per machine rather than once per run.

A decoded array is stored as ``<cache>/decoded/<key>.npy`` next to a small ``<key>.json`` (which sources were skipped
as corrupt, the shape, a human-readable description). ``<cache>`` is ``$RSPRETRAIN_CACHE`` or
``~/.cache/rspretrain``. The key hashes everything that determines the array's content: each source file's absolute
path, size and modification time, the member list (for archives) or file list, ``image_size``, ``skip_corrupt``, the
Pillow version (its JPEG decoder may change pixels) and a format version. Changing any of them misses the cache; no
stale array can be returned for a changed file.

Both files are written to a temporary name and renamed with :func:`os.replace` (atomic on POSIX), JSON first and the
``.npy`` last, so a crash or a concurrent writer never leaves a half-written entry that looks complete. The cache is
an optimisation only: an unreadable entry is reported with a warning and the images are decoded again, and a cache
folder that cannot be written to only costs the re-decoding next time.

Bit-rot is caught: ``<key>.json`` holds a CRC-32 of the array's bytes, computed while writing and verified on every
load (an entry whose bytes changed is reported and decoded again, never used). CRC-32 rather than a cryptographic
hash: the threat is a flipped bit or a truncated copy, not an adversary, and it is the cheapest check in the standard
library (``benchmarks/cache_checksum.py`` measures what it adds to a cache hit on EuroSAT). Only the in-memory fast
path (small sets, chosen by size) uses this cache, so hashing the whole entry at each start stays short.

One decode per machine, one copy in memory: an entry is read as a read-only memory map, so every process of a machine
(the ranks of a node, their DataLoader workers, concurrent runs) shares the page cache's single copy of it instead of
each holding its own; and :func:`entry_lock` (an advisory ``flock`` on ``<key>.lock``) makes the first process that
misses decode and write the entry while the others wait for it and then map it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Sequence

import numpy as np
import PIL

from rspretrain.core.errors import DataError
from rspretrain.data.io.decode import ImageSource, ZipMember

logger = logging.getLogger("rspretrain")

#: Bump when the decoding or the stored layout changes, to invalidate every existing entry (2: a CRC-32 in the JSON).
CACHE_FORMAT_VERSION = 2

#: Bytes hashed per call when checksumming an entry (bounded memory over a memory map).
_CHUNK = 64 << 20


def array_crc32(array: np.ndarray) -> int:
    """CRC-32 of a C-contiguous array's bytes, read in bounded chunks (a memory map is never copied whole)."""
    flat = array.reshape(-1).view(np.uint8)
    crc = 0
    for start in range(0, flat.size, _CHUNK):
        crc = zlib.crc32(flat[start:start + _CHUNK], crc)
    return crc


def cache_dir() -> Path:
    """Root of rspretrain's caches: ``$RSPRETRAIN_CACHE`` if set, else ``~/.cache/rspretrain``."""
    return Path(os.environ.get("RSPRETRAIN_CACHE") or "~/.cache/rspretrain").expanduser()


def cache_key(sources: Sequence[ImageSource], image_size: int | None, skip_corrupt: bool) -> str:
    """Hash identifying the decoded array of ``sources`` (see the module docstring for what it covers).

    Raises:
        DataError: a source file or archive does not exist.
    """
    files: dict[str, list[int]] = {}
    names: list[str] = []
    for source in sources:
        path = source.archive if isinstance(source, ZipMember) else source
        absolute = os.path.abspath(path)
        if absolute not in files:
            try:
                stat = os.stat(absolute)
            except FileNotFoundError:
                raise DataError(f"{path}: no such file") from None
            except OSError as exc:  # a link loop, a permission, an I/O error: one line naming the file
                raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
            files[absolute] = [stat.st_size, stat.st_mtime_ns]
        names.append(f"{absolute}:{source.member}" if isinstance(source, ZipMember) else absolute)
    payload = {
        "version": CACHE_FORMAT_VERSION,
        "pillow": PIL.__version__,
        "files": sorted(files.items()),
        "sources": names,
        "image_size": image_size,
        "skip_corrupt": bool(skip_corrupt),
    }
    return hashlib.sha256(json.dumps(payload, separators=(",", ":")).encode()).hexdigest()[:40]


def _paths(key: str) -> tuple[Path, Path]:
    folder = cache_dir() / "decoded"
    return folder / f"{key}.npy", folder / f"{key}.json"


def load_cached(key: str, verify: bool = True) -> tuple[np.ndarray, list[int]] | None:
    """Return ``(array, skipped_source_indices)`` for ``key``, or None if there is no usable entry.

    The array is a read-only memory map of the ``.npy`` (shared by every process that maps it; never copied). With
    ``verify`` its CRC-32 must match the one stored when it was written (a mismatch is a warning naming the file,
    and None, so the images are decoded again and the entry rewritten).
    """
    array_path, meta_path = _paths(key)
    if not array_path.is_file() or not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        mapped = np.load(array_path, mmap_mode="r")
        if mapped.dtype != np.uint8 or list(mapped.shape) != meta["shape"]:
            raise ValueError(f"holds {mapped.dtype} {list(mapped.shape)}, metadata says uint8 {meta['shape']}")
        if verify and array_crc32(mapped) != int(meta["crc32"]):
            raise ValueError("its bytes changed since it was written (CRC-32 mismatch: bit rot or a damaged copy)")
        return mapped, [int(i) for i in meta["skipped"]]
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
        logger.warning("ignoring unreadable cache entry %s (%s); decoding the images again", array_path, exc)
        return None


@contextlib.contextmanager
def entry_lock(key: str) -> Iterator[None]:
    """Hold the machine-wide lock of entry ``key`` (see the module docstring); a cache folder that cannot be written
    to gives no lock (each process then decodes for itself, as without a cache)."""
    path = cache_dir() / "decoded" / f"{key}.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def save_cached(key: str, array: np.ndarray, skipped: Sequence[int], description: str) -> Path | None:
    """Store ``array`` under ``key`` atomically; returns the ``.npy`` path, or None if the cache is not writable."""
    array_path, meta_path = _paths(key)
    tag = f"{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    tmp_array = array_path.with_name(f".{key}.{tag}.npy")
    tmp_meta = meta_path.with_name(f".{key}.{tag}.json")
    array = np.ascontiguousarray(array)
    meta = {"shape": list(array.shape), "skipped": [int(i) for i in skipped], "description": description,
            "crc32": array_crc32(array)}
    try:
        array_path.parent.mkdir(parents=True, exist_ok=True)
        tmp_meta.write_text(json.dumps(meta))
        os.replace(tmp_meta, meta_path)
        with open(tmp_array, "wb") as handle:  # a handle, so np.save does not append another ".npy"
            np.save(handle, array)
        os.replace(tmp_array, array_path)
        return array_path
    except OSError as exc:
        logger.warning("could not write the decoded-image cache %s (%s); continuing without it", array_path, exc)
        for tmp in (tmp_array, tmp_meta):
            tmp.unlink(missing_ok=True)
        return None
