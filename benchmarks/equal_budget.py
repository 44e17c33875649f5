"""Pretrain several runs under the same budget and score them side by side (script form of ``rspretrain benchmark``).

Each positional run is ``NAME=CONFIG[,section.key=value...]`` or a bare method name; all the
work (per-run training subprocess, peak RSS, evaluation, results.json/.md, benchmark.png,
resuming a half-finished benchmark) is :mod:`rspretrain.apps.benchmark`.

Example (issue #3's evidence):
    python benchmarks/equal_budget.py --budget-minutes 10 --out runs/gersp_vs_moco \\
        moco=moco_resnet18_eurosat gersp=gersp_resnet18_eurosat gersp_alpha0=gersp_resnet18_eurosat,model.alpha=0
"""

from __future__ import annotations

import argparse
import sys

from rspretrain.apps import benchmark


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    benchmark.add_arguments(parser)
    parser.add_argument("positional_runs", nargs="*", metavar="RUN", help="same as --runs")
    args = parser.parse_args()
    if args.positional_runs:
        args.runs = args.positional_runs
    return benchmark.main_from_args(args)


if __name__ == "__main__":
    sys.exit(main())
