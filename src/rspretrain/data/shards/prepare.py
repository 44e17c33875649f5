"""``rspretrain prepare SOURCE --out DIR``: write an image source to litdata shards, once, for streamed training.

Why litdata: it is Lightning's own sharded-streaming library (the trainer here is Lightning's), and it gives, without
code of ours, what the papers' scale needs: ``optimize`` writes chunks from many processes and resumes after a kill
(``use_checkpoint``); ``StreamingDataset`` splits the chunks over ranks *and* DataLoader workers, streams them from
a local folder or object storage (``s3://``) through a bounded local cache, shuffles by chunk then by item, and its
``StreamingDataLoader`` has a ``state_dict`` that Lightning stores in the checkpoint, so a killed run resumes inside
an epoch. WebDataset's tar shards would need our own resumable writer and loader state; MosaicML streaming has the
same features but a second trainer ecosystem. ``benchmarks/scale.py`` measures what this costs.

What is written, per image: its original file bytes (JPEG stays JPEG: no re-encoding loss, no size blow-up), its
source index and name (for error messages) and its label when the source has classes. Every image is opened and
decoded once here (reduced, for JPEG), so a corrupt or over-large file fails -- or, with ``skip_corrupt``, is
counted and left out -- at preparation, not hours into training. The manifest (:mod:`.manifest`) gets the classes,
band names, value scale and the per-band mean / std of a seeded sample of ``stats_max_images`` images, so training
starts without any pass over the data.

Resuming: the manifest is written first with ``complete: false``; litdata's checkpoints record the chunks each
worker finished; rerunning the same command after a kill continues from them and only then marks the set complete.
A folder that holds another source's set, or files that are not a prepared set, is refused unless ``overwrite``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from rspretrain.core.errors import DataError
from rspretrain.data.build import list_image_sources
from rspretrain.data.io.decode import ZipMember
from rspretrain.data.shards.decode_crops import DEFAULT_MAX_IMAGE_PIXELS, load_rgb, open_image
from rspretrain.data.shards.manifest import MANIFEST_NAME, ShardManifest, read_manifest

log = logging.getLogger("rspretrain")

#: Side (px) images are reduced to for the statistics sample and the decode check: enough for band means.
_CHECK_SIZE = 256
_SKIPPED_DIR = ".skipped"


def prepare(
    source: str,
    out: str | Path,
    root: str | Path | None = None,
    split: str = "all",
    workers: int | None = None,
    chunk_bytes: str = "64MB",
    skip_corrupt: bool = False,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    stats_max_images: int = 2000,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    **source_options: Any,
) -> ShardManifest:
    """Write ``source`` (a spec of :data:`rspretrain.data.build.IMAGE_FILE_FORMS`) to shards in ``out``.

    Args:
        source: ``eurosat``, ``ucmerced``, ``cifar10``, ``folder:PATH`` (class-per-folder, e.g. ImageNet's
            ``train/``; labels from the folder names) or ``unlabeled:PATH`` (a folder searched recursively, e.g.
            Million-AID; a ``.txt`` list of paths; a ``.zip``).
        out: output folder.
        root: data root of the named sets.
        split: split of a named set (``all`` by default).
        workers: writer processes (default: the CPU count).
        chunk_bytes: size of each chunk file.
        skip_corrupt: leave unreadable images out (counted, named in the manifest) instead of failing.
        max_image_pixels: largest image read (the pixel-limit policy of :mod:`.decode_crops`).
        stats_max_images: images in the band-statistics sample.
        seed: seed of that sample.
        overwrite: replace whatever ``out`` holds.
        progress: show litdata's progress bar.
        **source_options: options of the source (``max_per_class``, ``extensions``, ...).

    Returns:
        The complete manifest (also in ``out/rspretrain.json``).

    Raises:
        DataError: listing problems, a corrupt image (without ``skip_corrupt``), an ``out`` holding something else.
    """
    import litdata

    out = Path(out).expanduser().absolute()
    # What identifies the set (a rerun with other values is refused); skip_corrupt is not in it, so a run that
    # stopped on unreadable images can be resumed with it.
    options = {"split": split, "max_image_pixels": int(max_image_pixels),
               **{k: v if isinstance(v, (int, float, str, bool, type(None))) else str(v)
                  for k, v in source_options.items()}}
    workers = max(1, int(workers or os.cpu_count() or 1))
    existing = _check_output(out, source, options, overwrite)
    if existing is not None and existing.complete:
        log.info("%s: already prepared from %s (%d images); nothing to do", out, source, existing.count)
        return existing
    if existing is not None and existing.writer_processes not in (0, workers):
        # litdata's checkpoints hold each writer's share of the inputs: a resume needs the same split.
        log.info("resuming with the %d writer processes of the interrupted run", existing.writer_processes)
        workers = existing.writer_processes
    listed = list_image_sources(source, root=root, split=split, **source_options)  # after: a done set is not listed
    manifest = ShardManifest(source=source, options=options, classes=listed.classes, writer_processes=workers)
    out.mkdir(parents=True, exist_ok=True)
    manifest.write(out)
    sources = [str(s) if isinstance(s, ZipMember) else os.fspath(s) for s in listed.sources]
    _band_statistics(manifest, listed.sources, stats_max_images, seed, max_image_pixels)
    _close_reader()  # forked writers must open their own archive handles (a shared file offset corrupts reads)
    # Lists of plain strings and ints: litdata compares its inputs with those in its JSON checkpoints on resume.
    inputs = [[i, *_as_strings(s), None if listed.labels is None else listed.labels[i]]
              for i, s in enumerate(listed.sources)]
    skipped_dir = out / _SKIPPED_DIR
    skipped_dir.mkdir(exist_ok=True)
    if (out / "index.json").is_file():
        log.info("%s: every chunk was written by an earlier run; finishing the manifest", out)
    else:  # litdata writes index.json once every writer is done
        litdata.optimize(
            fn=functools.partial(_record, max_image_pixels=int(max_image_pixels), skipped_dir=str(skipped_dir)),
            inputs=inputs,
            output_dir=str(out),
            chunk_bytes=chunk_bytes,
            num_workers=workers,
            use_checkpoint=True,
            reorder_files=False,
            verbose=progress,
            start_method="fork",
        )
    unreadable = _skipped(skipped_dir)
    if unreadable and not skip_corrupt:
        first = sorted(unreadable.items())[:5]
        raise DataError(f"{len(unreadable)} image(s) of {source} cannot be read: "
                        + "; ".join(reason for _, reason in first)
                        + ("; ..." if len(unreadable) > 5 else "")
                        + ". Fix or remove them, or rerun with --skip-corrupt (it resumes) to leave them out")
    skipped = set(unreadable)
    index = json.loads((out / "index.json").read_text())
    manifest.count = sum(int(chunk["chunk_size"]) for chunk in index["chunks"])
    if manifest.count + len(skipped) > len(inputs):
        # A writer killed between saving a chunk and its checkpoint writes those images again on resume.
        manifest.count = _drop_duplicates(out, workers, chunk_bytes)
        index = json.loads((out / "index.json").read_text())
    if manifest.count + len(skipped) != len(inputs):
        raise DataError(f"{out}: holds {manifest.count} images and {len(skipped)} skipped of {len(inputs)} listed; "
                        "prepare it again with --overwrite")
    manifest.skipped = [sources[i] for i in sorted(skipped)]
    if listed.labels is not None:
        counts = Counter(label for i, label in enumerate(listed.labels) if i not in skipped)
        manifest.class_counts = {name: counts.get(c, 0) for c, name in enumerate(listed.classes or [])}
    manifest.source_bytes = _source_bytes(listed.sources)
    manifest.shard_bytes = sum(p.stat().st_size for p in out.glob("*.bin"))
    manifest.complete = True
    manifest.write(out)
    log.info("%s: %d images in %d chunks (%.1f MB from %.1f MB of source files); %d skipped", out, manifest.count,
             len(index["chunks"]), manifest.shard_bytes / 1e6, manifest.source_bytes / 1e6, len(skipped))
    return manifest


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


# ------------------------------------------------------------------------------------------------ worker processes

_reader = None  # one per writer process: opens each zip archive once


def _read_bytes(source) -> bytes:
    global _reader
    from rspretrain.data.io.decode import _CorruptImage, _Reader

    if _reader is None:
        _reader = _Reader()
    try:
        return _reader.read(source)
    except _CorruptImage as exc:
        raise DataError(str(exc)) from None


def _close_reader() -> None:
    global _reader
    if _reader is not None:
        _reader.close()
        _reader = None


def _checked_bytes(source, max_image_pixels: int) -> bytes:
    """The file's bytes, after opening and decoding it once (reduced) to prove it is a readable image."""
    data = _read_bytes(source)
    load_rgb(open_image(data, str(source), max_image_pixels), str(source), (_CHECK_SIZE, _CHECK_SIZE))
    return data


