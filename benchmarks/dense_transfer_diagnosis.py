"""Why a pretrained backbone fine-tunes below random init on Dubai segmentation (issue 18, item 4): paired variants.

Every variant trains the task twice per seed, on the pretrained backbone and on a random init of the same
architecture, with the same schedule, normalisation, crops and head initialisation (the seed), and reports the
paired difference ``pretrained - random`` in mIoU per seed and its mean with a t interval over the seeds:

- ``default``: ``rspretrain evaluate --task segmentation`` as shipped (AdamW, decoder lr 1e-3, backbone lr 1e-4);
- ``backbone_lr_1e-3``: the backbone at the decoder's lr (is 1e-4 too low for the pretrained one to adapt?);
- ``frozen``: decoder only, on frozen features (is it the representation, or the fine-tuning?);
- ``norm_eval``: the backbone fine-tuned with its BatchNorm layers in eval mode (the pretrained running statistics
  normalise every batch of 8 crops instead of the batch's own statistics);
- ``no_colour_jitter`` (with ``--no-jitter-checkpoint``): the default schedule on a backbone pretrained with the same
  recipe but no colour jitter and no grayscale (colour invariance learnt from the views, where Dubai's classes are
  told apart by colour?).

Writes ``--json`` (every run's scores and the paired differences) and prints a table.

Usage:
    python benchmarks/dense_transfer_diagnosis.py --checkpoint RUN/checkpoints/last.ckpt \\
        [--no-jitter-checkpoint RUN2/checkpoints/last.ckpt] [--seeds 0 1 2] [--epochs 2] [--json PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
from pathlib import Path

from rspretrain.apps.paired_study import t_interval
from rspretrain.core.json_io import write_json


def run_variant(checkpoint: str, seeds: list[int], epochs: int, **schedule_changes) -> list[dict]:
    from rspretrain.downstream.dense.evaluate import default_schedule, run_dense_task
    from rspretrain.downstream.sources import encoder_specs

    rows = []
    for seed in seeds:
        schedule = dataclasses.replace(default_schedule("segmentation", epochs=epochs), seed=seed, progress=False,
                                       **schedule_changes)
        specs = encoder_specs(checkpoint, with_random_init=True)
        with tempfile.TemporaryDirectory() as tmp:
            results = run_dense_task("segmentation", specs, None, Path(tmp) / "out", schedule)
        scores = {r.model: r.value("miou") for r in results}
        (pretrained,) = [m for m in scores if m != "random-init"]
        rows.append({"seed": seed, "pretrained": scores[pretrained], "random": scores["random-init"],
                     "difference": scores[pretrained] - scores["random-init"]})
        print(f"    seed {seed}: pretrained {100 * scores[pretrained]:.1f}, random {100 * scores['random-init']:.1f}"
              f" mIoU", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--no-jitter-checkpoint", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    variants = {
        "default": (args.checkpoint, {}),
        "backbone_lr_1e-3": (args.checkpoint, {"backbone_lr": 1e-3}),
        "frozen": (args.checkpoint, {"freeze_backbone": True}),
        "norm_eval": (args.checkpoint, {"norm_eval": True}),
    }
    if args.no_jitter_checkpoint:
        variants["no_colour_jitter"] = (args.no_jitter_checkpoint, {})
    out = {"task": "segmentation (Dubai)", "epochs": args.epochs, "seeds": args.seeds,
           "checkpoint": args.checkpoint, "no_jitter_checkpoint": args.no_jitter_checkpoint, "variants": {}}
    for name, (checkpoint, changes) in variants.items():
        print(f"{name}:", flush=True)
        rows = run_variant(checkpoint, args.seeds, args.epochs, **changes)
        out["variants"][name] = {"changes": changes, "runs": rows,
                                 "pretrained_minus_random": t_interval([r["difference"] for r in rows])}
    print("\n| variant | pretrained mIoU | random mIoU | pretrained - random (95 % t CI over seeds) |")
    print("|---|:---:|:---:|:---:|")
    for name, v in out["variants"].items():
        p = statistics.fmean(r["pretrained"] for r in v["runs"])
        r = statistics.fmean(r["random"] for r in v["runs"])
        d = v["pretrained_minus_random"]
        ci = f" [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}]" if d["ci95"] else ""
        print(f"| {name} | {100 * p:.1f} | {100 * r:.1f} | {100 * d['mean']:+.1f}{ci} |")
    if args.json:
        write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
