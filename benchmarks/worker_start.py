"""What each start method of the streamed loader's workers costs per epoch (issue 14: the fork deadlock under DDP).

litdata's ``StreamingDataLoader`` starts its workers again at every epoch. ``data.worker_start`` picks how:
``fork`` (torch's default on Linux: cheap, but unsafe from a multi-threaded process such as a DDP rank),
``forkserver`` (a clean server process forks the workers) or ``spawn`` (a fresh interpreter each; what ``auto``
uses on several ranks, as the cheaper of the two safe ones here).

On one process, for each method: real EuroSAT JPEGs prepared into shards (``rspretrain prepare``), the pretraining
datamodule's streamed loader (MoCo v2's decode-time crops, ``--workers`` workers), ``--epochs`` epochs read in full;
prints per method the first epoch's time (worker start-up included), the later epochs' median, and the ratio to
``fork``. ``--json`` writes them.

Usage:
    python benchmarks/worker_start.py [--images 400] [--workers 2] [--epochs 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rspretrain.core.json_io import write_json


def _epoch_times(shards: Path, method: str, workers: int, epochs: int, batch: int) -> list[float]:
    from rspretrain.pretrain.datamodule import PretrainDataModule

    dm = PretrainDataModule(f"shards:{shards}", batch_size=batch, num_workers=workers, worker_start=method)
    dm.setup("fit")
    dm.set_decode_crops(64, ((0.2, 1.0), (0.2, 1.0)))  # MoCo v2's two views: RandomResizedCrop(64, scale 0.2-1)
    loader = dm.train_dataloader()
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        n = sum(1 for _ in loader)
        times.append(time.perf_counter() - start)
        assert n > 0
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400, help="EuroSAT train images prepared (stratified)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    import zipfile

    from rspretrain.data.io.data_root import default_data_root
    from rspretrain.data.shards.prepare import prepare

    with tempfile.TemporaryDirectory() as tmp:
        # the first --images / 10 JPEGs of each EuroSAT class, as a class-per-folder source
        folder = Path(tmp) / "jpegs"
        with zipfile.ZipFile(default_data_root() / "eurosat_rgb" / "EuroSAT_RGB.zip") as zf:
            per_class: dict[str, int] = {}
            for name in sorted(n for n in zf.namelist() if n.endswith(".jpg")):
                cls = name.split("/")[1]
                if per_class.get(cls, 0) < max(1, args.images // 10):
                    per_class[cls] = per_class.get(cls, 0) + 1
                    (folder / cls).mkdir(parents=True, exist_ok=True)
                    (folder / cls / Path(name).name).write_bytes(zf.read(name))
        shards = Path(tmp) / "shards"
        prepare(f"folder:{folder}", shards, workers=2, progress=False)
        rows = {}
        for method in ("fork", "forkserver", "spawn"):
            times = _epoch_times(shards, method, args.workers, args.epochs, args.batch_size)
            rows[method] = {"first_epoch_s": times[0], "later_epoch_median_s": statistics.median(times[1:] or times),
                            "epochs_s": times}
            print(f"{method:>10}: first epoch {times[0]:.2f} s, later epochs (median) "
                  f"{rows[method]['later_epoch_median_s']:.2f} s", flush=True)
    for method, row in rows.items():
        row["first_epoch_vs_fork"] = row["first_epoch_s"] / rows["fork"]["first_epoch_s"]
        row["later_epoch_vs_fork"] = row["later_epoch_median_s"] / rows["fork"]["later_epoch_median_s"]
        print(f"{method:>10} / fork: first epoch {row['first_epoch_vs_fork']:.2f}x, "
              f"later epochs {row['later_epoch_vs_fork']:.2f}x")
    if args.json:
        write_json(args.json, {"images": args.images, "workers": args.workers, "epochs": args.epochs,
                               "batch_size": args.batch_size, "methods": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
