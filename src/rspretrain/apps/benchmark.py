"""Side-by-side benchmark: each method pretrained under the same budget, every backbone scored alike.

Each run is ``NAME=CONFIG[,section.key=value...]`` or just a method name, which uses that
method's shipped config (its ``default_config`` in the method registry). A run trains in its own process under an
equal wall-clock budget (``trainer.budget_minutes``: the lr schedule is fitted to it) or an
equal step budget, so its peak RSS is its own (the child's ``VmHWM``).
Every backbone is then scored by kNN and linear probe on EuroSAT test and UC Merced (plus any
``folder:PATH`` given), next to a random-init backbone of the same architecture and the
image-statistics baseline, with 95 % bootstrap CIs.

A half-finished benchmark is resumed by running the same command again: finished trainings
(``train.json``) and evaluations (``eval.json``) are reused, an interrupted training continues
from its last checkpoint. Both records carry the settings they were made with (a fingerprint of
config, overrides, budget and evaluation datasets): a run folder made with other settings is an
error (never silently reused), and cached scores for other evaluation settings are recomputed.

A run whose training fails (a non-finite loss, a crash) is reported and left out of the table;
the others go on, and the command exits non-zero at the end.

Scene classification by fine-tuning (``--finetune finetune,sskdnet``, on by default): every dataset is also
scored by fine-tuning a whole network for ``--finetune-epochs`` (plain fine-tuning and SSKDNet,
:mod:`rspretrain.downstream.finetune`) from random init and from each run named in ``--finetune-init``; these rows have
protocol ``finetune`` and their own training images/s and peak RSS (each fine-tuning runs in its own process too).

Outputs in ``--out``: ``results.json`` (one row per model × dataset × protocol with
``method, dataset, protocol, accuracy, ci_low, ci_high, images_per_s, peak_rss_mb,
wall_s, steps``), ``results.md`` and ``benchmark.png`` (accuracy with 95 % CIs, training
images/s, peak RSS and wall time).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from tqdm import tqdm

from rspretrain.core.checkpoint_io import atomic_write_text
from rspretrain.core.errors import ConfigError, RSPretrainError
from rspretrain.core.json_io import write_json
from rspretrain.pretrain.methods import default_configs

BASELINES = "baselines"  # the run-dir name of the random-init + image-statistics scores


@dataclass
class BenchmarkRun:
    """One pretraining run of the benchmark."""

    name: str
    config: str
    overrides: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> BenchmarkRun:
        """``NAME=CONFIG[,section.key=value...]`` or a bare method name."""
        if "=" not in text:
            if text not in default_configs():
                raise ConfigError(f"--runs: {text!r} is neither NAME=CONFIG nor one of {', '.join(default_configs())}")
            return cls(text, default_configs()[text])
        name, _, rest = text.partition("=")
        config, *pairs = rest.split(",")
        overrides = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep:
                raise ConfigError(f"--runs {name}: {pair!r} is not section.key=value")
            overrides[key] = yaml.safe_load(value)
        if not name or not config:
            raise ConfigError(f"--runs: {text!r} is not NAME=CONFIG[,section.key=value...]")
        return cls(name, config, overrides)


class _TrainingClock(L.Callback):
    """Training seconds and steps of one run (set-up and checkpoint-writing excluded)."""

    def __init__(self, path: Path) -> None:
        self.path, self.start, self.first_step = path, 0.0, 0

    def on_train_start(self, trainer, pl_module) -> None:
        self.start, self.cpu_start, self.first_step = time.perf_counter(), time.process_time(), trainer.global_step

    def on_train_end(self, trainer, pl_module) -> None:
        seconds, cpu = time.perf_counter() - self.start, time.process_time() - self.cpu_start
        steps = trainer.global_step - self.first_step
        record = {"steps": steps, "train_seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": peak_rss_mb()}
        write_json(self.path, record)


def peak_rss_mb() -> float | None:
    """This process's own peak RSS (``VmHWM``; Linux). ``ru_maxrss`` would not do: it survives
    ``exec``, so a child forked from a big parent reports the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)  # kB
    except OSError:
        pass
    return None


def _train_child(payload: str) -> None:
    """Entry of the training subprocess: ``python -m rspretrain.apps.benchmark --train-child JSON``."""
    from rspretrain.pretrain.config import load_config
    from rspretrain.pretrain.run import pretrain

    job = json.loads(payload)
    try:
        cfg = load_config(job["config"], job["overrides"])
        clock = _TrainingClock(Path(job["run_dir"]) / "clock.json")
        # The benchmark owns its run folders (checked above): one killed before its first checkpoint starts over.
        pretrain(cfg, resume=job["resume"], callbacks=[clock], overwrite=not job["resume"])
    except RSPretrainError as err:
        _exit_with_error(err, Path(job["run_dir"]))


