"""The quickstart before and after the fast default step: steps reached in its wall-clock budget, and kNN / linear.

Runs the README's main job, ``rspretrain quickstart``, twice in its own processes, one after the other, with the same
budget and seed: once with ``--fp32`` (``trainer.precision 32-true``, channels_last off: the step before the change)
and once as shipped (``auto``: bf16 autocast + channels_last on a CPU with bf16 instructions). Both fit their lr
schedule to the steps that fit in the budget, so the comparison is at equal time: what the faster step buys a user
of the default command. One seed; the per-seed accuracy parity at equal *steps* is
``benchmarks/precision_parity.py``'s job.

Writes a JSON with, per arm, the steps reached, the precision / channels_last the run resolved (from its checkpoint's
provenance), the command's wall time and every score of its evaluation (``metrics.json``), plus ``.md`` beside it.

Usage:
    python benchmarks/quickstart_fast_step.py --out runs/quickstart_fast_step \\
        --json benchmarks/results/quickstart_fast_step_cpu.json [--minutes 4]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from rspretrain.core.json_io import write_json
from rspretrain.downstream.report.writer import read_report
from rspretrain.pretrain.run import load_checkpoint

ARMS = {"fp32": ["--fp32"], "fast": []}


def run_arm(name: str, flags: list[str], out: Path, minutes: float, data_root: str | None) -> dict:
    arm_out = out / name
    cmd = ["rspretrain", "quickstart", "--out", str(arm_out), "--minutes", str(minutes), "--overwrite", *flags]
    if data_root:
        cmd += ["--data-root", data_root]
    print("$ " + " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - start
    ckpt = load_checkpoint(arm_out / "checkpoints" / "last.ckpt")
    _, results = read_report(arm_out / "eval" / "metrics.json", complete=True)
    scores = {f"{r.model}|{r.dataset}/{r.task}": {"accuracy": round(100 * r.metrics["accuracy"], 2),
                                                   "ci": [round(100 * v, 2) for v in r.metrics["accuracy_ci"]]}
              for r in results}
    return {"arm": name, "flags": flags, "steps": int(ckpt["global_step"]), "wall_s": round(wall, 1),
            "fast_step": ckpt["rspretrain"]["provenance"].get("fast_step"), "scores": scores}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/quickstart_fast_step")
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--json", default=None, help="also write the results JSON here (and .md beside it)")
    args = parser.parse_args()
    out = Path(args.out)
    arms = [run_arm(name, flags, out, args.minutes, args.data_root) for name, flags in ARMS.items()]
    table = format_table(arms, args.minutes)
    print(table)
    payload = {"minutes": args.minutes, "arms": arms}
    write_json(out / "results.json", payload)
    if args.json:
        write_json(Path(args.json), payload)
        Path(args.json).with_suffix(".md").write_text(table + "\n")
    return 0


def format_table(arms: list[dict], minutes: float) -> str:
    keys = [k for k in arms[0]["scores"] if "random" not in k and "statistics" not in k]
    head = "| arm | step | steps in budget | " + " | ".join(k.split("|")[1] for k in keys) + " |"
    lines = [f"rspretrain quickstart, {minutes:g}-minute wall-clock budget, seed 0 (top-1 %, [95 % CI])", "", head,
             "|" + "---|" * (3 + len(keys))]
    for a in arms:
        step = a["fast_step"] or {}
        label = f"{step.get('precision', '?')}, channels_last {'on' if step.get('channels_last') else 'off'}"
        cells = [f"{a['scores'][k]['accuracy']} [{a['scores'][k]['ci'][0]}, {a['scores'][k]['ci'][1]}]" for k in keys]
        lines.append(f"| {a['arm']} | {label} | {a['steps']} | " + " | ".join(cells) + " |")
    baseline = [k for k in arms[0]["scores"] if "random" in k]
    if baseline:
        lines.append("")
        lines.append("random init (same protocols): " + ", ".join(
            f"{k.split('|')[1]} {arms[0]['scores'][k]['accuracy']}" for k in baseline))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
