"""Pretrained backbones vs random init on segmentation, change detection and detection, with one schedule each.

Every positional argument is ``NAME=SOURCE`` (a pretraining ``.ckpt``, an exported ``.safetensors``, ``timm:ARCH``);
a ``random-init`` backbone of the first source's architecture, bands and statistics is added automatically. Each task
(:mod:`rspretrain.downstream.dense.segmentation`, ``.change_detection``, ``.detection``) fine-tunes every backbone with the
task's default schedule (same crops, same seed, same steps for all) on the shared real data -- Dubai aerial
segmentation (Tile 6 held out), the LEVIR-CD crops (train + val vs test), the NEON tree crowns (bottom 30 % of every
image held out) -- and writes its own ``metrics.json`` + pictures under ``OUT/<task>/``. Side by side:
the one report (:func:`rspretrain.downstream.report.writer.write_report`): ``OUT/metrics.json`` (with provenance),
``OUT/results.md`` (table) and ``OUT/scores.png`` (bars with 95 % CIs).

A task whose ``metrics.json`` already holds every model with the same schedule is not run again; an interrupted task
continues every model's training from its last epoch checkpoint (rerun the same command to resume).

Example (issue #7's evidence; about 12 CPU-minutes on 2 cores for 4 backbones, see the report):
    python benchmarks/dense_tasks.py --out runs/dense_tasks \\
        moco=runs/moco/checkpoints/last.ckpt gersp=runs/gersp/checkpoints/last.ckpt cmid=runs/cmid/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

from rspretrain.core.errors import ConfigError, DataError, RSPretrainError
from rspretrain.downstream.dense.evaluate import DENSE_TASKS, default_schedule, run_dense_task
from rspretrain.downstream.report.record import Result, format_table
from rspretrain.downstream.report.writer import read_report, report_meta, write_report
from rspretrain.downstream.sources import encoder_specs, random_init_spec

log = logging.getLogger("rspretrain")


def build_specs(pairs: list[str], arch: str) -> list:
    """``random-init`` first, then one encoder per ``NAME=SOURCE`` (named NAME)."""
    specs = []
    for pair in pairs:
        name, sep, source = pair.partition("=")
        if not sep or not name or not source:
            raise ConfigError(f"{pair!r}: expected NAME=SOURCE (a .ckpt, .safetensors or timm:ARCH)")
        spec = encoder_specs(source, with_random_init=False)[0]
        spec.name = name
        specs.append(spec)
    if specs:
        first = specs[0]
        from rspretrain.downstream.dense.schedule import encoder_arch

        random = random_init_spec(encoder_arch(first.encoder) or arch, len(first.mean), first.image_size, first.mean,
                                  first.std, first.band_names, first.value_scale)
    else:
        random = encoder_specs(f"random:{arch}", with_random_init=False)[0]
    names = [s.name for s in specs]
    if "random-init" in names or len(set(names)) != len(names):
        raise ConfigError(f"model names must be unique and not 'random-init', got {names}")
    return [random, *specs]


def finished(path: Path, names: list[str], schedule: dict) -> list[Result] | None:
    """The results in ``path`` if it already holds every model under the same schedule."""
    if not path.is_file():
        return None
    try:
        meta, results = read_report(path, complete=True)
    except DataError:
        return None  # interrupted (or unreadable): run again, its models resume from their checkpoints
    if sorted(r.model for r in results) != sorted(names) or meta.get("schedule") != schedule:
        return None
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="*", metavar="NAME=SOURCE")
    parser.add_argument("--out", default="runs/dense_tasks")
    parser.add_argument("--tasks", default=",".join(DENSE_TASKS), help="comma list of segmentation, change, detection")
    parser.add_argument("--arch", default="resnet18", help="architecture of random-init when no source is given")
    parser.add_argument("--freeze-backbone", action="store_true", help="train decoders only (frozen features)")
    for task in DENSE_TASKS:
        parser.add_argument(f"--{task}-epochs", type=int, default=None, help=f"{task} epochs (default: the task's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's; use 1 when other jobs share the cores)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("rspretrain: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        bad = [t for t in tasks if t not in DENSE_TASKS]
        if bad or not tasks:
            raise ConfigError(f"unknown task(s) {bad}; valid: {', '.join(DENSE_TASKS)}")
        specs = build_specs(args.sources, args.arch)
        out = Path(args.out)
        results: list[Result] = []
        timings: dict[str, float] = {}
        for task in tasks:
            schedule = default_schedule(task, epochs=getattr(args, f"{task}_epochs"), seed=args.seed,
                                        freeze_backbone=args.freeze_backbone or None,
                                        progress=False if args.no_progress else None)
            done = finished(out / task / "metrics.json", [s.name for s in specs], schedule.to_dict())
            if done is not None:
                log.info("%s: already done in %s, not rerun", task, out / task)
                results += done
                continue
            started = time.perf_counter()
            # An interrupted task continues each model from its last epoch checkpoint (OUT/<task>/training/<model>).
            results += run_dense_task(task, specs, None, out / task, schedule, resume=True)
            timings[task] = round(time.perf_counter() - started, 1)
            log.info("%s: %d backbones in %.1f min", task, len(specs), timings[task] / 60)
        mode = "frozen backbone, decoder trained" if args.freeze_backbone else "backbone fine-tuned"
        settings = {"benchmark": "dense_tasks", "models": [s.name for s in specs], "sources": args.sources,
                    "tasks": tasks, "freeze_backbone": args.freeze_backbone}
        meta = report_meta("dense_tasks", {**settings, "seed": args.seed}, args.seed, **settings,
                           wall_seconds_per_task=timings, torch_threads=torch.get_num_threads())
        written = write_report(out, results, meta, title=f"Dense tasks: {', '.join(settings['models'])} ({mode})")
        print(format_table(results))
        print(f"results: {', '.join(str(p) for p in written.values())}; per task: "
              f"{', '.join(str(out / t) for t in tasks)}")
        return 0
    except RSPretrainError as err:
        print(f"dense_tasks: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
