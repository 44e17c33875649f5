"""``rspretrain prepare SOURCE --out DIR``: write an image source to litdata shards, once, for streamed training.

Why litdata: it is Lightning's own sharded-streaming library (the trainer here is Lightning's), and it gives, without
code of ours, what the papers' scale needs: ``optimize`` writes chunks from many processes and resumes after a kill
(``use_checkpoint``); ``StreamingDataset`` splits the chunks over ranks *and* DataLoader workers, streams them from
a local folder or object storage (``s3://``) through a bounded local cache, shuffles by chunk then by item, and its
``StreamingDataLoader`` has a ``state_dict`` that Lightning stores in the checkpoint, so a killed run resumes inside
an epoch. Measured against the alternatives on the same 5,000 JPEGs, read with 2 workers and rspretrain's decode
and crops (``benchmarks/shard_formats.py``, this 2-core CPU): litdata read the epoch at 486 images/s, WebDataset
1.0.2 at 406 and MosaicML Streaming 0.13 at 369; litdata's and MosaicML's shards are the JPEG bytes + 0.2 %,
WebDataset's tars + 27 %; WebDataset has no loader ``state_dict`` (no resume inside an epoch) and no access by index.
MosaicML has both but its own trainer ecosystem. ``benchmarks/scale.py`` measures what streaming costs.

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
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from rspretrain.core.errors import DataError
from rspretrain.data.build import RASTER_KINDS, list_image_sources
from rspretrain.data.io.decode import ZipMember
from rspretrain.data.shards.decode_crops import DEFAULT_MAX_IMAGE_PIXELS, load_rgb, open_image
from rspretrain.data.shards.manifest import ShardManifest
from rspretrain.data.shards.writing import (
    chunk_counts,
    drop_duplicates,
    first_reasons,
    identity_options,
    note_skipped,
    resume_point,
    write_records,
)

log = logging.getLogger("rspretrain")

#: Side (px) images are reduced to for the statistics sample and the decode check: enough for band means.
_CHECK_SIZE = 256


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

    if source.partition(":")[0].strip().lower() in RASTER_KINDS:
        from rspretrain.data.shards.prepare_tiles import prepare_tiles

        return prepare_tiles(source, out, root=root, split=split, workers=workers, chunk_bytes=chunk_bytes,
                             stats_max_images=stats_max_images, seed=seed, overwrite=overwrite, progress=progress,
                             **source_options)
    out = Path(out).expanduser().absolute()
    # What identifies the set (a rerun with other values is refused); skip_corrupt is not in it, so a run that
    # stopped on unreadable images can be resumed with it.
    options = identity_options(split, source_options, max_image_pixels=int(max_image_pixels))
    existing, workers = resume_point(out, source, options, overwrite, workers)
    if existing is not None and existing.complete:
        return existing
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
    fn = functools.partial(_record, max_image_pixels=int(max_image_pixels))
    unreadable = {int(key): reason for key, reason in write_records(out, fn, inputs, chunk_bytes, workers,
                                                                    progress).items()}
    if unreadable and not skip_corrupt:
        raise DataError(f"{len(unreadable)} image(s) of {source} cannot be read: {first_reasons(unreadable)}. Fix or "
                        "remove them, or rerun with --skip-corrupt (it resumes) to leave them out")
    skipped = set(unreadable)
    manifest.count, _ = chunk_counts(out)
    if manifest.count + len(skipped) > len(inputs):
        # A writer killed between saving a chunk and its checkpoint writes those images again on resume.
        manifest.count = drop_duplicates(out, workers, chunk_bytes)
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
             chunk_counts(out)[1], manifest.shard_bytes / 1e6, manifest.source_bytes / 1e6, len(skipped))
    return manifest


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


def _record(item: list, skipped_dir: str, max_image_pixels: int):
    """litdata's ``fn``: one record per readable image. An unreadable one is noted in ``skipped_dir`` and left out
    (never raised here: an exception in a litdata writer leaves the main process waiting); :func:`prepare` then
    fails naming it, or counts it with ``skip_corrupt``."""
    index, path, member, label = item
    source = Path(path) if member is None else ZipMember(Path(path), member)
    try:
        data = _checked_bytes(source, max_image_pixels)
    except DataError as exc:
        note_skipped(skipped_dir, str(index), exc)
        return None  # litdata writes nothing for None
    # The name as bytes: litdata would serialise a string that is the path of a JPEG as that JPEG's decoded pixels.
    record = {"index": int(index), "name": str(source).encode(), "image": data}
    if label is not None:
        record["label"] = int(label)
    return record


def _as_strings(source) -> tuple[str, str | None]:
    return (str(source.archive), source.member) if isinstance(source, ZipMember) else (os.fspath(source), None)


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
