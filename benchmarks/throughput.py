"""Throughput of each method's training step, per speed setting: fp32, channels_last, bf16 autocast, both, and
``torch.compile`` on top of both.

For every method config given (default: every registered method; ResNet-18, 64 px, batch 64 on EuroSAT, GeoKR on
its Zion tiles at batch 32) and every setting (default ``fp32``, ``channels_last``, ``bf16``,
``channels_last+bf16`` -- the fast default ``trainer.precision / channels_last: auto`` resolves to on a CPU with bf16
instructions), this times, in one process and one run:

- ``full``: the whole step as training runs it: fetch a batch from the real DataLoader (in-memory decoded images),
  make the augmented views (in fp32, as ``PretrainMethod.step_loss`` does under autocast), forward student and
  teacher under the setting's autocast, the loss, backward, the method's own optimiser step;
- ``premade``: the same step on views already made and held in memory (no loading, no augmentation);
- ``backbone``: the bare backbone forward + backward on one view batch under the setting (the compute ceiling);

and prints images/s of each, ``speedup`` = full / full in fp32 of the same method, ``ratio = full / premade`` (is the
data pipeline the bottleneck?) and the process's peak RSS. With ``--compile BACKEND`` (default ``inductor``; ``""``
skips it) each method is also timed with the backbones compiled on top of ``channels_last+bf16``: its compile time
(the first steps' extra wall time over steady steps, cold: dynamo reset and an empty inductor cache folder per
method) is reported separately, with the steps after which compiling
pays (``break_even_steps``; none when the compiled step is not faster). Work a method does in Lightning hooks outside
``step_loss`` (e.g. an EMA update after the optimiser step) is not in these timings.

The settings of one method are timed one after another in one process, on the same batches; machine-load drift
between them is not controlled (run on an idle machine).

Usage:
    python benchmarks/throughput.py [--json PATH] [--steps 12] [--methods moco,gersp] [--settings fp32,bf16]
        [--compile inductor]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import torch

from rspretrain.core.json_io import write_json
from rspretrain.core.optim import build_optimizer
from rspretrain.pretrain.config import load_config
from rspretrain.pretrain.run import build
from rspretrain.training.fast_step import apply_fast_step


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


#: setting -> (channels_last, bf16 autocast)
SETTINGS = {"fp32": (False, False), "channels_last": (True, False), "bf16": (False, True),
            "channels_last+bf16": (True, True)}


def measure(config: str, overrides: dict, setting: str, steps: int, warmup: int,
            compile_backend: str = "") -> dict[str, float]:
    channels_last, bf16 = SETTINGS[setting]
    cfg = load_config(config, overrides)
    torch.manual_seed(cfg.seed)
    model, dm, _ = build(cfg)
    model.train()
    apply_fast_step(model, channels_last, compile_backend)
    optimizer, _ = build_optimizer(model.optimised_module(), model.optim_cfg, 1000)
    loader = dm.train_dataloader()
    batches = iter(loader)
    batch_size = cfg.data.batch_size

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

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
        with autocast():
            loss, _ = model.step_loss(batch)
        optimise(loss)

    premade_batch = next_batch()
    premade_views = model.make_views(premade_batch)

    def premade_step():
        with autocast():
            loss, _ = model.loss_from_views(premade_views, premade_batch)
        optimise(loss)

    def backbone_step():
        with autocast():
            out = model.backbone(_first_image(premade_views))
        optimise(out.float().pow(2).mean())

    out: dict[str, float] = {}
    if compile_backend:  # the first steps compile (forward and backward); their extra time is the compile time
        # Cold, as a new run pays it: without the reset, dynamo reuses the graph an earlier method compiled for the
        # same backbone class and shapes, and inductor's on-disk cache would skip codegen (compile 0 s).
        torch._dynamo.reset()
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="rspretrain_inductor_")
        t0 = time.perf_counter()
        full_step()
        full_step()
        first_two = time.perf_counter() - t0
        warmup = max(1, warmup - 2)
    t_full, t_pre = _time_alternating(full_step, premade_step, steps, warmup)
    if compile_backend:
        out["compile_s"] = max(0.0, first_two - 2 * t_full / steps)
    t_bb = _time(backbone_step, max(2, steps // 2), 1)
    n = batch_size * steps
    out.update({
        "batch": batch_size,
        "full": n / t_full,
        "premade": n / t_pre,
        "backbone": batch_size * max(2, steps // 2) / t_bb,
        "ratio": t_pre / t_full,
    })
    return out


def _first_image(views) -> torch.Tensor:
    """The first image batch ``(B, C, H, W)`` among a method's views (a tensor, or a list / tuple / dict of them)."""
    if torch.is_tensor(views) and views.dim() == 4:
        return views
    items = views.values() if isinstance(views, dict) else views if isinstance(views, (list, tuple)) else ()
    for item in items:
        found = _first_image(item)
        if found is not None:
            return found
    return None


