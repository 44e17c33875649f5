"""What both of ``rspretrain prepare``'s writers (image files, :mod:`.prepare`; raster tiles, :mod:`.prepare_tiles`)
share: the identity of a prepared set and where an interrupted one resumes, the record of what a writer process could
not write, and the repair of litdata's at-least-once resume (records written twice)."""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from rspretrain.core.errors import DataError
from rspretrain.data.shards.manifest import MANIFEST_NAME, ShardManifest, read_manifest

log = logging.getLogger("rspretrain")

#: Folder of a prepared set where writer processes note the records they could not write.
SKIPPED_DIR = ".skipped"


def identity_options(split: str, source_options: dict[str, Any], **more: Any) -> dict[str, Any]:
    """The options that identify a prepared set in its manifest (JSON values; others as their ``str``)."""
    return {"split": split, **more, **{k: v if isinstance(v, (int, float, str, bool, type(None))) else str(v)
                                      for k, v in source_options.items()}}


def resume_point(
    out: Path, source: str, options: dict, overwrite: bool, workers: int | None
) -> tuple[ShardManifest | None, int]:
    """The manifest already in ``out`` (complete: nothing to do; incomplete: resume it) and the writer count to use.

    Raises:
        DataError: ``out`` holds something else (see :func:`_check_output`).
    """
    workers = max(1, int(workers or os.cpu_count() or 1))
    existing = _check_output(out, source, options, overwrite)
    if existing is not None and existing.complete:
        log.info("%s: already prepared from %s (%d records); nothing to do", out, source, existing.count)
    elif existing is not None and existing.writer_processes not in (0, workers):
        # litdata's checkpoints hold each writer's share of the inputs: a resume needs the same split.
        log.info("resuming with the %d writer processes of the interrupted run", existing.writer_processes)
        workers = existing.writer_processes
    return existing, workers


def _check_output(out: Path, source: str, options: dict, overwrite: bool) -> ShardManifest | None:
    """The manifest when ``out`` already holds this very set (complete, or interrupted: resume); None for a new
    one; DataError when it holds something else."""
    if not out.exists():
        return None
    if overwrite:
        shutil.rmtree(out)
        return None
    if not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    if not (out / MANIFEST_NAME).is_file():
        if any(out.iterdir()):
            raise DataError(f"{out}: not empty and not a prepared set; choose another --out or pass --overwrite")
        return None
    earlier = read_manifest(out, require_complete=False)
    if earlier.source != source or earlier.options != options:
        raise DataError(f"{out}: holds a set prepared from {earlier.source} with {earlier.options}, not {source} "
                        f"with {options}; choose another --out or pass --overwrite")
    if not earlier.complete:
        log.info("%s: resuming an interrupted preparation of %s", out, source)
    return earlier


def note_skipped(skipped_dir: str | Path, key: str, error: Exception) -> None:
    """Record, from a writer process, that the record ``key`` could not be written and why (see
    :func:`rspretrain.data.shards.prepare._record`)."""
    with open(Path(skipped_dir) / f"{os.getpid()}.tsv", "a") as handle:
        handle.write(f"{key}\t{' '.join(str(error).split())}\n")


def first_reasons(reasons: dict, limit: int = 5) -> str:
    """The first ``limit`` of ``reasons`` (key -> reason, in key order) joined for a one-line error, ``; ...`` after
    them when there are more."""
    listed = "; ".join(reason for _, reason in sorted(reasons.items())[:limit])
    return listed + ("; ..." if len(reasons) > limit else "")


def skipped_records(folder: Path) -> dict[str, str]:
    """Key -> reason of every record a writer could not write (:func:`note_skipped`)."""
    reasons = {}
    for path in folder.glob("*.tsv"):
        for line in path.read_text().splitlines():
            if line.strip():
                key, reason = line.split("\t", 1)
                reasons[key] = reason
    return reasons


def _copy_record(position: int, location: str) -> dict:
    """litdata's ``fn`` of :func:`drop_duplicates`: record ``position`` of the set at ``location``, as written."""
    global _copy_source
    import litdata

    if _copy_source is None or _copy_source.input_dir.path != location:
        _copy_source = litdata.StreamingDataset(location)
    record = _copy_source[position]
    return {key: bytes(value) if isinstance(value, memoryview) else value for key, value in record.items()}


_copy_source = None


def drop_duplicates(out: Path, workers: int, chunk_bytes: str, key_fields: tuple[str, ...] = ("index",)) -> int:
    """Rewrite ``out`` keeping the first record of each key (its ``key_fields``); returns the records kept.

    litdata's resumable ``optimize`` is at-least-once: a writer killed after saving a chunk but before recording it
    in its checkpoint writes that chunk's records again when resumed. Records carry their source key (an image's
    source index; a tile's scene and tile number), so the repeats are found by one read of the set and the set is
    written again without them (once, only after such a resume).
    """
    import litdata

    dataset = litdata.StreamingDataset(str(out))
    seen: set[tuple[int, ...]] = set()
    keep = []
    for position in range(len(dataset)):
        record = dataset[position]
        key = tuple(int(record[name]) for name in key_fields)
        if key not in seen:
            seen.add(key)
            keep.append(position)
    log.info("%s: %d records written twice by the resumed writers; rewriting the set without them", out,
             len(dataset) - len(keep))
    rewritten = out.with_name(out.name + ".deduplicated")
    shutil.rmtree(rewritten, ignore_errors=True)
    litdata.optimize(fn=functools.partial(_copy_record, location=str(out)), inputs=keep, output_dir=str(rewritten),
                     chunk_bytes=chunk_bytes, num_workers=workers, verbose=False, reorder_files=False,
                     start_method="fork")
    for old in [*out.glob("chunk-*.bin"), out / "index.json"]:
        old.unlink()
    shutil.rmtree(out / ".checkpoints", ignore_errors=True)
    for new in rewritten.iterdir():
        os.replace(new, out / new.name)
    rewritten.rmdir()
    return len(keep)


def write_records(out: Path, fn: Any, inputs: list, chunk_bytes: str, workers: int, progress: bool) -> dict[str, str]:
    """Write ``fn(item, skipped_dir=...)`` for every input into ``out`` with litdata's resumable ``optimize`` (a set
    whose chunks an earlier run wrote all of is left as it is); returns the records the writers could not write
    (key -> reason, see :func:`note_skipped`).

    ``reorder_files=False``: each writer keeps a contiguous run of the inputs (a scene's tiles stay with few writers);
    ``fork``: the writers inherit what the main process prepared instead of importing it again.
    """
    import litdata

    skipped_dir = out / SKIPPED_DIR
    skipped_dir.mkdir(exist_ok=True)
    if (out / "index.json").is_file():  # litdata writes it once every writer is done
        log.info("%s: every chunk was written by an earlier run; finishing the manifest", out)
    else:
        litdata.optimize(fn=functools.partial(fn, skipped_dir=str(skipped_dir)), inputs=inputs, output_dir=str(out),
                         chunk_bytes=chunk_bytes, num_workers=workers, use_checkpoint=True, reorder_files=False,
                         verbose=progress, start_method="fork")
    return skipped_records(skipped_dir)


def chunk_counts(out: Path) -> tuple[int, int]:
    """The records and the chunks of the set in ``out`` (litdata's ``index.json``)."""
    chunks = json.loads((out / "index.json").read_text())["chunks"]
    return sum(int(chunk["chunk_size"]) for chunk in chunks), len(chunks)
