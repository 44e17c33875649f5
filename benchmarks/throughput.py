"""Throughput of the MoCo v2 training step: is the data pipeline the bottleneck?

For ResNet-18 at 64 px (EuroSAT, batch 64) and at 224 px (UC Merced decoded at 256 px, batch
32) this times, in one process and one run:

- ``full``: the whole step as training runs it: fetch a batch from the real DataLoader
  (in-memory decoded images), make the two augmented views (batched tensor ops), forward
  student and EMA teacher, InfoNCE with the queue, backward, optimiser step;
- ``premade``: the same step on views already made and held in memory (no loading, no
  augmentation);
- ``backbone``: the bare backbone forward + backward on one view batch (the compute ceiling
  of the student alone).

and prints images/s of each, ``ratio = full / premade`` and the process's peak RSS.
Targets (issue #2): ratio >= 0.9 at both sizes, full >= 115 images/s at 64 px on 2 cores.

Usage:
    python benchmarks/throughput.py [--json] [--steps 20] [--data-root ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from rspretrain.config import load_config
from rspretrain.train import build


def _time(fn, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return time.perf_counter() - start


def _time_alternating(fn_a, fn_b, steps: int, warmup: int) -> tuple[float, float]:
    """Total seconds of ``steps`` calls of each, run A, B, A, B, ... so machine-load drift hits both alike."""
    for _ in range(warmup):
        fn_a()
        fn_b()
    total_a = total_b = 0.0
    for _ in range(steps):
        t0 = time.perf_counter()
        fn_a()
        t1 = time.perf_counter()
        fn_b()
        total_a += t1 - t0
        total_b += time.perf_counter() - t1
    return total_a, total_b


def measure(dataset: str, decode_size: int | None, image_size: int, batch: int, steps: int, warmup: int,
            data_root: str | None) -> dict[str, float]:
    overrides = {
        "data.dataset": dataset,
        "data.split": "train",
        "data.image_size": decode_size,
        "data.batch_size": batch,
        "model.image_size": image_size,
    }
    if data_root:
        overrides["data.root"] = data_root
    cfg = load_config("moco_resnet18_eurosat", overrides)
    torch.manual_seed(cfg.seed)
    model, dm = build(cfg)
    model.train()
    optimizer = torch.optim.SGD(model.student.parameters(), lr=cfg.optim.lr, momentum=0.9,
                                weight_decay=cfg.optim.weight_decay)
    loader = dm.train_dataloader()
    batches = iter(loader)

    def next_batch():
        nonlocal batches
        try:
            return next(batches)
        except StopIteration:
            batches = iter(loader)
            return next(batches)

    def optimise(loss):
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def full_step():
        batch = next_batch()
        loss, _ = model.loss_from_views(model.make_views(batch), batch)
        optimise(loss)

    premade_batch = next_batch()
    premade_views = model.make_views(premade_batch)

    def premade_step():
        loss, _ = model.loss_from_views(premade_views, premade_batch)
        optimise(loss)

    def backbone_step():
        optimise(model.backbone(premade_views[0]).float().pow(2).mean())

    t_full, t_pre = _time_alternating(full_step, premade_step, steps, warmup)
    t_bb = _time(backbone_step, max(2, steps // 2), 1)
    n = batch * steps
    return {
        "full": n / t_full,
        "premade": n / t_pre,
        "backbone": batch * max(2, steps // 2) / t_bb,
        "ratio": (n / t_full) / (n / t_pre),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--steps", type=int, default=20, help="timed steps of each kind at 64 px (224 px: half)")
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args()
    r64 = measure("eurosat", None, 64, 64, args.steps, 3, args.data_root)
    r224 = measure("ucmerced", 256, 224, 32, max(4, args.steps // 2), 1, args.data_root)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "images_per_s_64": round(r64["full"], 1),
        "premade_images_per_s_64": round(r64["premade"], 1),
        "backbone_images_per_s_64": round(r64["backbone"], 1),
        "ratio_64": round(r64["ratio"], 3),
        "images_per_s_224": round(r224["full"], 1),
        "premade_images_per_s_224": round(r224["premade"], 1),
        "backbone_images_per_s_224": round(r224["backbone"], 1),
        "ratio_224": round(r224["ratio"], 3),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "torch_threads": torch.get_num_threads(),
    }
    if args.json:
        print(json.dumps(result))
        return
    print("MoCo v2 training step, ResNet-18 (images/s)")
    print(f"{'size':>6} {'batch':>5} {'full':>8} {'premade':>8} {'ratio':>6} {'backbone f+b':>13}")
    print(f"{64:>6} {64:>5} {r64['full']:>8.1f} {r64['premade']:>8.1f} {r64['ratio']:>6.3f} {r64['backbone']:>13.1f}")
    print(f"{224:>6} {32:>5} {r224['full']:>8.1f} {r224['premade']:>8.1f} {r224['ratio']:>6.3f} "
          f"{r224['backbone']:>13.1f}")
    print(f"peak RSS: {peak_rss_mb:.0f} MB; targets: ratio >= 0.9 at both sizes, full >= 115 images/s at 64 px")


if __name__ == "__main__":
    main()