def _record(item: list, max_image_pixels: int, skipped_dir: str):
    """litdata's ``fn``: one record per readable image. An unreadable one is noted in ``skipped_dir`` and left out
    (never raised here: an exception in a litdata writer leaves the main process waiting); :func:`prepare` then
    fails naming it, or counts it with ``skip_corrupt``."""
    index, path, member, label = item
    source = Path(path) if member is None else ZipMember(Path(path), member)
    try:
        data = _checked_bytes(source, max_image_pixels)
    except DataError as exc:
        with open(Path(skipped_dir) / f"{os.getpid()}.tsv", "a") as handle:
            handle.write(f"{index}\t{' '.join(str(exc).split())}\n")
        return None  # litdata writes nothing for None
    # The name as bytes: litdata would serialise a string that is the path of a JPEG as that JPEG's decoded pixels.
    record = {"index": int(index), "name": str(source).encode(), "image": data}
    if label is not None:
        record["label"] = int(label)
    return record


def _copy_record(position: int, location: str) -> dict:
    """litdata's ``fn`` of :func:`_drop_duplicates`: record ``position`` of the set at ``location``, as written."""
    global _copy_source
    import litdata

    if _copy_source is None or _copy_source.input_dir.path != location:
        _copy_source = litdata.StreamingDataset(location)
    record = _copy_source[position]
    return {key: bytes(value) if isinstance(value, memoryview) else value for key, value in record.items()}


