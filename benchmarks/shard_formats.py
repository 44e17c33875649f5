"""Which sharded-streaming library: litdata, WebDataset and MosaicML Streaming on the same images, in one run.

``rspretrain prepare`` writes litdata chunks. This measures the choice: ``--images`` JPEGs (96-320 px, photo-like,
cycled from 512 distinct ones, as ``benchmarks/scale.py`` makes them) are written by each library's own writer from
one process (original bytes + label + index, 8 MB shards), then read back for one epoch through a PyTorch
DataLoader with 2 workers and batch 64, each sample decoded and cropped to two 64-px views exactly as rspretrain's
streamed path does (:func:`rspretrain.data.shards.decode_crops.decode_crops`), so only the storage layer differs.
Per library it records: write images/s (litdata's ``optimize`` writes from a worker process, whose start-up counts
here; in ``rspretrain prepare`` the decode check, not the writer, sets the pace), output bytes, time from building
the dataset to the first batch, epoch images/s, and what a resumable training run needs (a loader ``state_dict`` to
resume inside an epoch, access to a sample by index), tried on the installed packages rather than assumed.

Needs the two other libraries, which rspretrain does not depend on:

    pip install -c constraints.txt webdataset mosaicml-streaming
    python benchmarks/shard_formats.py [--images 5000] [--workdir DIR]

Results: ``benchmarks/results/shard_formats_cpu.json`` and ``.png`` (``--out``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.scale import _pool  # noqa: E402
from rspretrain.data.shards.decode_crops import DecodePlan, decode_crops  # noqa: E402

PLAN = DecodePlan(64, ((0.2, 1.0), (0.2, 1.0)))
BATCH, WORKERS, SHARD_MB = 64, 2, 8  # 8 MB shards: several per worker at 5,000 images


def _decode(image: bytes, index: int) -> torch.Tensor:
    crops, _ = decode_crops(image, PLAN, np.random.default_rng([0, index]), f"sample {index}")
    return torch.from_numpy(crops)


def _collate(samples: list) -> dict:
    return {"image": torch.stack([s[0] for s in samples]), "label": torch.tensor([s[1] for s in samples])}


# ----------------------------------------------------------------------------------------------------- litdata


def _litdata_record(index: int, pool: list[bytes]) -> dict:
    return {"index": index, "image": pool[index % len(pool)], "label": index % 10}


def write_litdata(folder: Path, pool: list[bytes], n: int) -> None:
    import functools

    import litdata

    litdata.optimize(fn=functools.partial(_litdata_record, pool=pool), inputs=list(range(n)), output_dir=str(folder),
                     chunk_bytes=f"{SHARD_MB}MB", num_workers=1, verbose=False, reorder_files=False)


def _litdata_loader(folder: Path):
    import litdata

    from benchmarks.shard_formats import LitdataDecoded  # importable by name: the loader may spawn its workers

    dataset = LitdataDecoded(str(folder), shuffle=True, seed=0)
    return litdata.StreamingDataLoader(dataset, batch_size=BATCH, num_workers=WORKERS, collate_fn=_collate)


try:
    import litdata as _litdata

    class LitdataDecoded(_litdata.StreamingDataset):
        def __getitem__(self, index):
            record = super().__getitem__(index)
            return _decode(bytes(record["image"]), int(record["index"])), int(record["label"])
except ImportError:  # litdata is a dependency of rspretrain
    raise


# -------------------------------------------------------------------------------------------------- WebDataset


def write_webdataset(folder: Path, pool: list[bytes], n: int) -> None:
    import webdataset as wds

    folder.mkdir(parents=True)
    with wds.ShardWriter(str(folder / "shard-%06d.tar"), maxsize=SHARD_MB * 1e6, verbose=0) as sink:
        for index in range(n):
            sink.write({"__key__": f"{index:08d}", "jpg": pool[index % len(pool)], "cls": index % 10})


def _webdataset_sample(sample: dict) -> tuple:
    return _decode(sample["jpg"], int(sample["__key__"])), int(sample["cls"])


def _webdataset_loader(folder: Path):
    import webdataset as wds

    shards = sorted(str(p) for p in folder.glob("shard-*.tar"))
    dataset = (wds.WebDataset(shards, shardshuffle=len(shards), nodesplitter=wds.split_by_node, seed=0,
                              empty_check=False)
               .shuffle(1000).map(_webdataset_sample))
    return torch.utils.data.DataLoader(dataset, batch_size=BATCH, num_workers=WORKERS, collate_fn=_collate)


# -------------------------------------------------------------------------------------------- MosaicML Streaming


def write_mosaic(folder: Path, pool: list[bytes], n: int) -> None:
    from streaming import MDSWriter

    columns = {"image": "bytes", "label": "int", "index": "int"}
    with MDSWriter(out=str(folder), columns=columns, size_limit=f"{SHARD_MB}mb") as writer:
        for index in range(n):
            writer.write({"image": pool[index % len(pool)], "label": index % 10, "index": index})


def _mosaic_loader(folder: Path):
    import streaming

    from benchmarks.shard_formats import MosaicDecoded

    streaming.base.util.clean_stale_shared_memory()
    dataset = MosaicDecoded(local=str(folder), shuffle=True, shuffle_seed=0, batch_size=BATCH)
    return streaming.StreamingDataLoader(dataset, batch_size=BATCH, num_workers=WORKERS, collate_fn=_collate)


try:
    import streaming as _streaming

    class MosaicDecoded(_streaming.StreamingDataset):
        def __getitem__(self, index):
            record = super().__getitem__(index)
            return _decode(record["image"], int(record["index"])), int(record["label"])
except ImportError:  # run without MosaicML Streaming: main() names what to install
    pass


LIBRARIES = {
    "litdata": (write_litdata, _litdata_loader),
    "webdataset": (write_webdataset, _webdataset_loader),
    "mosaicml-streaming": (write_mosaic, _mosaic_loader),
}


def features(loader) -> dict:
    """What resumable training needs, tried on the installed library's objects: a loader ``state_dict`` (resume
    inside an epoch) and reading a sample by index (repairs, inspection, error messages naming a sample)."""
    try:
        loader.dataset[0]
        random_access = True
    except Exception:  # noqa: BLE001 - an iterable-only dataset raises (NotImplementedError, TypeError, ...)
        random_access = False
    return {
        "loader_state_dict": callable(getattr(loader, "state_dict", None))
        and callable(getattr(loader, "load_state_dict", None)),
        "random_access": random_access,
    }


def measure(name: str, root: Path, pool: list[bytes], n: int) -> dict:
    import importlib.metadata as metadata

    write, reader = LIBRARIES[name]
    folder = root / name
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    write(folder, pool, n)
    write_s = time.perf_counter() - started
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    started = time.perf_counter()
    loader = reader(folder)
    iterator = iter(loader)
    count = len(next(iterator)["label"])
    first_batch_s = time.perf_counter() - started
    labels = []
    for batch in iterator:
        count += len(batch["label"])
        labels.append(batch["label"])
    epoch_s = time.perf_counter() - started
    package = {"litdata": "litdata", "webdataset": "webdataset", "mosaicml-streaming": "mosaicml-streaming"}[name]
    row = {"library": name, "version": metadata.version(package), "images": n, "read_images": count,
           "write_images_per_s": round(n / write_s, 1), "output_mb": round(size / 1e6, 2),
           "output_vs_jpeg_bytes": round(size / sum(len(pool[i % len(pool)]) for i in range(n)), 4),
           "seconds_to_first_batch": round(first_batch_s, 2), "epoch_images_per_s": round(count / epoch_s, 1),
           **features(loader)}
    print(f"{name}: {row}", flush=True)
    del loader, iterator
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5_000)
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "rspretrain-shard-formats"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "shard_formats_cpu.json"))
    args = parser.parse_args()
    from rspretrain.core.json_io import write_json

    pool = _pool(False, 512)
    root = Path(args.workdir)
    rows = [measure(name, root, pool, args.images) for name in LIBRARIES]
    write_json(Path(args.out), {"rows": rows, "cpus": os.cpu_count(), "batch_size": BATCH, "workers": WORKERS,
                                "view": "2 x 64 px random-resized crops, decoded as rspretrain's streamed path does"})
    _plot(rows, Path(args.out).with_suffix(".png"))
    shutil.rmtree(root, ignore_errors=True)
    print(f"wrote {args.out}")


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["library"] for r in rows]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    for ax, key, label in zip(axes, ("write_images_per_s", "epoch_images_per_s", "seconds_to_first_batch",
                                     "output_vs_jpeg_bytes"),
                              ("write images/s (1 process)", "epoch images/s (2 workers, decode + crops)",
                               "build to first batch (s)", "output / JPEG bytes")):
        ax.barh(names, [r[key] for r in rows], color="tab:blue")
        ax.set_xlabel(label)
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
