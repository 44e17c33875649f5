"""Accuracy parity of the fast default step (bf16 autocast + channels_last) against fp32, per method.

For each method (default MoCo v2, CMID, GeRSP on their EuroSAT configs) and each seed, two arms are trained for the
same number of steps from the same config, differing only in ``trainer.precision`` / ``trainer.channels_last``:

- ``fp32``: ``32-true``, channels_last off (the step before this change);
- ``fast``: what ``auto`` resolves to on this machine (``bf16-mixed`` + channels_last on a CPU with bf16 instructions).

The seed fixes the initial weights, the data order and every augmentation draw (views are made in fp32 in both
arms), so the pair differs only in the arithmetic. Each backbone is scored by kNN and linear probe on EuroSAT test and
UC Merced (training features from ``--max-train-per-class`` images per class; every test image), and per method x
dataset x protocol the paired difference ``fast - fp32`` is reported with a 95 % two-level bootstrap interval over
seeds and test images (:func:`~rspretrain.downstream.report.bootstrap.bootstrap_paired_difference`). The verdict
is ``no difference`` when the interval includes zero, ``fast better`` / ``fast worse`` when it lies wholly above /
below zero; the interval's width says how small a difference the study could have seen. The fast arm's training
images/s against fp32's is the equal-time side: at one wall-clock budget it takes that many times more steps.

Resumable: finished trainings and scores are reused (each run is a folder of :mod:`rspretrain.apps.benchmark`'s
``train_run``, with its settings fingerprint), so a killed study continues where it stopped.

Usage:
    python benchmarks/precision_parity.py --out runs/precision_parity --steps 200 --seeds 0,1,2 \\
        --json benchmarks/results/precision_parity_cpu.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from rspretrain.apps.benchmark import BenchmarkRun, train_run
from rspretrain.apps.paired_study import paired_difference, score_backbone
from rspretrain.core.json_io import write_json
from rspretrain.downstream.frozen.scene_benchmark import load_scene_splits
from rspretrain.pretrain.run import load_checkpoint
from rspretrain.training.fast_step import resolve_precision

CONFIGS = {"moco": "moco_resnet18_eurosat", "cmid": "cmid_resnet18_eurosat", "gersp": "gersp_resnet18_eurosat"}


def arms() -> dict[str, dict[str, object]]:
    """The two arms' overrides; ``fast`` is what ``auto`` resolves to here (stated, so the study names it)."""
    fast_precision, _ = resolve_precision("auto", "cpu")
    return {"fp32": {"trainer.precision": "32-true", "trainer.channels_last": False},
            "fast": {"trainer.precision": fast_precision, "trainer.channels_last": True}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/precision_parity")
    parser.add_argument("--methods", default=",".join(CONFIGS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--datasets", default="eurosat,ucmerced")
    parser.add_argument("--max-train-per-class", type=int, default=100)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--json", default=None, help="also write the results JSON here (plus .md and .png beside)")
    args = parser.parse_args()
    out = Path(args.out)
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    settings = {"trainer.max_steps": args.steps, "trainer.max_epochs": None, "trainer.ckpt_every_n_steps": 50,
                "trainer.progress_bar": False}
    if args.data_root:
        settings["data.root"] = args.data_root
    datasets = args.datasets.split(",")
    splits = {d: load_scene_splits(d, args.data_root, args.max_train_per_class) for d in datasets}
    arm_overrides = arms()
    runs: dict[tuple[str, int, str], dict] = {}
    start = time.perf_counter()
    for method in methods:
        for seed in seeds:
            for arm, overrides in arm_overrides.items():
                name = f"{method}_s{seed}_{arm}"
                run = BenchmarkRun(name, CONFIGS[method], {**overrides, "seed": seed})
                record = train_run(run, out, settings)
                scores = score_backbone(name, out / name / "checkpoints" / "last.ckpt", splits, out / name, seed)
                ckpt = load_checkpoint(out / name / "checkpoints" / "last.ckpt")
                runs[(method, seed, arm)] = {"record": record, "scores": scores,
                                             "fast_step": ckpt["rspretrain"]["provenance"].get("fast_step")}
                print(f"[{name}] {record['steps']} steps, {record['images_per_s']} images/s, " + ", ".join(
                    f"{k} {100 * np.mean(v):.1f}" for k, v in scores.items()), flush=True)
    first = out / f"{methods[0]}_s{seeds[0]}_fp32" / "checkpoints" / "last.ckpt"
    baseline = score_backbone("random-init", None, splits, out / "random_init", 0, like=first)
    baseline = {k: round(100 * float(np.mean(v)), 2) for k, v in baseline.items()}
    rows = []
    for method in methods:
        speed = {arm: [runs[(method, s, arm)]["record"]["images_per_s"] for s in seeds] for arm in arm_overrides}
        for key in runs[(method, seeds[0], "fp32")]["scores"]:
            a = [runs[(method, s, "fp32")]["scores"][key] for s in seeds]
            b = [runs[(method, s, "fast")]["scores"][key] for s in seeds]
            pair = paired_difference(a, b, better="fast better", worse="fast worse")
            dataset, protocol = key.split("/")
            rows.append({
                "method": method, "dataset": dataset, "protocol": protocol, "seeds": seeds,
                "fp32": pair["a"], "fast": pair["b"], "fp32_ci": pair["a_ci"],
                **{k: pair[k] for k in ("difference", "ci_low", "ci_high", "verdict", "n_test")},
                "images_per_s_fp32": round(float(np.mean(speed["fp32"])), 1),
                "images_per_s_fast": round(float(np.mean(speed["fast"])), 1),
                "speedup": round(float(np.mean(speed["fast"]) / np.mean(speed["fp32"])), 3),
            })
    payload = {
        "steps": args.steps, "seeds": seeds, "max_train_per_class": args.max_train_per_class, "arms": arm_overrides,
        "fast_step_resolved": runs[(methods[0], seeds[0], "fast")]["fast_step"], "rows": rows,
        "random_init": baseline,
        "runs": [{"method": m, "seed": s, "arm": a, **{k: v for k, v in r["record"].items() if k != "overrides"}}
                 for (m, s, a), r in runs.items()],
        "wall_s": round(time.perf_counter() - start, 1),
    }
    table = format_table(rows, args.steps) + "\n\nrandom-init ResNet-18, same protocols: " + ", ".join(
        f"{k} {v}" for k, v in baseline.items())
    print(table)
    if args.json:
        path = Path(args.json)
        write_json(path, payload)
        path.with_suffix(".md").write_text(table + "\n")
        plot(rows, path.with_suffix(".png"))
    write_json(out / "results.json", payload)
    return 0


def format_table(rows: list[dict], steps: int) -> str:
    lines = [f"Accuracy parity, fast step (bf16 autocast + channels_last) - fp32, {steps} steps, paired seeds "
             "(difference in points, 95 % bootstrap CI over seeds and test images)", "",
             "| method | dataset | protocol | fp32 per seed | fast per seed | fast - fp32 [95 % CI] | verdict | "
             "images/s fp32 -> fast |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['dataset']} | {r['protocol']} | {', '.join(map(str, r['fp32']))} | "
                     f"{', '.join(map(str, r['fast']))} | {r['difference']:+.2f} [{r['ci_low']:+.2f}, "
                     f"{r['ci_high']:+.2f}] | {r['verdict']} | {r['images_per_s_fp32']} -> "
                     f"{r['images_per_s_fast']} ({r['speedup']:.2f}x) |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.45 * len(rows) + 1.5),
                                      gridspec_kw={"width_ratios": [3, 1]})
    labels = [f"{r['method']} {r['dataset']} {r['protocol']}" for r in rows]
    y = np.arange(len(rows))
    diffs = np.array([r["difference"] for r in rows])
    err = np.array([[r["difference"] - r["ci_low"], r["ci_high"] - r["difference"]] for r in rows]).T
    left.errorbar(diffs, y, xerr=err, fmt="o", color="tab:blue", capsize=3)
    left.axvline(0, color="k", lw=0.8)
    left.set_yticks(y, labels)
    left.invert_yaxis()
    left.set_xlabel("accuracy, fast - fp32 (points, 95 % CI)")
    methods = list(dict.fromkeys(r["method"] for r in rows))
    speed = [next(r["speedup"] for r in rows if r["method"] == m) for m in methods]
    right.barh(methods, speed, color="tab:green")
    right.axvline(1, color="k", lw=0.8)
    right.invert_yaxis()
    right.set_xlabel("training images/s, fast / fp32")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
