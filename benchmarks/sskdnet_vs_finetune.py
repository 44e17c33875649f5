"""SSKDNet vs plain fine-tuning of the same backbone, init and epochs: seeds, ablations, pretrained inits.

The grid (every cell = one ``rspretrain finetune`` run, scored on its test split):

1. main: ``finetune`` and ``sskdnet`` x ``--datasets`` (UC Merced at ``--ucmerced-ratio`` train, EuroSAT train ->
   test on stratified subsets of ``--eurosat-train-per-class`` / ``--eurosat-test-per-class``) x ``--seeds``;
2. ablations: ``sskdnet-no_kd`` (kd_weight 0), ``sskdnet-no_shuffle`` (shuffle off), ``sskdnet-no_fusion`` (no
   fusion module) x ``--ablation-datasets`` x seeds;
3. inits: ``finetune`` and ``sskdnet`` started from each ``--init NAME=CKPT_OR_SAFETENSORS`` (e.g. a MoCo or GeRSP
   pretraining checkpoint) x ``--init-datasets`` x seeds, next to the random-init rows of part 1.

Same seed = same random backbone, data order and augmentation stream start for every variant, so per-seed
differences are paired. Finished cells (their ``metrics.json`` exists) are skipped, so an interrupted grid resumes
by running the same command again. Cells run in the order above: the main comparison is complete first.

Writes ``<out>/results.json`` (every cell + the summary), ``<out>/results.png`` (mean +- std bars with the seeds as
dots) and prints a Markdown table of overall accuracy, mean +- sample std over seeds, with the paired difference to
plain fine-tuning of the same dataset and init.

Default grid: ResNet-18 at 64 px, batch 32, 7 epochs, seeds 0 1 2; UC Merced 50 % (1,050 train / 1,050 test) and
EuroSAT (60 train / 100 test images per class: 600 / 1,000); ablations on UC Merced. 21 cells, about 24 minutes on
2 CPU cores (calibrated from single-thread CPU time per step: SSKDNet costs 1.32x a plain fine-tuning step, the
no-fusion variant 1.22x); each ``--init`` adds 6 UC Merced cells, about 7 minutes.

Example (the issue's evidence)::

    python benchmarks/sskdnet_vs_finetune.py --out runs/sskdnet_vs_finetune
    python benchmarks/sskdnet_vs_finetune.py --out runs/sskdnet_vs_finetune \\
        --init moco=runs/moco/checkpoints/last.ckpt --init gersp=runs/gersp/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from rspretrain.core.json_io import write_json
from rspretrain.downstream.finetune.run import FinetuneConfig, load_finetune_splits, read_finetune_summary, run_finetune

#: variant -> (method, --model overrides)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "finetune": ("finetune", {}),
    "sskdnet": ("sskdnet", {}),
    "sskdnet-no_kd": ("sskdnet", {"kd_weight": 0.0}),
    "sskdnet-no_shuffle": ("sskdnet", {"shuffle": False}),
    "sskdnet-no_fusion": ("sskdnet", {"fusion": False}),
}
ABLATIONS = ("sskdnet-no_kd", "sskdnet-no_shuffle", "sskdnet-no_fusion")


@dataclass(frozen=True)
class Cell:
    dataset: str
    variant: str
    init_name: str
    init: str
    seed: int

    @property
    def key(self) -> str:
        return f"{self.dataset}__{self.variant}__{self.init_name}__seed{self.seed}"


@dataclass
class Grid:
    cells: list[Cell] = field(default_factory=list)

    def add(self, cell: Cell) -> None:
        if cell not in self.cells:
            self.cells.append(cell)


def build_grid(args: argparse.Namespace) -> Grid:
    grid = Grid()
    inits = dict(parse_init(text) for text in args.init)
    for dataset in _csv(args.datasets):
        for seed in args.seeds:
            for variant in ("finetune", "sskdnet"):
                grid.add(Cell(dataset, variant, "random", "random", seed))
    for dataset in _csv(args.ablation_datasets):
        for seed in args.seeds:
            for variant in _csv(args.ablations):
                grid.add(Cell(dataset, variant, "random", "random", seed))
    for name, path in inits.items():
        for dataset in _csv(args.init_datasets):
            for seed in args.seeds:
                for variant in ("finetune", "sskdnet"):
                    grid.add(Cell(dataset, variant, "random", "random", seed))  # the comparison row
                    grid.add(Cell(dataset, variant, name, path, seed))
    return grid


def parse_init(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise SystemExit(f"--init expects NAME=PATH, got {text!r}")
    if not Path(path).is_file():
        raise SystemExit(f"--init {name}: {path} not found")
    return name, path


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def split_options(dataset: str, args: argparse.Namespace) -> dict[str, Any]:
    if dataset == "ucmerced":
        return {"train_ratio": args.ucmerced_ratio, "max_train_per_class": None, "max_test_per_class": None}
    if dataset == "eurosat":
        return {"train_ratio": None, "max_train_per_class": args.eurosat_train_per_class,
                "max_test_per_class": args.eurosat_test_per_class}
    return {"train_ratio": None, "max_train_per_class": None, "max_test_per_class": None}


def run_cell(cell: Cell, args: argparse.Namespace, splits_cache: dict) -> dict[str, Any]:
    out = Path(args.out) / "cells" / cell.key
    done = out / "metrics.json"
    if done.is_file():
        return read_finetune_summary(done)
    options = split_options(cell.dataset, args)
    if cell.dataset not in splits_cache:
        splits_cache[cell.dataset] = load_finetune_splits(
            cell.dataset, args.data_root, options["train_ratio"], args.image_size,
            options["max_train_per_class"], options["max_test_per_class"],
        )  # fmt: skip
    method, model = VARIANTS[cell.variant]
    cfg = FinetuneConfig(
        method=method, dataset=cell.dataset, root=args.data_root, image_size=args.image_size, init=cell.init,
        backbone=args.backbone, epochs=args.epochs, batch_size=args.batch_size,
        seed=cell.seed, out_dir=str(out), model=dict(model), optim={"lr": args.lr} if args.lr else {},
        progress=args.progress, export=False, **options,
    )  # fmt: skip
    return run_finetune(cfg, splits=splits_cache[cell.dataset])


#: Settings every cell depends on: a re-run with other values must not mix its cells with the old ones.
CELL_SETTINGS = ("epochs", "batch_size", "lr", "image_size", "backbone", "ucmerced_ratio", "eurosat_train_per_class",
                 "eurosat_test_per_class")


def check_settings(out: Path, args: argparse.Namespace) -> None:
    path = out / "grid_settings.json"
    current = {k: getattr(args, k) for k in CELL_SETTINGS}
    if path.is_file():
        saved = json.loads(path.read_text())
        changed = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
        if changed:
            raise SystemExit(f"{out} holds cells run with other settings {changed} (old, new); use another --out")
    elif not args.dry_run:
        out.mkdir(parents=True, exist_ok=True)
        write_json(path, current)


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean +- sample std of OA per (dataset, variant, init), and the paired difference to finetune per seed."""
    groups: dict[tuple[str, str, str], dict[int, dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["variant"], r["init_name"]), {})[r["seed"]] = r
    summary = []
    for (dataset, variant, init_name), by_seed in groups.items():
        oa = [100 * by_seed[s]["overall_accuracy"] for s in sorted(by_seed)]
        mpca = [100 * by_seed[s]["mean_per_class_accuracy"] for s in sorted(by_seed)]
        base = groups.get((dataset, "finetune", init_name), {})
        paired = [100 * (by_seed[s]["overall_accuracy"] - base[s]["overall_accuracy"]) for s in sorted(by_seed)
                  if s in base]
        summary.append({
            "dataset": dataset, "variant": variant, "init": init_name, "seeds": sorted(by_seed),
            "oa_mean": statistics.fmean(oa), "oa_std": statistics.stdev(oa) if len(oa) > 1 else 0.0, "oa": oa,
            "mean_per_class_mean": statistics.fmean(mpca),
            "delta_vs_finetune_mean": statistics.fmean(paired) if paired and variant != "finetune" else None,
            "delta_vs_finetune_std": statistics.stdev(paired) if len(paired) > 1 and variant != "finetune" else None,
            "train_seconds_mean": statistics.fmean(by_seed[s]["train_seconds"] for s in by_seed),
            "n_train": by_seed[min(by_seed)]["n_train"], "n_test": by_seed[min(by_seed)]["n_test"],
        })  # fmt: skip
    return summary


