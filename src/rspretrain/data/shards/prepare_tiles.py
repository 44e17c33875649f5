"""``rspretrain prepare geotiff:... | landcover:...``: georeferenced scenes cut into tiles once, written to shards.

GeoKR pretrains on patches cut from hundreds of multi-GB scenes (1.43 M Gaofen patches in the paper, METHODS.md §3).
Tiling a scene -- finding every tile's nodata, GeoKR's per-scene 1-99 % stretch and patch filters, the land-cover
alignment and class proportions -- reads every pixel of it; in memory (``landcover:`` in a config) that happens at
every start, on every rank. Here it happens once, in two resumable phases:

1. **Tiling**, one scene per process (``workers`` at a time): the scene is tiled exactly as
   :func:`rspretrain.data.build_dataset` tiles it (:meth:`~rspretrain.data.build.RasterScenes.build`, the same code,
   with windowed reads so no scene is held whole) and the result -- tile windows, footprints, stretch limits,
   labels; no pixels -- is kept in ``out/.scenes/<k>.pkl`` (written atomically; a rerun after a kill tiles only the
   scenes that have none). The per-band mean / std are then measured as the in-memory path measures them
   (:func:`~rspretrain.data.band_statistics.band_statistics`, ``stats_max_images`` tiles, ``seed``), so a streamed
   run normalises exactly as the in-memory run of the same scenes.
2. **Writing**, one record per tile, with litdata's resumable ``optimize`` over ``(scene, tile)`` inputs (so the
   writers split the tiles, not the scenes, and a resume continues from its checkpoints): ``image`` in
   :attr:`~rspretrain.data.RasterTiles.stored_dtype` (uint16 Landsat DN stay uint16; GeoKR's stretched patches are
   uint8), lossless (``image.astype(float32)`` is the in-memory tile bit for bit), ``bounds`` and ``window`` in its
   scene's CRS and grid, and for land-cover tiles ``label`` (float32 class proportions) and ``land_cover_fraction``.

The manifest (``kind: "tiles"``) lists every scene with its files, CRS, tile count and dropped tiles per reason.
Streamed by :class:`~rspretrain.data.shards.shard_tiles.ShardTiles`; a run over it starts in a time independent of
the scenes' pixel count (``benchmarks/scale.py``, GeoKR section).
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import rasterio.errors

from rspretrain.core.errors import DataError
from rspretrain.data.band_statistics import band_statistics
from rspretrain.data.build import RasterScenes, list_raster_scenes
from rspretrain.data.io.rasters import is_virtual
from rspretrain.data.pretrain.scene_collection import SceneCollection
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

_SCENES_DIR = ".scenes"


def prepare_tiles(
    source: str,
    out: str | Path,
    root: str | Path | None = None,
    split: str = "all",
    workers: int | None = None,
    chunk_bytes: str = "64MB",
    stats_max_images: int = 2000,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    **source_options: Any,
) -> ShardManifest:
    """Tile the scenes of ``source`` (a ``geotiff:`` or ``landcover:`` spec with its options, as in a config's
    ``data.dataset_options``) and write the tiles to shards in ``out`` (see the module docstring).

    Raises:
        DataError: a scene cannot be tiled (named), scenes that do not fit together (bands, value scale, classes),
            a tile that cannot be read, an ``out`` holding something else.
        ConfigError: unknown or contradictory options.
    """

    out = Path(out).expanduser().absolute()
    scenes = list_raster_scenes(source, root=root, split=split, **source_options)
    options = identity_options(split, source_options)
    existing, workers = resume_point(out, source, options, overwrite, workers)
    if existing is not None and existing.complete:
        return existing
    manifest = ShardManifest(source=source, options=options, kind="tiles",
                             writer_processes=workers, encoding="raw arrays (C, tile, tile), lossless in dtype")
    out.mkdir(parents=True, exist_ok=True)
    manifest.write(out)
    scene_dir = out / _SCENES_DIR
    scene_dir.mkdir(exist_ok=True)
    tiled = _tile_scenes(scenes, scene_dir, workers)
    collection = tiled[0] if len(tiled) == 1 else SceneCollection(tiled)  # checks bands, value scale, classes
    first = _raster_tiles(tiled[0])
    manifest.band_names = list(collection.band_names)
    manifest.value_scale = float(collection.value_scale)
    manifest.dtype = str(first.stored_dtype)
    manifest.tile = int(first.tile)
    manifest.target_kind = getattr(collection, "target_kind", None)
    manifest.classes = list(collection.classes) if manifest.target_kind else None
    manifest.scenes = [_scene_entry(scene) for scene in tiled]
    manifest.mean, manifest.std = band_statistics(collection, stats_max_images, seed)
    manifest.stats_images = min(len(collection), int(stats_max_images))
    expected = sum(len(scene) for scene in tiled)
    del tiled, collection  # the writers open the scenes themselves

    inputs = [[s, t] for s, entry in enumerate(manifest.scenes) for t in range(entry["tiles"])]
    unreadable = write_records(out, functools.partial(_tile_record, scene_dir=str(scene_dir)), inputs, chunk_bytes,
                               workers, progress)
    if unreadable:
        raise DataError(f"{len(unreadable)} tile(s) of {source} cannot be read: {first_reasons(unreadable)}")
    manifest.count, _ = chunk_counts(out)
    if manifest.count > expected:  # a resumed writer wrote some tiles twice (see drop_duplicates)
        manifest.count = drop_duplicates(out, workers, chunk_bytes, key_fields=("scene", "tile"))
    if manifest.count != expected:
        raise DataError(f"{out}: holds {manifest.count} tiles of {expected}; prepare it again with --overwrite")
    # Scene files on object storage are not sized here (a HEAD each); the manifest counts the local ones.
    manifest.source_bytes = sum(os.path.getsize(f) for files in scenes.scenes for f in files if not is_virtual(f))
    manifest.shard_bytes = sum(p.stat().st_size for p in out.glob("*.bin"))
    manifest.complete = True
    manifest.write(out)
    log.info("%s: %d tiles of %d scene(s) in %d chunks (%.1f MB; scene files %.1f MB)", out, manifest.count,
             len(manifest.scenes), chunk_counts(out)[1], manifest.shard_bytes / 1e6, manifest.source_bytes / 1e6)
    return manifest


def _raster_tiles(scene):
    """The :class:`~rspretrain.data.RasterTiles` of a scene (a land-cover scene wraps one)."""
    return getattr(scene, "tiles", scene)


def _scene_entry(scene) -> dict[str, Any]:
    tiles = _raster_tiles(scene)
    crs = tiles.raster.crs.to_string() if tiles.raster.crs is not None else ""
    dropped = {"image_nodata": int(tiles.dropped), **{f"patch_filter_{k}": v for k, v in tiles.filtered.items()}}
    entry = {"files": [str(p) for p in tiles.raster.paths], "crs": crs, "tiles": len(scene), "dropped": dropped}
    if hasattr(scene, "dropped_outside"):
        entry["dropped"].update(outside_land_cover=int(scene.dropped_outside),
                                no_land_cover=int(scene.dropped_no_land_cover))
    return entry


# ---------------------------------------------------------------------------------------------- phase 1: tiling


def _scene_file(scene_dir: Path, index: int) -> Path:
    return scene_dir / f"{index}.pkl"


def _tile_scene(index: int, scenes: RasterScenes, scene_dir: str) -> tuple[int, str | None]:
    """Tile scene ``index`` (windowed reads) and keep the result (no pixels) in ``scene_dir``; the error instead."""
    try:
        tiles = scenes.build(index, windowed=True)
    except DataError as exc:
        return index, " ".join(str(exc).split())
    path = _scene_file(Path(scene_dir), index)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    with open(temporary, "wb") as handle:
        pickle.dump(tiles, handle, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(temporary, path)  # atomic: a kill leaves no half-written scene
    return index, None


def _tile_scenes(scenes: RasterScenes, scene_dir: Path, workers: int) -> list:
    """Every scene's tiling, computed in ``workers`` processes for the scenes an earlier run did not finish."""
    pending = [k for k in range(len(scenes)) if not _scene_file(scene_dir, k).is_file()]
    if len(pending) < len(scenes):
        log.info("%d of %d scenes were tiled by an earlier run", len(scenes) - len(pending), len(scenes))
    task = functools.partial(_tile_scene, scenes=scenes, scene_dir=str(scene_dir))
    errors: dict[int, str] = {}
    if len(pending) <= 1 or workers == 1:
        results = map(task, pending)
    else:
        pool = multiprocessing.get_context("fork").Pool(min(workers, len(pending)))
        results = pool.imap_unordered(task, pending)
    for done, (index, error) in enumerate(results, start=1):
        if error is not None:
            errors[index] = error
        log.info("tiled scene %d/%d: %s%s", done, len(pending), ",".join(map(str, scenes.scenes[index])),
                 f" (failed: {error})" if error else "")
    if len(pending) > 1 and workers > 1:
        pool.close()
        pool.join()
    if errors:
        listed = "; ".join(errors[k] for k in sorted(errors)[:5])
        raise DataError(f"{len(errors)} of {len(scenes)} scene(s) of {scenes.spec} cannot be tiled: {listed}")
    return [_load_scene(scene_dir, k) for k in range(len(scenes))]


