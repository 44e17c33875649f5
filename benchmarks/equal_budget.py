"""Pretrain several methods for the same wall-clock budget, then evaluate them side by side.

Each run is ``NAME=CONFIG[,section.key=value...]``: trained for ``--budget-minutes`` of
training time with its lr schedule fitted to that budget (``trainer.budget_minutes``), then all
backbones are scored together by kNN and linear probe on EuroSAT test and UC Merced, next to a
random-init backbone of the same architecture and the image-statistics baseline, with 95 %
bootstrap CIs. Finished runs (a final checkpoint exists) are not trained again, so an
interrupted comparison can be re-run to finish.

Writes ``<out>/results.json`` (one row per model/dataset/protocol plus each run's steps,
training seconds and images/s), ``<out>/accuracy.png`` and prints a Markdown table.

Example (issue #3's evidence):
    python benchmarks/equal_budget.py --budget-minutes 10 --out runs/gersp_vs_moco \\
        moco=moco_resnet18_eurosat gersp=gersp_resnet18_eurosat gersp_alpha0=gersp_resnet18_eurosat,model.alpha=0
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import yaml

from rspretrain.checkpoint_io import atomic_write_text
from rspretrain.config import load_config
from rspretrain.evaluation import evaluate_scene_classification, format_table
from rspretrain.evaluation.features import EncoderSpec
from rspretrain.evaluation.sources import random_init_spec
from rspretrain.train import load_checkpoint, load_method, pretrain


def parse_run(text: str) -> tuple[str, str, dict]:
    name, _, rest = text.partition("=")
    config, *pairs = rest.split(",")
    overrides = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        overrides[key] = yaml.safe_load(value)
    return name, config, overrides


def train_run(name: str, config: str, overrides: dict, out: Path, budget: float, data_root: str | None) -> dict:
    run_dir = out / name
    final = run_dir / "checkpoints" / "last.ckpt"
    info_path = run_dir / "budget.json"
    if final.is_file() and info_path.is_file():
        print(f"[{name}] already trained: {final}")
        return json.loads(info_path.read_text())
    settings = {
        **overrides,
        "trainer.out_dir": str(run_dir),
        "trainer.budget_minutes": budget,
        "trainer.max_steps": 1_000_000,
        "trainer.ckpt_every_n_steps": 200,
    }
    if data_root:
        settings["data.root"] = data_root
    cfg = load_config(config, settings)
    print(f"[{name}] training {cfg.method} ({config}) for {budget} min")
    start = time.perf_counter()
    final = pretrain(cfg)
    seconds = time.perf_counter() - start
    steps = load_checkpoint(final)["global_step"]
    with open(run_dir / "logs" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
    info = {
        "run": name, "method": cfg.method, "config": config, "overrides": overrides, "steps": steps,
        "wall_seconds_incl_setup": round(seconds, 1), "batch_size": cfg.data.batch_size,
        "rs_images_per_s": round(steps * cfg.data.batch_size / (budget * 60), 1),
        "final_loss": float(rows[-1]["train/loss"]) if rows else None,
    }
    atomic_write_text(info_path, json.dumps(info, indent=2) + "\n")
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="NAME=CONFIG[,section.key=value...]")
    parser.add_argument("--budget-minutes", type=float, default=10.0)
    parser.add_argument("--out", default="runs/equal_budget")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--datasets", default="eurosat,ucmerced")
    args = parser.parse_args()
    out = Path(args.out)
    runs = [parse_run(r) for r in args.runs]
    infos = [train_run(name, config, ov, out, args.budget_minutes, args.data_root) for name, config, ov in runs]

    specs = []
    for name, _, _ in runs:
        method = load_method(out / name / "checkpoints" / "last.ckpt")
        bb = method.backbone_to_export().eval()
        specs.append(EncoderSpec(name, bb, method.mean, method.std, method.views.image_size, method.band_names))
    first = specs[0]
    specs.append(random_init_spec(first.encoder.arch, first.encoder.in_chans, first.image_size, first.mean, first.std,
                                  first.band_names))
    results = evaluate_scene_classification(
        specs, args.datasets.split(","), protocols=("knn", "linear"), root=args.data_root, out_dir=out / "eval"
    )
    table = format_table(results)
    payload = {"budget_minutes": args.budget_minutes, "runs": infos, "results": [r.to_dict() for r in results]}
    atomic_write_text(out / "results.json", json.dumps(payload, indent=2) + "\n")
    print(table)
    for info in infos:
        print(f"{info['run']}: {info['steps']} steps, {info['rs_images_per_s']} RS images/s, final loss {info['final_loss']}")
    print(f"results: {out / 'results.json'}; plot: {out / 'eval' / 'accuracy.png'}")


if __name__ == "__main__":
    main()
