"""Pretraining data at the papers' scale: memory, start-up and throughput of streamed shards against N, in one run.

Synthesises prepared (sharded) sets -- N small JPEGs for each ``--sizes`` (10k, 100k, 1M by default) and
``--large`` 4000 x 4000 JPEGs -- and pretrains MoCo v2 ResNet-18 on each for ``--steps`` steps in a fresh process
with ``--workers`` DataLoader workers, next to:

- the same steps on pre-made tensors (a batch of the streamed shape, made once, no loader: the ceiling), at 64 px
  and at 224 px;
- the in-memory fast path on EuroSAT (decoded once, memory-mapped from the shared cache).

Per run it prints and writes: the peak memory of all its processes together (the sum of their PSS, sampled every
0.1 s, so pages shared between the main process and the workers count once), the time from launch to the first
training step, and images per second over the steps after the third. It also times ``rspretrain prepare`` on
folders of small and of 4000-px JPEGs (images per second per writer process, output size next to source size).

Targets (issue 14): peak memory and time to first step flat in N (1M within 1.2x of 10k); the streamed step at least
0.9 of the pre-made one at 224 px and 0.8 at 64 px, on 2 cores.

    python benchmarks/scale.py [--sizes 10000 100000 1000000] [--large 200] [--steps 20] [--workers N] [--workdir DIR]

Results: ``benchmarks/results/scale_cpu.json`` and ``scale_cpu.png`` (``--out``).
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------- synthetic sets


def _jpeg(width: int, height: int, seed: int, quality: int = 90) -> bytes:
    """A smooth random photo-like JPEG (blurred noise), whose size per pixel is like an aerial photo's."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (max(2, height // 8), max(2, width // 8), 3)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _pool(large: bool, count: int) -> list[bytes]:
    rng = np.random.default_rng(1)
    if large:
        return [_jpeg(4000, 4000, seed) for seed in range(count)]
    return [_jpeg(int(rng.integers(96, 320)), int(rng.integers(96, 320)), seed) for seed in range(count)]


def _synthetic_record(index: int, pool: list[bytes]) -> dict:
    return {"index": index, "name": f"synthetic/{index:07d}.jpg".encode(), "image": pool[index % len(pool)],
            "label": index % 10}


def synthesise(folder: Path, n: int, large: bool = False) -> Path:
    """A prepared set of ``n`` JPEG records (cycling a pool of distinct images), unless ``folder`` holds it."""
    import litdata

    from rspretrain.data.shards.manifest import ShardManifest, read_manifest

    try:
        if read_manifest(folder).count == n:
            return folder
    except Exception:  # noqa: BLE001 - absent or half-written: write it again
        pass
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    pool = _pool(large, 8 if large else 512)
    started = time.perf_counter()
    litdata.optimize(fn=functools.partial(_synthetic_record, pool=pool), inputs=list(range(n)), output_dir=str(folder),
                     chunk_bytes="64MB", num_workers=2, verbose=False, reorder_files=False)
    ShardManifest(source=f"synthetic:{n}{' 4000px' if large else ''}", options={}, complete=True, count=n,
                  classes=[str(c) for c in range(10)], mean=[0.5] * 3, std=[0.25] * 3,
                  shard_bytes=sum(p.stat().st_size for p in folder.glob("*.bin"))).write(folder)
    print(f"synthesised {n} {'4000-px ' if large else ''}JPEG records in {time.perf_counter() - started:.0f} s: "
          f"{folder}", flush=True)
    return folder


def prepare_throughput(workdir: Path, small: int, large: int) -> list[dict]:
    """``rspretrain prepare`` on real folders: images / s per writer process and bytes out vs in."""
    from PIL import Image  # noqa: F401 - fail early without Pillow

    from rspretrain.data.shards.prepare import prepare

    rows = []
    for kind, n, large_images in (("small JPEGs (96-320 px)", small, False), ("4000 x 4000 JPEGs", large, True)):
        source = workdir / f"prepare_src_{n}_{'large' if large_images else 'small'}"
        if not source.exists():
            pool = _pool(large_images, 8 if large_images else 256)
            for i in range(n):
                path = source / f"class_{i % 10}" / f"{i:06d}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(pool[i % len(pool)])
        out = workdir / f"prepared_{source.name}"
        workers = 2
        started = time.perf_counter()
        manifest = prepare(f"folder:{source}", out, workers=workers, overwrite=True, progress=False)
        seconds = time.perf_counter() - started
        rows.append({"source": kind, "images": manifest.count, "workers": workers, "seconds": round(seconds, 2),
                     "images_per_s_per_worker": round(manifest.count / seconds / workers, 1),
                     "source_mb": round(manifest.source_bytes / 1e6, 1),
                     "shards_mb": round(manifest.shard_bytes / 1e6, 1)})
        print(f"prepare {kind}: {rows[-1]}", flush=True)
    return rows


