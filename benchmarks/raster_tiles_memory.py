"""Memory and speed of tiling a multispectral scene (GeoKR's and any GeoTIFF pretraining input).

Writes a synthetic 13-band uint16 GeoTIFF (Sentinel-2 L1C's band count and dtype; values are
random, which does not change memory or copy speed) of ``--size`` x ``--size`` px, then, for
each mode, in a fresh process: reads it with :func:`rspretrain.data.io.rasters.read_raster`
(``memory``: the whole scene; ``windowed``: ``windowed=True``, pixels read per tile, with
``GDAL_CACHEMAX=128``), builds
:class:`~rspretrain.data.io.rasters.RasterTiles` (64 px tiles) and reads every tile once in
batches of 64 through ``__getitems__``, as the DataLoader does. It prints, per mode, measured in
that one run:

- ``scene_mb``: the scene's size in its dtype;
- ``peak_mb``: the process's peak RSS growth over the import baseline, while reading and tiling;
- ``peak_over_scene``: their ratio (1.0 would be the scene held once and nothing else);
- ``tiles_per_s``: tiles served per second (single process);

and ``windowed_over_memory`` for peak memory and for speed.

Usage:
    python benchmarks/raster_tiles_memory.py [--size 4096] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
import numpy as np


def vm_hwm_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024


def vm_rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024


from rspretrain.data.io.rasters import RasterTiles, read_raster

base = vm_rss_mb()
raster = read_raster(sys.argv[1], windowed=sys.argv[2] == "windowed")
tiles = RasterTiles(raster, tile=64)
start = time.perf_counter()
for first in range(0, len(tiles), 64):
    batch = tiles.__getitems__(range(first, min(first + 64, len(tiles))))
seconds = time.perf_counter() - start
print(json.dumps({
    "scene_mb": int(np.prod(raster.shape)) * raster.dtype.itemsize / 2**20, "peak_mb": vm_hwm_mb() - base,
    "tiles": len(tiles), "tiles_per_s": len(tiles) / seconds,
}))
"""


def write_scene(path: Path, size: int, bands: int = 13) -> None:
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(0)
    profile = {
        "driver": "GTiff", "height": size, "width": size, "count": bands, "dtype": "uint16",
        "crs": "EPSG:32633", "transform": from_origin(500000, 4500000, 10, 10), "tiled": True,
    }
    with rasterio.open(path, "w", **profile) as dst:
        for band in range(1, bands + 1):
            dst.write(rng.integers(0, 10000, (size, size), dtype=np.uint16), band)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="scene height and width in px")
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scene = Path(tmp) / "scene.tif"
        started = time.perf_counter()
        write_scene(scene, args.size)
        written = time.perf_counter() - started
        result: dict = {"size": args.size}
        for mode in ("memory", "windowed"):
            # Windowed reads share GDAL's block cache; its bound (default 5 % of RAM) is what a user sets to cap
            # memory, so the windowed child runs with GDAL_CACHEMAX=128 (MB).
            env = {**os.environ, **({"GDAL_CACHEMAX": "128"} if mode == "windowed" else {})}
            out = subprocess.run([sys.executable, "-c", CHILD, str(scene), mode], capture_output=True, text=True,
                                 check=True, env=env)
            result[mode] = json.loads(out.stdout.strip().splitlines()[-1])
            result[mode]["peak_over_scene"] = result[mode]["peak_mb"] / result[mode]["scene_mb"]
    result["windowed_over_memory"] = {
        "peak_mb": result["windowed"]["peak_mb"] / result["memory"]["peak_mb"],
        "tiles_per_s": result["windowed"]["tiles_per_s"] / result["memory"]["tiles_per_s"],
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"scene {args.size}x{args.size} px x 13 bands uint16 (written in {written:.0f} s)")
    for mode in ("memory", "windowed"):
        r = result[mode]
        print(f"{mode:9s} scene_mb {r['scene_mb']:.0f}  peak_mb {r['peak_mb']:.0f}  "
              f"peak_over_scene {r['peak_over_scene']:.2f}  tiles {r['tiles']}  tiles_per_s {r['tiles_per_s']:.0f}")
    ratio = result["windowed_over_memory"]
    print(f"windowed / memory: peak {ratio['peak_mb']:.2f}x, speed {ratio['tiles_per_s']:.2f}x")


if __name__ == "__main__":
    main()
