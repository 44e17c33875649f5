"""What the decoded-image cache's CRC-32 check costs on a cache hit, on EuroSAT (issue 17: cache integrity).

In one process, for the EuroSAT split given (default ``train``, 64 px, as the bundled configs read it):

- ``decode``: decoding every image without the cache (what a miss, or a corrupt entry, costs);
- ``hit``: mapping the cache entry without the check (the read is from the page cache once warm: it is taken after
  one untimed load, and each timing is the median of ``--repeats``);
- ``hit + crc32``: the same with the CRC-32 of every byte verified, as every load now does;
- ``crc32`` alone over the mapped array, and its rate in GB/s.

Prints one line per timing and the ratios ``crc32 / hit`` and ``crc32 / decode``; ``--json`` writes them.

Usage:
    python benchmarks/cache_checksum.py [--split train] [--image-size 64] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rspretrain.core.json_io import write_json
from rspretrain.data.io import cache
from rspretrain.data.io.in_memory import list_sources, load_images
from rspretrain.data.scenes.eurosat import EuroSAT


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="train")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    os.environ["RSPRETRAIN_CACHE"] = tempfile.mkdtemp(prefix="rspretrain_cache_bench_")  # an empty cache of its own
    listed = list_sources(EuroSAT, args.data_root, split=args.split, image_size=args.image_size)
    items = listed.sources
    key = cache.cache_key(items, args.image_size, False)

    start = time.perf_counter()
    load_images(items, image_size=args.image_size, cache=False)
    decode_s = time.perf_counter() - start
    load_images(items, image_size=args.image_size, cache=True)  # writes the entry; the next loads are hits

    array, _ = cache.load_cached(key)
    nbytes = array.nbytes
    hit_s = _median_time(lambda: cache.load_cached(key, verify=False), args.repeats)
    verified_s = _median_time(lambda: cache.load_cached(key, verify=True), args.repeats)
    crc_s = _median_time(lambda: cache.array_crc32(array), args.repeats)
    result = {
        "dataset": f"eurosat/{args.split}", "images": int(array.shape[0]), "image_size": args.image_size,
        "entry_mb": round(nbytes / 2**20, 1), "decode_s": round(decode_s, 2), "hit_s": round(hit_s, 4),
        "hit_verified_s": round(verified_s, 4), "crc32_s": round(crc_s, 4),
        "crc32_gb_per_s": round(nbytes / crc_s / 1e9, 2),
        "crc32_over_decode": round(crc_s / decode_s, 4),
    }
    print(f"eurosat/{args.split}: {result['images']} images at {args.image_size} px, entry {result['entry_mb']} MB")
    print(f"  decode (no cache) {decode_s:8.2f} s")
    print(f"  cache hit         {hit_s:8.4f} s (no check)")
    print(f"  cache hit + crc32 {verified_s:8.4f} s")
    print(f"  crc32 alone       {crc_s:8.4f} s ({result['crc32_gb_per_s']} GB/s), "
          f"{100 * result['crc32_over_decode']:.2f} % of a decode")
    if args.json:
        write_json(Path(args.json), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
