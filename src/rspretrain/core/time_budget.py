"""Train for a wall-clock budget with a learning-rate schedule that fits it.

Comparing methods "at equal CPU budget" needs each run to stop after the same number of
minutes *and* to finish its lr schedule (a cosine cut off halfway is not the method's recipe).
:class:`TimeBudget` times ``calibration_steps`` training steps after ``warmup_steps``, then sets
the run's ``max_steps`` (and the method's schedule length) to the number of steps that fit in
what is left of the budget. Lightning's ``max_time`` stays as a hard stop at the budget plus a
margin, so a run that slows down later still ends.

``clock="cpu"`` measures the process's CPU time (all threads) instead of wall-clock time: on a
machine shared with other work, a CPU-time budget gives every run the same compute whatever
else is running, where a wall-clock budget would give runs under load fewer steps.
"""

from __future__ import annotations

import logging
import time

import lightning as L

from rspretrain.core.errors import ConfigError

log = logging.getLogger("rspretrain")


#: budget clocks: wall-clock seconds, or CPU seconds of this process (all threads)
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


class TimeBudget(L.Callback):
    """Fit ``max_steps`` (and the lr schedule) to a training-time budget of ``minutes``."""

    def __init__(self, minutes: float, warmup_steps: int = 5, calibration_steps: int = 10, clock: str = "wall") -> None:
        if clock not in CLOCKS:
            raise ConfigError(f"trainer.budget_clock: {clock!r} is not one of {', '.join(CLOCKS)}")
        self.now = CLOCKS[clock]
        self.seconds = minutes * 60.0
        self.warmup_steps, self.calibration_steps = warmup_steps, calibration_steps
        self.start = self.calibration_start = None
        self.fitted_steps: int | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = self.now()
        if self.fitted_steps is not None:  # resumed: keep the length the interrupted run fitted
            trainer.fit_loop.epoch_loop.max_steps = self.fitted_steps
            pl_module.schedule_total_steps = self.fitted_steps

    def state_dict(self) -> dict:
        return {"fitted_steps": self.fitted_steps}

    def load_state_dict(self, state_dict: dict) -> None:
        self.fitted_steps = state_dict.get("fitted_steps")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        done = trainer.global_step
        if self.fitted_steps is not None or done < self.warmup_steps:
            return
        if self.calibration_start is None:
            self.calibration_start = (self.now(), done)
            return
        t0, s0 = self.calibration_start
        if done - s0 < self.calibration_steps:
            return
        now = self.now()
        seconds_per_step = (now - t0) / (done - s0)
        remaining = self.seconds - (now - self.start)
        self.fitted_steps = max(done + 1, done + int(remaining / seconds_per_step))
        trainer.fit_loop.epoch_loop.max_steps = self.fitted_steps
        pl_module.schedule_total_steps = self.fitted_steps
        log.info(
            "time budget %.1f min: %.3f s/step -> %d steps in total", self.seconds / 60, seconds_per_step,
            self.fitted_steps,
        )