# ------------------------------------------------------------------------------------------------------ one run


class PremadeTensors(L.LightningDataModule):
    """A datamodule whose loader repeats one batch made in advance (the streamed batch's shape): no data path."""

    def __init__(self, image_size: int, batch_size: int, views: int = 2) -> None:
        super().__init__()
        self.image_size, self.batch_size, self.views = image_size, batch_size, views

    def setup(self, stage=None):
        g = torch.Generator().manual_seed(0)
        shape = (self.batch_size, self.views, 3, self.image_size, self.image_size)
        self.batch = {"image": torch.randint(0, 256, shape, dtype=torch.uint8, generator=g),
                      "crop_boxes": torch.zeros(self.batch_size, self.views, 4)}

    def model_kwargs(self):
        return {"in_chans": 3, "band_names": ("red", "green", "blue"), "mean": [0.5] * 3, "std": [0.25] * 3,
                "value_scale": 255.0}

    def train_dataloader(self):
        return torch.utils.data.DataLoader(_Repeat(self.batch), batch_size=None)


class _Repeat(torch.utils.data.Dataset):
    def __init__(self, batch):
        self.batch = batch

    def __len__(self):
        return 100_000

    def __getitem__(self, index):
        return self.batch


def child(spec: dict) -> None:
    """One training run (in its own process): writes the first-step time and each step's duration to stdout."""
    import lightning as L

    from rspretrain.pretrain.config import load_config
    from rspretrain.pretrain.run import pretrain

    class Clock(L.Callback):
        def __init__(self):
            self.first, self.ends = None, []

        def on_train_batch_start(self, trainer, module, batch, index):
            if self.first is None:
                self.first = time.time()

        def on_train_batch_end(self, trainer, module, outputs, batch, index):
            self.ends.append(time.time())

    clock = Clock()
    overrides = {
        "data.batch_size": spec["batch_size"], "data.num_workers": spec["workers"],
        "model.image_size": spec["image_size"],
        "trainer.max_steps": spec["steps"], "trainer.ckpt_every_n_steps": 10**6, "trainer.log_every_n_steps": 10**6,
        "trainer.progress_bar": False, "trainer.out_dir": spec["out"], "data.dataset": spec["dataset"],
        **spec.get("overrides", {}),
    }
    pretrain(load_config(spec.get("config", "moco_resnet18_eurosat"), overrides), callbacks=[clock])
    print("CLOCK " + json.dumps({"first": clock.first, "ends": clock.ends}), flush=True)


def _tree(pid: int) -> list[int]:
    pids, frontier = [pid], [pid]
    while frontier:
        nxt = []
        for p in frontier:
            for task in Path(f"/proc/{p}/task").glob("*"):
                try:
                    nxt += [int(c) for c in (task / "children").read_text().split()]
                except OSError:
                    pass
        pids += nxt
        frontier = nxt
    return pids