def markdown(summary: list[dict[str, Any]]) -> str:
    lines = [("| dataset (train/test) | variant | init | OA % (mean ± std) | Δ vs finetune (paired) | mean per-class % "
             "| seeds | train s |"), "|---|---|---|---:|---:|---:|---:|---:|"]
    for s in summary:
        delta = "–" if s["delta_vs_finetune_mean"] is None else (
            f"{s['delta_vs_finetune_mean']:+.1f} ± {s['delta_vs_finetune_std'] or 0.0:.1f}")
        lines.append(
            f"| {s['dataset']} ({s['n_train']}/{s['n_test']}) | {s['variant']} | {s['init']} | "
            f"{s['oa_mean']:.1f} ± {s['oa_std']:.1f} | {delta} | {s['mean_per_class_mean']:.1f} | {len(s['seeds'])} | "
            f"{s['train_seconds_mean']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot(summary: list[dict[str, Any]], path: Path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    datasets = list(dict.fromkeys(s["dataset"] for s in summary))
    fig = Figure(figsize=(max(5.0, 1.1 * max(sum(s["dataset"] == d for s in summary) for d in datasets) + 2), 4.2 *
                          len(datasets)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(datasets), 1, squeeze=False)[:, 0]
    for ax, dataset in zip(axes, datasets):
        rows = [s for s in summary if s["dataset"] == dataset]
        xs = range(len(rows))
        colours = ["#7f7f7f" if r["variant"] == "finetune" else "#1f77b4" if r["variant"] == "sskdnet" else "#ff7f0e"
                   for r in rows]
        ax.bar(xs, [r["oa_mean"] for r in rows], yerr=[r["oa_std"] for r in rows], color=colours, capsize=4,
               edgecolor="#333333", linewidth=0.6, alpha=0.85)
        for x, r in zip(xs, rows):
            ax.plot([x] * len(r["oa"]), r["oa"], "k.", markersize=5)
            ax.text(x, r["oa_mean"] + r["oa_std"] + 1.0, f"{r['oa_mean']:.1f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(list(xs))
        ax.set_xticklabels([f"{r['variant']}\n{r['init']}" for r in rows], fontsize=8)
        ax.set_ylabel("overall accuracy %")
        ax.set_ylim(0, 105)
        ax.set_title(f"{dataset} (train {rows[0]['n_train']}, test {rows[0]['n_test']}); mean ± std over seeds, "
                     "dots = seeds", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=11)
    fig.savefig(path, dpi=140)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/sskdnet_vs_finetune")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=None, help="override the fine-tuning lr (default: the task's)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--datasets", default="ucmerced,eurosat")
    parser.add_argument("--ucmerced-ratio", type=float, default=0.5)
    parser.add_argument("--eurosat-train-per-class", type=int, default=60)
    parser.add_argument("--eurosat-test-per-class", type=int, default=100)
    parser.add_argument("--ablations", default=",".join(ABLATIONS))
    parser.add_argument("--ablation-datasets", default="ucmerced")
    parser.add_argument("--init", action="append", default=[], help="NAME=CKPT_OR_SAFETENSORS (repeatable)")
    parser.add_argument("--init-datasets", default="ucmerced")
    parser.add_argument("--progress", action="store_true", help="Lightning progress bar inside each cell")
    parser.add_argument("--dry-run", action="store_true", help="list the cells and exit")
    args = parser.parse_args()
    bad = [v for v in _csv(args.ablations) if v not in VARIANTS]
    if bad:
        raise SystemExit(f"unknown ablation(s) {bad}; valid: {', '.join(ABLATIONS)}")

    grid = build_grid(args)
    out = Path(args.out)
    check_settings(out, args)
    if not args.progress:  # one progress bar over cells; Lightning's per-run banners would bury it
        for name in ("lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.WARNING)
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    todo = [c for c in grid.cells if not (out / "cells" / c.key / "metrics.json").is_file()]
    print(f"{len(grid.cells)} cells, {len(grid.cells) - len(todo)} already done")
    if args.dry_run:
        for cell in grid.cells:
            print(("  done " if cell not in todo else "  todo ") + cell.key)
        return
    splits_cache: dict = {}
    rows = []
    start = time.perf_counter()
    bar = tqdm(grid.cells, desc="cells", unit="cell")
    for cell in bar:
        bar.set_postfix_str(cell.key)
        result = run_cell(cell, args, splits_cache)
        rows.append({**{k: result[k] for k in ("dataset", "seed", "overall_accuracy", "mean_per_class_accuracy",
                                               "n_train", "n_test", "train_seconds", "epochs", "steps")},
                     "variant": cell.variant, "init_name": cell.init_name, "init": cell.init,
                     "per_class_accuracy": result["per_class_accuracy"]})
    summary = summarise(rows)
    table = markdown(summary)
    settings = {k: v for k, v in vars(args).items() if k not in ("dry_run", "progress")}
    payload = {"settings": settings, "summary": summary, "cells": rows,
               "wall_seconds_this_invocation": round(time.perf_counter() - start, 1)}
    write_json(out / "results.json", payload)
    plot(summary, out / "results.png", f"SSKDNet vs fine-tuning, {args.backbone} @ {args.image_size} px, "
                                        f"{args.epochs} epochs")
    print(table)
    print(f"results: {out / 'results.json'}; plot: {out / 'results.png'}")


if __name__ == "__main__":
    main()