CONFIGS = {"moco": "moco_resnet18_eurosat", "gersp": "gersp_resnet18_eurosat", "cmid": "cmid_resnet18_eurosat",
           "byol": "byol_resnet18_eurosat", "supervised": "supervised_resnet18_cifar10",
           "geokr": "geokr_resnet18_zion"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None, help="write the results JSON here (and a .png beside it)")
    parser.add_argument("--steps", type=int, default=12, help="timed steps of each kind")
    parser.add_argument("--methods", default=",".join(CONFIGS), help="comma list of " + ", ".join(CONFIGS))
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma list of " + ", ".join(SETTINGS))
    parser.add_argument("--compile", default="inductor", help="torch.compile backend on top of channels_last+bf16 "
                        "('' to skip)")
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args()
    rows = []
    for method in args.methods.split(","):
        overrides = {"data.root": args.data_root} if args.data_root else {}
        base = None
        settings = [(s, "") for s in args.settings.split(",")]
        if args.compile:
            settings.append(("channels_last+bf16", args.compile))
        for setting, backend in settings:
            r = measure(CONFIGS[method], overrides, setting, args.steps, 3, backend)
            if setting == "fp32" and not backend:
                base = r["full"]
            name = f"{setting}+compile({backend})" if backend else setting
            row = {"method": method, "setting": name, **r, "speedup": r["full"] / base if base else None}
            if backend:
                eager = next((x for x in rows if x["method"] == method and x["setting"] == setting), None)
                if eager is not None:
                    saved = r["batch"] / eager["full"] - r["batch"] / r["full"]  # seconds saved per step
                    row["break_even_steps"] = round(r["compile_s"] / saved) if saved > 0 else None
            rows.append(row)
            print(_line(row), flush=True)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]
    payload = {"rows": rows, "peak_rss_mb": round(peak_rss_mb, 1), "torch_threads": torch.get_num_threads(),
               "steps": args.steps}
    if args.json:
        write_json(Path(args.json), payload)
        _plot(rows, Path(args.json).with_suffix(".png"))
    print(f"peak RSS: {peak_rss_mb:.0f} MB")


def _line(r: dict) -> str:
    speed = f"{r['speedup']:.2f}x" if r.get("speedup") else "-"
    extra = ""
    if "compile_s" in r:
        extra = f"  compile {r['compile_s']:.0f} s, pays after {r.get('break_even_steps') or 'never'} steps"
    return (f"{r['method']:>10} {r['setting']:>32}: full {r['full']:7.1f} images/s ({speed} of fp32), premade "
            f"{r['premade']:7.1f}, ratio {r['ratio']:.3f}, backbone f+b {r['backbone']:7.1f}{extra}")


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    methods = list(dict.fromkeys(r["method"] for r in rows))
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    width = 0.8 / len(settings)
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(methods)), 4.5))
    for i, setting in enumerate(settings):
        values = [next((r["full"] for r in rows if r["method"] == m and r["setting"] == setting), 0) for m in methods]
        ax.bar(np.arange(len(methods)) + i * width, values, width, label=setting)
    ax.set_xticks(np.arange(len(methods)) + 0.4 - width / 2, methods)
    ax.set_ylabel("training images/s (whole step)")
    ax.set_title("Training step throughput per speed setting, ResNet-18, 2 CPU cores")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