def _pss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measure(name: str, spec: dict) -> dict:
    """Run :func:`child` and sample the process tree's memory until it ends."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = {**spec, "out": str(Path(tmp) / "run")}
        launched = time.time()
        proc = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(spec)], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        peak = 0
        while proc.poll() is None:
            peak = max(peak, sum(_pss_bytes(p) for p in _tree(proc.pid)))
            time.sleep(0.1)
        out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{err[-3000:]}")
    clock = json.loads(next(line for line in out.splitlines() if line.startswith("CLOCK "))[6:])
    durations = np.diff([clock["first"], *clock["ends"]])
    steady = durations[3:] if len(durations) > 5 else durations
    row = {"run": name, "image_size": spec["image_size"], "batch_size": spec["batch_size"], "steps": spec["steps"],
           "peak_memory_gb": round(peak / 1e9, 3), "seconds_to_first_step": round(clock["first"] - launched, 2),
           "median_step_s": round(float(np.median(steady)), 4),
           "images_per_s": round(spec["batch_size"] / float(np.median(steady)), 1)}
    print(f"{name}: {row}", flush=True)
    return row


def _measure_with(name: str, spec: dict, workers: int) -> dict:
    return {**measure(name, {**spec, "workers": workers}), "workers": workers}


def default_workers() -> int:
    """0 (decode in the training process) when the step trains on the CPU: the step's threads already use every core,
    so a worker process only takes CPU from it. On 2 cores, 10,000 small JPEGs, 30 steps (``--sizes 10000 --large 64
    --prepare 200 2 --steps 30``), streamed / pre-made step: 0.833 at 64 px and 0.971 at 224 px with ``--workers 0``,
    0.722 and 0.832 with ``--workers 1`` (``benchmarks/results/scale_cpu_10k_workers.json``). With a GPU the step
    leaves the CPU free: the cores but one decode."""
    return max(1, (os.cpu_count() or 2) - 1) if torch.cuda.is_available() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--large", type=int, default=200, help="4000 x 4000 JPEG records")
    parser.add_argument("--steps", type=int, default=20, help="steps per 64-px run (224 px: half)")
    parser.add_argument("--prepare", type=int, nargs=2, default=[2000, 16], metavar=("SMALL", "LARGE"),
                        help="images in the prepare-throughput folders")
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "rspretrain-scale"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "scale_cpu.json"))
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="DataLoader workers of every run (default: 0 when the step trains on the CPU, else the "
                             "cores but one)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    from rspretrain.core.json_io import write_json

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    sets = {n: synthesise(workdir / f"synthetic_{n}", n) for n in args.sizes}
    large = synthesise(workdir / f"synthetic_large_{args.large}", args.large, large=True)
    prepare_rows = prepare_throughput(workdir, *args.prepare)

    premade = "benchmarks.scale.PremadeTensors"
    measure = functools.partial(_measure_with, workers=args.workers)
    runs = []
    for n, folder in sets.items():
        runs.append(measure(f"streamed {n:,}", {"dataset": f"shards:{folder}", "image_size": 64, "batch_size": 64,
                                                "steps": args.steps}))
    runs.append(measure(f"streamed {args.large} x 4000 px", {"dataset": f"shards:{large}", "image_size": 64,
                                                             "batch_size": 64, "steps": args.steps}))
    runs.append(measure("pre-made tensors", {"dataset": "eurosat", "image_size": 64, "batch_size": 64,
                                             "steps": args.steps, "overrides": {
                                                 "datamodule": {"class_path": premade, "init_args": {
                                                     "image_size": 64, "batch_size": 64}}}}))
    runs.append(measure("in-memory EuroSAT", {"dataset": "eurosat", "image_size": 64, "batch_size": 64,
                                              "steps": args.steps, "overrides": {"data.loading": "memory"}}))
    smallest = sets[min(sets)]
    steps_224 = max(6, args.steps // 2)
    runs.append(measure(f"streamed {min(sets):,} @224", {"dataset": f"shards:{smallest}", "image_size": 224,
                                                          "batch_size": 32, "steps": steps_224}))
    runs.append(measure("pre-made tensors @224", {"dataset": "eurosat", "image_size": 224, "batch_size": 32,
                                                  "steps": steps_224, "overrides": {
                                                      "datamodule": {"class_path": premade, "init_args": {
                                                          "image_size": 224, "batch_size": 32}}}}))
    by = {r["run"]: r for r in runs}
    small_n, big_n = min(sets), max(sets)
    ratios = {
        f"peak memory {big_n:,} / {small_n:,}": by[f"streamed {big_n:,}"]["peak_memory_gb"]
        / by[f"streamed {small_n:,}"]["peak_memory_gb"],
        f"time to first step {big_n:,} / {small_n:,}": by[f"streamed {big_n:,}"]["seconds_to_first_step"]
        / by[f"streamed {small_n:,}"]["seconds_to_first_step"],
        "streamed / pre-made step, 64 px": by[f"streamed {small_n:,}"]["images_per_s"]
        / by["pre-made tensors"]["images_per_s"],
        "streamed / pre-made step, 224 px": by[f"streamed {small_n:,} @224"]["images_per_s"]
        / by["pre-made tensors @224"]["images_per_s"],
    }
    ratios = {k: round(v, 3) for k, v in ratios.items()}
    for key, value in ratios.items():
        print(f"{key}: {value}")
    result = {"runs": runs, "ratios": ratios, "prepare": prepare_rows, "cpus": os.cpu_count(), "workers": args.workers,
              "targets": {"memory and first step, 1M / 10k": "<= 1.2", "streamed / pre-made at 224 px": ">= 0.9",
                          "streamed / pre-made at 64 px": ">= 0.8"}}
    write_json(Path(args.out), result)
    _plot(result, Path(args.out).with_suffix(".png"))
    print(f"wrote {args.out}")


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    names = [r["run"] for r in runs]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for ax, key, label in zip(axes, ("peak_memory_gb", "seconds_to_first_step", "images_per_s"),
                              ("peak memory, all processes (GB)", "launch to first step (s)", "images / s")):
        ax.barh(names, [r[key] for r in runs], color="tab:blue")
        ax.set_xlabel(label)
        ax.invert_yaxis()
    axes[0].set_title(f"MoCo v2 ResNet-18, {result['workers']} DataLoader worker(s), {result['cpus']} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
