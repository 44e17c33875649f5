"""What the Lightning harness costs a dense task: one epoch through it next to a plain PyTorch loop, same batches.

For each dense task (segmentation on Dubai, change detection on LEVIR-CD, detection on NEON, each with its default
schedule and one epoch) the same :class:`~rspretrain.downstream.dense.dense_task.DenseTask` is built twice with the
same seed (so the same initial weights) and trained on the same step-keyed batches:

- ``plain``: a hand-written loop (zero_grad, loss, backward, step, scheduler step), no logging, no checkpoints --
  what ``dense_training.py`` did before the harness;
- ``harness``: :func:`~rspretrain.downstream.dense.dense_task.train_dense_task`, i.e. ``build_trainer`` + ``fit``,
  with the CSV log and the end-of-epoch atomic checkpoint written to a temporary folder;
- ``harness without files``: the same with no run folder (Lightning's loop alone, no checkpoint, no logs).

Printed and written (``--out``, default ``benchmarks/results/dense_harness_cpu.json``): the wall time of each, the
ratio, the harness's start-up (trainer construction to first step), and the largest difference between the two runs'
final weights and epoch losses -- the harness must train the same model, not just a similar one.

    python benchmarks/dense_harness.py [--tasks segmentation change detection] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

from rspretrain.core.json_io import write_json
from rspretrain.core.rng_state import seed_step
from rspretrain.data.step_batches import StepBatches
from rspretrain.downstream.dense.evaluate import default_schedule
from rspretrain.downstream.sources import random_init_spec

TASKS = ("segmentation", "change", "detection")


def build_task(task: str, schedule):
    spec = random_init_spec("resnet18", 3, 224, (0.5,) * 3, (0.25,) * 3)
    if task == "segmentation":
        from rspretrain.downstream.dense.segmentation import SegmentationTask, load_segmentation_data

        return SegmentationTask(spec, load_segmentation_data(None)[0], schedule)
    if task == "change":
        from rspretrain.downstream.dense.change_detection import ChangeDetectionTask, load_change_data

        return ChangeDetectionTask(spec, load_change_data(None)[0], schedule)
    from rspretrain.downstream.dense.detection import DetectionTask, load_detection_data

    return DetectionTask(spec, load_detection_data(None)[0], schedule)


def plain_loop(task) -> dict:
    """The hand loop: the same batches (StepBatches keyed on the step), optimiser and schedule as the harness."""
    started = time.perf_counter()
    task.train()
    config = task.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    batches = StepBatches(task.draw, task.steps_per_epoch, task.schedule.seed)
    losses = []
    for step in range(task.schedule.epochs * task.steps_per_epoch):
        seed_step(task.schedule.seed, 0, step)  # as the harness's StepSeededRNG callback does
        loss, _ = task.loss(batches.batch_at(step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
    return {"seconds": time.perf_counter() - started, "mean_loss": sum(losses) / len(losses)}


class FirstStep(L.Callback):
    def __init__(self) -> None:
        self.at: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.at is None:
            self.at = time.perf_counter()


def harness(task, out: Path | None) -> dict:
    from rspretrain.downstream.dense.dense_task import train_dense_task

    first = FirstStep()
    started = time.perf_counter()
    facts = train_dense_task(task, out, progress=False, callbacks=[first])
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "startup_seconds": first.at - started, "mean_loss": facts["loss_per_epoch"][-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--repeats", type=int, default=3, help="alternating plain / harness runs per task")
    parser.add_argument("--out", default="benchmarks/results/dense_harness_cpu.json")
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    rows = []
    for name in args.tasks:
        schedule = default_schedule(name, epochs=1, progress=False)
        for repeat in range(args.repeats):
            plain_task = build_task(name, schedule)
            plain = plain_loop(plain_task)
            bare = harness(build_task(name, schedule), None)  # the loop alone: no checkpoint, no log files
            harness_task = build_task(name, schedule)
            with tempfile.TemporaryDirectory() as tmp:
                lit = harness(harness_task, Path(tmp))
            weight_gap = max(float((a.detach().float() - b.detach().float()).abs().max())
                             for a, b in zip(plain_task.model.state_dict().values(),
                                             harness_task.model.state_dict().values()) if a.is_floating_point())
            row = {"task": name, "repeat": repeat, "steps": schedule.epochs * plain_task.steps_per_epoch,
                   "plain_seconds": round(plain["seconds"], 2), "harness_seconds": round(lit["seconds"], 2),
                   "harness_over_plain": round(lit["seconds"] / plain["seconds"], 3),
                   "harness_without_files_seconds": round(bare["seconds"], 2),
                   "harness_without_files_over_plain": round(bare["seconds"] / plain["seconds"], 3),
                   "harness_startup_seconds": round(lit["startup_seconds"], 2),
                   "epoch_loss_plain": plain["mean_loss"], "epoch_loss_harness": lit["mean_loss"],
                   "max_weight_difference": weight_gap}
            rows.append(row)
            print(json.dumps(row))
    summary = {}
    for name in args.tasks:
        mine = [r for r in rows if r["task"] == name]
        summary[name] = {"median_ratio": round(statistics.median(r["harness_over_plain"] for r in mine), 3),
                         "median_ratio_without_files": round(
                             statistics.median(r["harness_without_files_over_plain"] for r in mine), 3),
                         "median_plain_seconds": statistics.median(r["plain_seconds"] for r in mine),
                         "median_harness_seconds": statistics.median(r["harness_seconds"] for r in mine),
                         "max_weight_difference": max(r["max_weight_difference"] for r in mine)}
    record = {"what": "one dense epoch: Lightning harness vs plain loop, same task, batches and seed",
              "torch": torch.__version__, "lightning": L.__version__, "threads": torch.get_num_threads(),
              "rows": rows, "summary": summary}
    write_json(args.out, record)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