class TrainingFailed(RSPretrainError):
    """A benchmark run's training subprocess exited non-zero."""


def _exit_with_error(err: RSPretrainError, run_dir: Path) -> None:
    """End a child process as the CLI does (one line, exit 2), leaving the line for the parent's report."""
    print(f"rspretrain: error: {err}", file=sys.stderr)
    atomic_write_text(run_dir / "error.txt", f"{err}\n")
    sys.exit(2)


def _run_child(kind: str, job: dict[str, Any], run_dir: Path, what: str) -> None:
    """Run ``python -m rspretrain.apps.benchmark --<kind>-child JOB``; raise :class:`TrainingFailed` with its error line."""
    proc = subprocess.run([sys.executable, "-m", "rspretrain.apps.benchmark", f"--{kind}-child", json.dumps(job)])
    if proc.returncode != 0:
        error = run_dir / "error.txt"
        why = error.read_text().strip() if error.is_file() else "its output is above"
        error.unlink(missing_ok=True)
        raise TrainingFailed(f"{what} exited with status {proc.returncode}: {why}")


def fingerprint(settings: dict[str, Any]) -> str:
    """A short stable hash of the settings a cached record was made with."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _finetune_child(payload: str) -> None:
    """Entry of a fine-tuning subprocess: ``python -m rspretrain.apps.benchmark --finetune-child JSON``."""
    from rspretrain.downstream.finetune.run import FinetuneConfig, run_finetune

    job = json.loads(payload)
    cfg = FinetuneConfig(**job)
    try:
        result = run_finetune(cfg)
    except RSPretrainError as err:
        _exit_with_error(err, Path(cfg.out_dir))
    record = {"peak_rss_mb": peak_rss_mb(), "images_per_s": result["train_images_per_s"], "steps": result["steps"],
              "wall_s": result["train_seconds"], "accuracy": result["overall_accuracy"],
              "ci": result["overall_accuracy_ci"], "n_train": result["n_train"], "n_test": result["n_test"]}
    write_json(Path(cfg.out_dir) / "benchmark_row.json", record)


def finetune_row(variant: str, dataset: str, init: tuple[str, str], out: Path, epochs: int, root: str | None,
                 max_train_per_class: int | None) -> dict[str, Any]:
    """Fine-tune one variant (``finetune`` / ``sskdnet``) on ``dataset`` in a subprocess (or reuse it); one row."""
    init_name, init_source = init
    label = variant if init_name == "random" else f"{variant} from {init_name}"
    run_dir = out / "finetune" / f"{variant}_{init_name}_{dataset.replace(':', '_').replace('/', '_')}"
    job = {"method": variant, "dataset": dataset, "root": root, "init": init_source, "epochs": epochs,
           "max_train_per_class": max_train_per_class, "out_dir": str(run_dir), "progress": True, "export": False}
    key = fingerprint(job)
    record_path = run_dir / "benchmark_row.json"
    stamp = run_dir / "benchmark_settings.json"
    if not (stamp.is_file() and json.loads(stamp.read_text()).get("fingerprint") == key and record_path.is_file()):
        run_dir.mkdir(parents=True, exist_ok=True)
        record_path.unlink(missing_ok=True)
        write_json(stamp, {"fingerprint": key, "settings": job})
        tqdm.write(f"[{label}] fine-tuning on {dataset} for {epochs} epochs")
        _run_child("finetune", job, run_dir, f"[{label}] fine-tuning on {dataset}")
    record = json.loads(record_path.read_text())
    return {"model": label, "method": label, "dataset": dataset, "protocol": "finetune",
            "accuracy": record["accuracy"], "ci_low": record["ci"][0], "ci_high": record["ci"][1],
            "n_train": record["n_train"], "n_test": record["n_test"], "extra": {"epochs": epochs, "init": init_name},
            "images_per_s": record["images_per_s"], "peak_rss_mb": record["peak_rss_mb"], "wall_s": record["wall_s"],
            "steps": record["steps"]}


def train_run(run: BenchmarkRun, out: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """Train one run in a subprocess (or reuse a finished one); returns its ``train.json`` record."""
    from rspretrain.pretrain.config import load_config

    run_dir = out / run.name
    record_path = run_dir / "train.json"
    made_with_now = {"config": run.config, "overrides": {**run.overrides, **settings}}
    overrides = {**made_with_now["overrides"], "trainer.out_dir": str(run_dir)}
    cfg = load_config(run.config, overrides)  # fail here, in this process, on a bad key
    key = fingerprint(made_with_now)
    stamp = run_dir / "benchmark_settings.json"
    if stamp.is_file():
        made_with = json.loads(stamp.read_text())
        if made_with.get("fingerprint") != key:
            raise ConfigError(
                f"{run_dir}: this run folder was made with other settings ({made_with.get('settings')}); "
                "use another --out or remove the folder"
            )
        if record_path.is_file():
            return json.loads(record_path.read_text())
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"{run_dir}: not empty and not made by this benchmark; use another --out")
    last = run_dir / "checkpoints" / "last.ckpt"
    job = {"config": run.config, "overrides": overrides, "run_dir": str(run_dir), "resume": last.is_file()}
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(stamp, {"fingerprint": key, "settings": made_with_now})
    tqdm.write(f"[{run.name}] {'resuming' if job['resume'] else 'training'} {cfg.method} ({run.config})")
    start = time.perf_counter()
    _run_child("train", job, run_dir, f"[{run.name}] training")
    wall = time.perf_counter() - start
    clock = json.loads((run_dir / "clock.json").read_text())
    from rspretrain.pretrain.run import load_checkpoint

    steps = int(load_checkpoint(last)["global_step"])
    record = {
        "run": run.name, "method": cfg.method, "config": run.config, "overrides": run.overrides,
        "arch": cfg.model.get("backbone", "resnet18"), "steps": steps, "batch_size": cfg.data.batch_size,
        # images/s of the last (or only) training segment; a resumed run times only its last part
        "images_per_s": round(clock["steps"] * cfg.data.batch_size / max(clock["train_seconds"], 1e-9), 1),
        "train_cpu_s": round(clock["cpu_seconds"], 1),
        "peak_rss_mb": clock["peak_rss_mb"],
        "wall_s": round(wall, 1),
    }
    write_json(record_path, record)
    return record


def evaluate_run(name: str, specs: list, out: Path, datasets: list[str], root: str | None,
                 max_train_per_class: int | None, include_image_statistics: bool) -> list[dict[str, Any]]:
    """Score ``specs`` once; the scores are cached in ``<out>/<name>/eval.json``."""
    from rspretrain.downstream.frozen import evaluate_scene_classification

    path = out / name / "eval.json"
    key = fingerprint({"datasets": datasets, "root": root, "max_train_per_class": max_train_per_class,
                       "image_statistics": include_image_statistics, "models": [s.name for s in specs]})
    if path.is_file():
        cached = json.loads(path.read_text())
        if isinstance(cached, dict) and cached.get("fingerprint") == key:
            return cached["rows"]
        tqdm.write(f"[{name}] cached scores were made with other evaluation settings: scoring again")
    results = evaluate_scene_classification(
        specs, datasets, protocols=("knn", "linear"), root=root, out_dir=out / name / "eval",
        max_train_per_class=max_train_per_class, include_image_statistics=include_image_statistics,
    )
    # The side-by-side table's rows: one accuracy and its interval per (model, dataset, protocol).
    rows = [{"model": r.model, "dataset": r.dataset, "protocol": r.task, "accuracy": r.value(),
             "ci_low": r.interval()[0], "ci_high": r.interval()[1], "n_train": r.n_train, "n_test": r.n_test,
             "extra": r.to_dict()["extra"]} for r in results]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"fingerprint": key, "rows": rows})
    return rows


def run_benchmark(
    runs: list[BenchmarkRun],
    out: str | os.PathLike,
    budget_minutes: float | None = 10.0,
    max_steps: int | None = None,
    budget_clock: str = "wall",
    datasets: tuple[str, ...] = ("eurosat", "ucmerced"),
    root: str | None = None,
    max_train_per_class: int | None = None,
    finetune: tuple[str, ...] = (),
    finetune_epochs: int = 5,
    finetune_init: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """Train (or reuse) every run, evaluate every backbone, fine-tune the ``finetune`` variants from random init and
    from the ``finetune_init`` runs, write the table and the plot."""
    from rspretrain.downstream.frozen.features import EncoderSpec
    from rspretrain.downstream.sources import random_init_spec
    from rspretrain.pretrain.run import load_method

    if not runs:
        raise ConfigError("--runs: no runs given")
    if len({r.name for r in runs}) != len(runs) or any(r.name == BASELINES for r in runs):
        raise ConfigError(f"--runs: run names must be unique and not {BASELINES!r}")
    if (budget_minutes is None) == (max_steps is None):
        raise ConfigError("give exactly one of --budget-minutes and --max-steps")
    from rspretrain.downstream.finetune import TASKS

    unknown = [v for v in finetune if v not in TASKS]
    if unknown:
        raise ConfigError(f"--finetune: {', '.join(unknown)} not among {', '.join(TASKS)}")
    missing = [n for n in finetune_init if n not in {r.name for r in runs}]
    if missing:
        raise ConfigError(f"--finetune-init: {', '.join(missing)} not among the --runs names")
    if finetune and finetune_epochs < 1:
        raise ConfigError(f"--finetune-epochs must be >= 1, got {finetune_epochs}")
    out = Path(out)
    settings: dict[str, Any] = {"trainer.ckpt_every_n_steps": 100, "trainer.progress_bar": True}
    if budget_minutes is not None:
        settings.update({"trainer.budget_minutes": budget_minutes, "trainer.max_steps": 1_000_000,
                         "trainer.budget_clock": budget_clock})
    else:
        settings["trainer.max_steps"] = max_steps
    if root:
        settings["data.root"] = root
    datasets = list(datasets)
    records, rows, failed = {}, [], []
    # one random-init baseline per (architecture, bands, input size) among the runs, in order of appearance
    baselines: dict[tuple, EncoderSpec] = {}
    for run in tqdm(runs, desc="benchmark runs", unit="run"):
        try:
            records[run.name] = train_run(run, out, settings)
        except TrainingFailed as err:
            tqdm.write(f"rspretrain: {err}")
            failed.append({"run": run.name, "error": str(err)})
            continue
        method = load_method(out / run.name / "checkpoints" / "last.ckpt")
        spec = EncoderSpec(run.name, method.backbone_to_export().eval(), method.mean, method.std,
                           method.views.image_size, method.band_names)
        baselines.setdefault((spec.encoder.arch, spec.encoder.in_chans, spec.image_size), spec)
        for row in evaluate_run(run.name, [spec], out, datasets, root, max_train_per_class, False):
            rows.append({**row, "method": run.name, **_cost(records[run.name])})
    for i, ((arch, in_chans, size), spec) in enumerate(baselines.items()):
        baseline = random_init_spec(arch, in_chans, size, spec.mean, spec.std, spec.band_names)
        name = BASELINES if i == 0 else f"{BASELINES}_{arch}_{size}"
        for row in evaluate_run(name, [baseline], out, datasets, root, max_train_per_class, i == 0):
            label = row["model"] if i == 0 or row["model"] != "random-init" else f"random-init ({arch})"
            rows.append({**row, "method": label, **_cost(None)})
    inits = [("random", "random")] + [(n, str(out / n / "checkpoints" / "last.ckpt")) for n in finetune_init
                                       if n in records]
    jobs = [(v, d, i) for i in inits for v in finetune for d in datasets]
    for variant, dataset, init in tqdm(jobs, desc="fine-tuning", unit="run", disable=not jobs):
        try:
            rows.append(finetune_row(variant, dataset, init, out, finetune_epochs, root, max_train_per_class))
        except TrainingFailed as err:
            tqdm.write(f"rspretrain: {err}")
            failed.append({"run": f"{variant}/{init[0]}/{dataset}", "error": str(err)})
    payload = {
        "budget_minutes": budget_minutes, "budget_clock": budget_clock, "max_steps": max_steps, "datasets": datasets,
        "finetune": list(finetune), "finetune_epochs": finetune_epochs, "finetune_init": list(finetune_init),
        "runs": list(records.values()), "failed": failed, "rows": rows,
    }
    write_json(out / "results.json", payload)
    atomic_write_text(out / "results.md", format_benchmark_table(rows) + "\n")
    if rows:
        plot_benchmark(rows, list(records.values()), out / "benchmark.png")
    if failed:
        names = ", ".join(f["run"] for f in failed)
        raise TrainingFailed(f"{len(failed)} of {len(runs) + len(jobs)} runs failed ({names}); "
                             f"the others are in {out / 'results.json'}")
    return rows


def _cost(record: dict[str, Any] | None) -> dict[str, Any]:
    keys = ("images_per_s", "peak_rss_mb", "wall_s", "steps")
    return {k: (record[k] if record else None) for k in keys}


def format_benchmark_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per method, accuracy [95 % CI] per dataset × protocol, then the costs."""
    columns = list(dict.fromkeys((r["dataset"], r["protocol"]) for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    by = {(r["method"], r["dataset"], r["protocol"]): r for r in rows}
    head = ["method", *(f"{d} {p}" for d, p in columns), "images/s", "peak RSS MB", "steps"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        cells = []
        for d, p in columns:
            r = by.get((m, d, p))
            cells.append(f"{100 * r['accuracy']:.1f} [{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}]" if r else "–")
        any_row = next(r for r in rows if r["method"] == m)
        costs = [any_row["images_per_s"], any_row["peak_rss_mb"], any_row["steps"]]
        lines.append("| " + " | ".join([m, *cells, *("–" if c is None else str(c) for c in costs)]) + " |")
    return "\n".join(lines)


def plot_benchmark(rows: list[dict[str, Any]], records: list[dict[str, Any]], path: Path) -> Path:
    """Accuracy with 95 % CIs per dataset × protocol, and per run: images/s, peak RSS, wall time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    columns = list(dict.fromkeys((r["dataset"], r["protocol"]) for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    by = {(r["method"], r["dataset"], r["protocol"]): r for r in rows}
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.8), gridspec_kw={"width_ratios": [3, 1, 1, 1]})
    ax = axes[0]
    width = 0.8 / max(1, len(methods))
    x = np.arange(len(columns))
    for i, m in enumerate(methods):
        acc = [100 * by[(m, *c)]["accuracy"] if (m, *c) in by else np.nan for c in columns]
        lo = [100 * (by[(m, *c)]["accuracy"] - by[(m, *c)]["ci_low"]) if (m, *c) in by else 0 for c in columns]
        hi = [100 * (by[(m, *c)]["ci_high"] - by[(m, *c)]["accuracy"]) if (m, *c) in by else 0 for c in columns]
        colour = plt.get_cmap("tab20")(i % 20)  # distinct colours for up to 20 rows
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, acc, width, yerr=[lo, hi], capsize=2, label=m, color=colour)
    ax.set_xticks(x, [f"{d}\n{p}" for d, p in columns])
    ax.set_ylabel("top-1 accuracy (%) with 95 % CI")
    ax.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    names = [r["run"] for r in records]
    for ax, key, label in zip(axes[1:], ("images_per_s", "peak_rss_mb", "wall_s"),
                              ("training images / s", "peak RSS (MB)", "wall time (s)")):
        ax.barh(names, [r[key] for r in records], color="tab:gray")
        ax.set_xlabel(label)
        ax.invert_yaxis()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from jsonargparse.typing import PositiveFloat, PositiveInt

    parser.add_argument("--runs", nargs="+", default=["moco", "gersp", "cmid", "supervised"],
                        help="NAME=CONFIG[,section.key=value...] or a registered method name (it runs its default config)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--budget-minutes", type=PositiveFloat, default=None,
                        help="equal training time per run (default 10)")
    budget.add_argument("--max-steps", type=PositiveInt, default=None, help="equal steps per run instead of equal time")
    parser.add_argument("--budget-clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: the budget is process CPU time (fair when the machine is shared)")
    parser.add_argument("--out", default="runs/benchmark")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--datasets", default="eurosat,ucmerced")
    parser.add_argument("--extra-dataset", action="append", default=[], help="folder:PATH of a class-per-folder set")
    parser.add_argument("--max-train-per-class", type=PositiveInt, default=None,
                        help="cap the probes' (and fine-tuning's) training images per class")
    parser.add_argument("--finetune", default="finetune,sskdnet",
                        help="fine-tuning variants scored on every dataset (rspretrain.downstream.finetune), or 'none'")
    parser.add_argument("--finetune-epochs", type=PositiveInt, default=5)
    parser.add_argument("--finetune-init", default="",
                        help="comma-separated --runs names whose backbones are also fine-tuned (besides random init)")


def main_from_args(args: argparse.Namespace) -> int:
    budget = args.budget_minutes if args.budget_minutes is not None or args.max_steps is not None else 10.0
    rows = run_benchmark(
        [BenchmarkRun.parse(r) for r in args.runs], args.out, budget_minutes=budget, max_steps=args.max_steps,
        budget_clock=args.budget_clock,
        datasets=tuple(args.datasets.split(",")) + tuple(args.extra_dataset), root=args.data_root,
        max_train_per_class=args.max_train_per_class,
        finetune=() if args.finetune in ("", "none") else tuple(args.finetune.split(",")),
        finetune_epochs=args.finetune_epochs,
        finetune_init=tuple(n for n in args.finetune_init.split(",") if n),
    )
    print(format_benchmark_table(rows))
    print(f"results: {Path(args.out) / 'results.json'}; plot: {Path(args.out) / 'benchmark.png'}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--train-child":
        _train_child(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "--finetune-child":
        _finetune_child(sys.argv[2])
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        add_arguments(parser)
        sys.exit(main_from_args(parser.parse_args()))