_copy_source = None


def _drop_duplicates(out: Path, workers: int, chunk_bytes: str) -> int:
    """Rewrite ``out`` keeping the first record of each source index; returns the records kept.

    litdata's resumable ``optimize`` is at-least-once: a writer killed after saving a chunk but before recording it
    in its checkpoint writes that chunk's images again when resumed. Records carry their source index, so the repeats
    are found by one read of the set and the set is written again without them (once, only after such a resume).
    """
    import litdata

    dataset = litdata.StreamingDataset(str(out))
    seen: set[int] = set()
    keep = []
    for position in range(len(dataset)):
        index = int(dataset[position]["index"])
        if index not in seen:
            seen.add(index)
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


def _as_strings(source) -> tuple[str, str | None]:
    return (str(source.archive), source.member) if isinstance(source, ZipMember) else (os.fspath(source), None)


def _skipped(folder: Path) -> dict[int, str]:
    """Source index -> reason of every image a writer could not read."""
    reasons = {}
    for path in folder.glob("*.tsv"):
        for line in path.read_text().splitlines():
            if line.strip():
                index, reason = line.split("\t", 1)
                reasons[int(index)] = reason
    return reasons


# --------------------------------------------------------------------------------------------------- main process


def _band_statistics(manifest: ShardManifest, sources: list, max_images: int, seed: int, max_pixels: int) -> None:
    """Per-band mean / std (in [0, 1]) and the image sizes of a seeded sample, from reduced decodes."""
    rng = np.random.default_rng(seed)
    picks = rng.permutation(len(sources))[: max(1, min(len(sources), int(max_images)))]
    total = np.zeros(3)
    total_sq = np.zeros(3)
    count = 0
    sizes = []
    for i in picks.tolist():
        try:
            image = open_image(_read_bytes(sources[i]), str(sources[i]), max_pixels)
            sizes.append(image.size)
            rgb, _, _ = load_rgb(image, str(sources[i]), (_CHECK_SIZE, _CHECK_SIZE))
        except DataError:
            continue  # the writer reports (or skips) it, with the same message
        x = np.asarray(rgb, dtype=np.float64).reshape(-1, 3) / 255.0
        total += x.sum(0)
        total_sq += np.square(x).sum(0)
        count += x.shape[0]
    if not count:
        raise DataError(f"{manifest.source}: none of {len(picks)} sampled images could be read")
    mean = total / count
    manifest.mean = mean.tolist()
    manifest.std = np.sqrt(np.maximum(total_sq / count - mean**2, 0)).clip(min=1e-6).tolist()
    manifest.stats_images = len(sizes)
    area = np.array([w * h for w, h in sizes])
    manifest.image_sizes = {"sampled": len(sizes), "smallest": list(sizes[int(area.argmin())]),
                            "largest": list(sizes[int(area.argmax())]),
                            "median_pixels": int(np.median(area))}


def _source_bytes(sources: list) -> int:
    """Bytes of the source images as stored (a zip member's compressed size)."""
    from rspretrain.data.io.decode import open_zip

    members: dict[Path, list[str]] = {}
    total = 0
    for source in sources:
        if isinstance(source, ZipMember):
            members.setdefault(source.archive, []).append(source.member)
        else:
            total += Path(source).stat().st_size
    for archive, names in members.items():
        with open_zip(archive) as handle:
            total += sum(handle.getinfo(name).compress_size for name in names)
    return total
