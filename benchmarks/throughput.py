"""Throughput of each method's training step: is the data pipeline the bottleneck?

For every method config given (default: MoCo v2, GeRSP, CMID, supervised, all ResNet-18) at 64
px (EuroSAT, batch 64), and for MoCo v2 also at 224 px (UC Merced decoded at 256 px, batch 32;
``--sizes 64`` skips it), this times, in one process and one run:

- ``full``: the whole step as training runs it: fetch a batch from the real DataLoader
  (in-memory decoded images), make the two augmented views (batched tensor ops), forward
  student and EMA teacher, InfoNCE with the queue, backward, optimiser step;
- ``premade``: the same step on views already made and held in memory (no loading, no
  augmentation);
- ``backbone``: the bare backbone forward + backward on one view batch (the compute ceiling
  of the student alone).

and prints images/s of each, ``ratio = full / premade``, ``of_ceiling = full / backbone``
and the process's peak RSS. The optimiser is the method's own (SGD, Adan, ...). Work a method
does in Lightning hooks outside ``loss_from_views`` (e.g. an EMA update after the optimiser
step) is not in these timings. Targets (issue #2): ratio >= 0.9, full >= 115 images/s at 64 px
for MoCo v2 on 2 cores.

Usage:
    python benchmarks/throughput.py [--json] [--steps 20] [--methods moco,gersp] [--sizes 64,224]
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from rspretrain.core.optim import build_optimizer
from rspretrain.pretrain.config import load_config
from rspretrain.pretrain.run import build


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


def measure(config: str, dataset: str, decode_size: int | None, image_size: int, batch: int, steps: int,
            warmup: int, data_root: str | None) -> dict[str, float]:
    overrides = {
        "data.dataset": dataset,
        "data.split": "train",
        "data.image_size": decode_size,
        "data.batch_size": batch,
        "model.image_size": image_size,
    }
    if data_root:
        overrides["data.root"] = data_root
    if "cifar10" in config:  # a labeled natural source: keep it, only the sizes change
        del overrides["data.dataset"], overrides["data.image_size"]
    cfg = load_config(config, overrides)
    torch.manual_seed(cfg.seed)
    model, dm, _ = build(cfg)
    model.train()
    optimizer, _ = build_optimizer(model.student, model.optim_cfg, 1000)
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
        "of_ceiling": (n / t_full) / (batch * max(2, steps // 2) / t_bb),
    }


CONFIGS = {"moco": "moco_resnet18_eurosat", "gersp": "gersp_resnet18_eurosat", "cmid": "cmid_resnet18_eurosat",
           "supervised": "supervised_resnet18_cifar10"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--steps", type=int, default=20, help="timed steps of each kind at 64 px (224 px: half)")
    parser.add_argument("--methods", default=",".join(CONFIGS), help="comma list of " + ", ".join(CONFIGS))
    parser.add_argument("--sizes", default="64,224", help="64 (every method) and/or 224 (MoCo v2)")
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args()
    sizes = {int(s) for s in args.sizes.split(",")}
    rows = []
    for method in args.methods.split(","):
        if 64 in sizes:
            r = measure(CONFIGS[method], "eurosat", None, 64, 64, args.steps, 3, args.data_root)
            rows.append({"method": method, "size": 64, "batch": 64, **r})
    if 224 in sizes:
        r = measure(CONFIGS["moco"], "ucmerced", 256, 224, 32, max(4, args.steps // 2), 1, args.data_root)
        rows.append({"method": "moco", "size": 224, "batch": 32, **r})
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]
    if args.json:
        print(json.dumps({"rows": rows, "peak_rss_mb": round(peak_rss_mb, 1), "torch_threads": torch.get_num_threads()}))
        return
    print("Training step throughput, ResNet-18 (images/s; GeRSP: RS images, each with one natural image)")
    print(f"{'method':>10} {'size':>5} {'batch':>5} {'full':>8} {'premade':>8} {'ratio':>6} {'backbone f+b':>13} "
          f"{'of ceiling':>10}")
    for r in rows:
        print(f"{r['method']:>10} {r['size']:>5} {r['batch']:>5} {r['full']:>8.1f} {r['premade']:>8.1f} "
              f"{r['ratio']:>6.3f} {r['backbone']:>13.1f} {r['of_ceiling']:>10.3f}")
    print(f"peak RSS: {peak_rss_mb:.0f} MB; targets: ratio >= 0.9, MoCo v2 full >= 115 images/s at 64 px")


if __name__ == "__main__":
    main()
