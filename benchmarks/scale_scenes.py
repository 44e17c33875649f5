"""GeoKR at the papers' scale: start-up against the scenes' pixel count, in memory (windowed) and from prepared tiles.

GeoKR cuts its patches from hundreds of multi-GB scenes. Tiling a scene (nodata of every tile, land-cover alignment
and proportions) reads all of its pixels, so a run that tiles at start-up waits longer the more scenes it has; a run
over tiles prepared once (``rspretrain prepare landcover:...``) reads a manifest. This synthesises ``--scenes`` sets
of 2048 x 2048 px, 4-band uint16 GeoTIFF scenes (tiled, deflate, on a 4-column grid in UTM 12N) with one 30 m
land-cover raster of NLCD codes under all of them, and for each set, in one run:

- times ``rspretrain prepare`` (tiles per second, output size next to the scenes' size);
- pretrains GeoKR ResNet-18 (``geokr_resnet18_zion``, 64 px tiles, stride 64, batch 32) for ``--steps`` steps in a
  fresh process with 2 DataLoader workers, once reading the scenes in memory with windowed reads
  (``data.dataset landcover:...``, ``windowed: true``) and once streaming the prepared tiles (``shards:DIR``),
  recording launch-to-first-step time and the peak memory of all processes (``benchmarks/scale.py``'s ``measure``).

Target (issue 14): a run over prepared tiles starts in a time independent of the scenes' pixel count (largest set
within 1.2x of the smallest).

    python benchmarks/scale_scenes.py [--scenes 1 4 16 64] [--steps 8] [--workdir DIR]

Results: ``benchmarks/results/scale_scenes_cpu.json`` and ``.png`` (``--out``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.scale import measure  # noqa: E402

SIDE = 2048
PIXEL = 30.0
ORIGIN = (300000.0, 4200000.0)  # UTM 12N, west / north of the grid of scenes
COLUMNS = 4
NLCD_CODES = np.array([11, 21, 31, 41, 52, 71, 82, 90], dtype=np.uint8)


def synthesise(folder: Path, scenes: int, seed: int = 0) -> tuple[str, Path]:
    """``scenes`` GeoTIFF scenes and the land-cover raster under them; returns the spec and the land-cover path."""
    import rasterio
    from rasterio.transform import from_origin

    folder.mkdir(parents=True, exist_ok=True)
    rows = -(-scenes // COLUMNS)
    land_cover = folder / "land_cover.tif"
    if not land_cover.exists():
        rng = np.random.default_rng(seed)
        blocks = rng.choice(NLCD_CODES, size=(rows * SIDE // 64, COLUMNS * SIDE // 64))
        codes = blocks.repeat(64, axis=0).repeat(64, axis=1)
        with rasterio.open(land_cover, "w", driver="GTiff", width=codes.shape[1], height=codes.shape[0], count=1,
                           dtype="uint8", crs="EPSG:32612", transform=from_origin(*ORIGIN, PIXEL, PIXEL),
                           nodata=0, tiled=True, compress="deflate") as dst:
            dst.write(codes, 1)
    paths = []
    for k in range(scenes):
        path = folder / f"scene_{k:03d}.tif"
        paths.append(str(path))
        if path.exists():
            continue
        rng = np.random.default_rng([seed, k])
        # Smooth-ish DN (a coarse field plus noise) so deflate and the statistics see image-like values.
        coarse = rng.integers(6000, 20000, size=(4, SIDE // 32, SIDE // 32), dtype=np.uint16)
        values = coarse.repeat(32, axis=1).repeat(32, axis=2) + rng.integers(0, 400, (4, SIDE, SIDE), dtype=np.uint16)
        west = ORIGIN[0] + (k % COLUMNS) * SIDE * PIXEL
        north = ORIGIN[1] - (k // COLUMNS) * SIDE * PIXEL
        with rasterio.open(path, "w", driver="GTiff", width=SIDE, height=SIDE, count=4, dtype="uint16",
                           crs="EPSG:32612", transform=from_origin(west, north, PIXEL, PIXEL), nodata=65535,
                           tiled=True, compress="deflate") as dst:
            dst.write(values)
            dst.descriptions = ("b2", "b3", "b4", "b5")
    return "landcover:" + ";".join(paths), land_cover


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="prepare's processes")
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "rspretrain-scale-scenes"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "scale_scenes_cpu.json"))
    args = parser.parse_args()
    from rspretrain.core.json_io import write_json
    from rspretrain.data.shards.prepare import prepare

    workdir = Path(args.workdir)
    options = {"scheme": "nlcd", "tile": 64, "stride": 64}
    runs, prepared = [], []
    for count in args.scenes:
        spec, land_cover = synthesise(workdir / f"scenes_{count}", count)
        out = workdir / f"tiles_{count}"
        started = time.time()
        manifest = prepare(spec, out, workers=args.workers, progress=False, overwrite=True,
                           land_cover=str(land_cover), **options)
        seconds = time.time() - started
        prepared.append({"scenes": count, "pixels": count * SIDE * SIDE, "tiles": manifest.count,
                         "prepare_s": round(seconds, 2), "tiles_per_s": round(manifest.count / seconds, 1),
                         "scene_mb": round(manifest.source_bytes / 1e6, 1),
                         "shard_mb": round(manifest.shard_bytes / 1e6, 1)})
        print(f"prepare {count} scene(s): {prepared[-1]}", flush=True)
        common = {"config": "geokr_resnet18_zion", "image_size": 64, "batch_size": 32, "steps": args.steps,
                  "workers": 2}
        in_memory = {"data.dataset_options": {**options, "land_cover": str(land_cover), "windowed": True},
                     "data.loading": "memory"}
        runs.append({"scenes": count, "path": "in memory (windowed)",
                     **measure(f"in memory, {count} scene(s)", {**common, "dataset": spec, "overrides": in_memory})})
        runs.append({"scenes": count, "path": "prepared tiles",
                     **measure(f"prepared tiles, {count} scene(s)", {**common, "dataset": f"shards:{out}",
                                                                     "overrides": {"data.dataset_options": {}}})})
    first, last = min(args.scenes), max(args.scenes)

    def start(path: str, count: int) -> float:
        return next(r["seconds_to_first_step"] for r in runs if r["path"] == path and r["scenes"] == count)

    ratios = {f"time to first step, {last} / {first} scene(s), {path}": round(start(path, last) / start(path, first), 3)
              for path in ("prepared tiles", "in memory (windowed)")}
    for key, value in ratios.items():
        print(f"{key}: {value}")
    result = {"runs": runs, "prepare": prepared, "ratios": ratios, "cpus": os.cpu_count(), "scene_side_px": SIDE,
              "target": "prepared tiles: time to first step, largest / smallest set <= 1.2"}
    write_json(Path(args.out), result)
    _plot(result, Path(args.out).with_suffix(".png"))
    print(f"wrote {args.out}")


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for path_name, colour in (("in memory (windowed)", "tab:orange"), ("prepared tiles", "tab:blue")):
        rows = [r for r in result["runs"] if r["path"] == path_name]
        pixels = [r["scenes"] * result["scene_side_px"] ** 2 / 1e6 for r in rows]
        axes[0].plot(pixels, [r["seconds_to_first_step"] for r in rows], "o-", color=colour, label=path_name)
        axes[1].plot(pixels, [r["peak_memory_gb"] for r in rows], "o-", color=colour, label=path_name)
    for ax, label in zip(axes, ("launch to first step (s)", "peak memory, all processes (GB)")):
        ax.set_xlabel("scene pixels (millions, 4 bands uint16)")
        ax.set_ylabel(label)
        ax.set_xscale("log")
        ax.legend()
    axes[0].set_title("GeoKR ResNet-18, 64 px tiles, 2 DataLoader workers")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