def _load_scene(scene_dir: Path, index: int):
    with open(_scene_file(scene_dir, index), "rb") as handle:
        return pickle.load(handle)


# --------------------------------------------------------------------------------------------- phase 2: writing

_open = {"path": None}  # the scene a writer process reads now, with its per-tile arrays


def _scene_arrays(scene_dir: str, index: int) -> dict[str, Any]:
    path = str(_scene_file(Path(scene_dir), index))
    if _open["path"] != path:
        scene = _load_scene(Path(scene_dir), index)
        _open.clear()
        _open.update(path=path, scene=scene, tiles=_raster_tiles(scene), bounds=scene.bounds)
        if hasattr(scene, "tile_index"):  # land-cover tiles: the labelled subset of the tiling
            _open.update(tile_index=scene.tile_index, label=scene.targets.numpy(),
                         fraction=scene.land_cover_fraction.numpy())
    return _open


def _tile_record(item: list, skipped_dir: str, scene_dir: str) -> dict[str, Any] | None:
    """litdata's ``fn``: tile ``item = [scene, tile]`` as a record (errors noted, never raised; see
    :func:`rspretrain.data.shards.prepare._record`)."""
    scene, tile = (int(v) for v in item)
    try:
        arrays = _scene_arrays(scene_dir, scene)
        position = int(arrays["tile_index"][tile]) if "tile_index" in arrays else tile
        tiles = arrays["tiles"]
        image = tiles.stored_tiles([position])[0]
    except (DataError, OSError, rasterio.errors.RasterioError) as exc:
        note_skipped(skipped_dir, f"{scene}:{tile}", DataError(f"scene {scene} tile {tile}: {exc}"))
        return None
    record: dict[str, Any] = {
        "scene": scene, "tile": tile, "image": np.ascontiguousarray(image),
        "bounds": arrays["bounds"][tile].astype(np.float64), "window": tiles.windows[position].astype(np.int64),
    }
    if "label" in arrays:
        record["label"] = arrays["label"][tile].astype(np.float32)
        record["land_cover_fraction"] = float(arrays["fraction"][tile])
    return record
