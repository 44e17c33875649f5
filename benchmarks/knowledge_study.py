"""What each knowledge term buys (issue 18): arms that share one tuned base config and differ only in the term.

One command, four stages; every stage is resumable (finished trainings and scores are reused, an interrupted
training continues from its last checkpoint, a run folder made with other settings is an error), so a killed study
continues by running the same command again.

1. **tune** (``--tune-steps``, seed 0): per base, a coordinate sweep around its shipped EuroSAT config (``TUNE_GRID``:
   lr, then the contrastive temperature, then the teacher EMA; each step keeps the best so far). Every candidate
   is pretrained for ``--tune-steps`` and scored by linear probe (ties: kNN) on EuroSAT **val** (our split of the
   27,000 images, disjoint from train and test), the probe trained on 100 EuroSAT-train images per class. The
   winners are the bases' tuned configs (``<out>/tune.json``). The test split is never looked at here.
2. **train**: per seed (seed-major, so a study stopped early has whole seeds), the arms of :meth:`Study.arms`:

   - ``B``: the tuned base ``B`` (``moco``, ``cmid``) for ``--steps`` steps;
   - ``B+natural_images``: the same config plus GeRSP's term (``model.knowledge: [{natural_images: {weight: 1,
     dataset: cifar10}}]``, :mod:`rspretrain.pretrain.knowledge.natural_images`) for the same steps (equal steps);
   - ``B+natural_images@equal_time``: the same, for ``round(steps * c_B / c_B+term)`` steps, where ``c`` is the
     training CPU seconds per step measured in that seed's two equal-step runs (process CPU time: it does not change
     when the machine is shared), so the term gets the base's compute (equal time); its schedule is fitted to its
     own length;
   - arm groups on other data (``--groups``, after every seed's main arms): ``zion:moco``, ``zion:moco+land_cover`` and its equal-time arm,
     the tuned MoCo on 64 px RGB tiles of the Zion Landsat 8 scene with NLCD 2011 (``GROUPS``), without and with
     GeoKR's land-cover term (:mod:`rspretrain.pretrain.knowledge.land_cover`, sparse mean teacher). Their
     backbones have seen Landsat reflectance, so they (and the group's random init) are scored with each target
     dataset's own band statistics (``target_statistics``), as ``benchmarks/geokr_zion.py --rgb-transfer``, and
     in the dense stage with each task's training images' statistics (``input_statistics="train"``); then the
     term's weight sweep (``WEIGHT_SWEEP``: ``zion:moco+land_cover*0.1``, ``*0.3`` and the control ``*0.0``, the
     term's forward without its loss; equal steps; every weight is reported, none is picked on the test sets). The
     control gives the comparison that holds the term's forward fixed and changes only its loss (x1 - x0);
   - ablations of CMID (``--ablations``, last): ``cmid-no_mim`` (``mim_weight 0``) and ``cmid-no_local``
     (``local_weight 0``).

   A seed fixes the initial weights (a term's head is built after every shared module, so the shared modules start
   bit-equal), the RS data order (:class:`~rspretrain.data.step_indexed_sampler.StepIndexedBatchSampler`) and the RS
   views (:mod:`rspretrain.core.rng_state`: a step's draws come from (seed, rank, step); the term's views are drawn
   after the base's), so per seed the arms differ only in the term (``tests/pretrain/knowledge/test_pairing.py``).
3. **score**: every backbone (and the fixed random init) by kNN and linear probe on EuroSAT test and UC Merced test,
   per test image (:func:`rspretrain.apps.paired_study.score_backbone`; probes trained on 100 images per class);
   then SSKDNet's fine-tuning term (``--finetune-inits``): per seed and dataset, ``rspretrain finetune`` with
   ``--method finetune`` and ``--method sskdnet`` from the same init (``random``, and the seed's tuned ``moco``
   backbone), same epochs, batch and seed (head, data order, augmentation draws), scored per test image
   (``predictions.json``; ``FINETUNE_SPLITS``: EuroSAT 60 training images per class -> its whole test split, UC
   Merced 50 % -> 50 %); then (``--dense``, after every arm is trained) the backbones of ``--dense-comparisons``
   (default: each term at equal steps, each base vs random init, the Zion group's too) and a random init, fine-tuned
   with the dense tasks' default schedules for ``--dense-epochs`` at the arm's seed: Dubai segmentation (mIoU) and
   LEVIR-CD change detection (F1); their paired differences get a t interval over seeds.
4. **report**: per comparison x dataset x protocol, the paired difference ``b - a`` in points with a 95 % two-level
   bootstrap interval over seeds and test images, and one verdict per paper claim over all its rows
   (:func:`~rspretrain.apps.paired_study.judge_claims`: *supported*, *not supported*, *mixed* naming the rows, or
   *undecided at this budget*). Writes ``--json`` (plus ``.md`` and ``.png`` beside it).

Not here: SSKDNet's own ablations (no KD, no shuffle, no fusion) are ``benchmarks/sskdnet_vs_finetune.py``. GeoKR
itself (its method, not the term on a base) against random init on the held-out half of the Zion scene is
``benchmarks/geokr_zion.py``.

Usage (resumable; on 2 cores the tuning and the main arms' classification scores take about 2 hours, the Zion group
about 20 minutes (a run of 400 steps 2-4 minutes) and its weight sweep about 60 (9 runs), the CMID ablations about
50 minutes (8 per run), SSKDNet vs fine-tuning 7 minutes per init (12 runs), the Zion group's dense rows 5 minutes
(18 runs), and the dense scores of the default main comparisons (15 backbones) 41 minutes, measured beside a CI
run)::

    python benchmarks/knowledge_study.py --out runs/knowledge_study --json benchmarks/results/knowledge_study_cpu.json
    python benchmarks/knowledge_study.py --out runs/knowledge_study --report-only   # the table from what is done
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rspretrain.apps.benchmark import BenchmarkRun, TrainingFailed, train_run
from rspretrain.apps.paired_study import judge_claims, paired_difference, score_backbone, t_interval
from rspretrain.core.json_io import write_json
from rspretrain.downstream.finetune.run import FinetuneConfig, load_finetune_splits, read_finetune_summary, run_finetune
from rspretrain.downstream.frozen.scene_benchmark import PROTOCOLS, load_scene_splits
from rspretrain.pretrain.config import load_config

#: base -> its shipped EuroSAT config
BASES = {"moco": "moco_resnet18_eurosat", "cmid": "cmid_resnet18_eurosat"}
#: base -> the coordinate sweep: (key, candidate values), in order; the shipped value is among the candidates.
TUNE_GRID: dict[str, list[tuple[str, list[Any]]]] = {
    "moco": [("optim.lr", [0.03, 0.1, 0.3]), ("model.temperature", [0.1, 0.2, 0.3]), ("model.momentum", [0.99, 0.996])],
    "cmid": [("optim.lr", [5e-4, 1e-3, 2e-3]), ("model.temperature", [0.1, 0.2]), ("model.base_momentum", [0.99, 0.996])],
}
TERM = "natural_images"
#: term -> the overrides that attach it (weight 1, as both papers)
TERM_OVERRIDES = {
    TERM: {"model.knowledge": [{TERM: {"weight": 1.0, "dataset": "cifar10"}}]},
    # GeoKR's noise-robust mean teacher on the sparse schedule as compressed for Zion (geokr_resnet18_zion: ~30
    # updates in 2000 steps at batch 32; the schedule is kept at batch 32 whatever the base's batch)
    "land_cover": {"model.knowledge": [{"land_cover": {"weight": 1.0, "teacher": "sparse",
                                                       "teacher_intervals": [4, 48, 92, 136],
                                                       "teacher_batch_size": 32}}]},
}
ZION = "zion_landsat8_nlcd2011"
#: arm group -> the data (and data-bound) overrides its arms share on top of the tuned base. ``zion``: 64 px RGB
#: tiles (Landsat 8 b4, b3, b2: the order of EuroSAT's R, G, B) of the Zion scene with NLCD 2011 in 8 classes (667
#: tiles, stride 48, as geokr_resnet18_zion); MoCo's queue shrinks to 512 keys (< the scene's tiles, so a key's own
#: tile is rarely among its negatives).
GROUPS: dict[str, dict[str, Any]] = {
    "zion": {
        "data.dataset": "landcover:" + ",".join(f"{ZION}/landsat8_LC80380342015230_{b}.tif" for b in ("b4", "b3", "b2")),
        "data.dataset_options": {"land_cover": f"{ZION}/nlcd2011.tif", "scheme": "nlcd8", "tile": 64, "stride": 48},
        "model.queue_size": 512,
    },
}
#: arm group -> (base, term): its arms are ``group:base``, ``group:base+term`` and ``group:base+term@equal_time``
GROUP_ARMS = {"zion": ("moco", "land_cover")}
#: arm group -> the term's other weights, each an equal-step arm ``group:base+term*w`` (is a term's effect its
#: knowledge or its weight under the base's optimiser? All weights are reported; none is picked on the test sets).
#: Weight 0 is the control: the term's forward without its loss (its view still shares the student's BatchNorm
#: batches), so what the term does besides its gradient shows; its rows carry no paper claim.
WEIGHT_SWEEP: dict[str, tuple[float, ...]] = {"zion": (0.1, 0.3, 0.0)}
ABLATIONS = {"cmid-no_mim": ("cmid", {"model.mim_weight": 0.0}), "cmid-no_local": ("cmid", {"model.local_weight": 0.0})}
EQUAL_TIME = "@equal_time"
#: dense task -> the score its paired difference is taken on
DENSE_METRICS = {"segmentation": "miou", "change": "f1"}
#: SSKDNet's fine-tuning term: dataset -> its fine-tuning split (EuroSAT: 60 training images per class, the whole
#: test split the probes use; UC Merced: the paper's 50 % training ratio). Arms ``finetune[init]`` and
#: ``sskdnet[init]``, init ``random`` or a base's backbone of the same seed (``--finetune-inits``).
FINETUNE_SPLITS = {
    "eurosat": {"train_ratio": None, "max_train_per_class": 60, "max_test_per_class": None},
    "ucmerced": {"train_ratio": 0.5, "max_train_per_class": None, "max_test_per_class": None},
}
FINETUNE_CLAIM = ("SSKDNet: restoring masked and shuffled low-level features in a branch and distilling it into the "
                  "backbone (with feature fusion) beats plain fine-tuning of the same backbone")


@dataclass(frozen=True)
class Comparison:
    label: str
    a: str
    b: str
    claim: str = ""


def comparisons(bases: list[str], ablations: bool, groups: Sequence[str] = ()) -> list[Comparison]:
    out = []
    for base in bases:
        novel = " (no paper has it)" if base != "moco" else ""
        claim = ("GeRSP: supervised learning on labeled natural images, added to RS contrastive pretraining, improves "
                 "RS transfer" if base == "moco" else f"{base} + natural images{novel} beats {base} alone")
        out.append(Comparison(f"{TERM} on {base}, equal steps{novel}", base, f"{base}+{TERM}", claim))
        out.append(Comparison(f"{TERM} on {base}, equal time{novel}", base, f"{base}+{TERM}{EQUAL_TIME}",
                              f"{claim}, at the base's compute"))
    if ablations and "cmid" in bases:
        out.append(Comparison("MIM in CMID (cmid - cmid-no_mim)", "cmid-no_mim", "cmid",
                              "CMID: masked image modelling adds to the contrastive objectives"))
        out.append(Comparison("local branch in CMID (cmid - cmid-no_local)", "cmid-no_local", "cmid",
                              "CMID: the local (patch) self-distillation adds to MIM + global contrast"))
    for group in groups:
        base, term = GROUP_ARMS[group]
        claim = claim_of(group)
        out.append(Comparison(f"{term} on {base} ({group} tiles), equal steps", f"{group}:{base}",
                              f"{group}:{base}+{term}", claim))
        out.append(Comparison(f"{term} on {base} ({group} tiles), equal time", f"{group}:{base}",
                              f"{group}:{base}+{term}{EQUAL_TIME}", f"{claim}, at the base's compute"))
        for weight in WEIGHT_SWEEP.get(group, ()):
            label = f"{term} x{weight}" if weight else f"{term}'s forward without its loss (x0)"
            out.append(Comparison(f"{label} on {base} ({group} tiles), equal steps", f"{group}:{base}",
                                  f"{group}:{base}+{term}*{weight}", f"{claim}, at weight {weight}" if weight else ""))
        if 0.0 in WEIGHT_SWEEP.get(group, ()):  # the term's loss alone: both arms run its forward
            out.append(Comparison(f"{term}'s loss with its forward held (x1 - x0) on {base} ({group} tiles)",
                                  f"{group}:{base}+{term}*0.0", f"{group}:{base}+{term}",
                                  f"{claim}, its forward held fixed (loss weight 1 vs 0)"))
    for base in bases:
        out.append(Comparison(f"{base} - random init", "random-init", base, f"{base} beats random init"))
    for group in groups:
        base = GROUP_ARMS[group][0]
        out.append(Comparison(f"{base} on {group} tiles - random init", f"{group}:random-init", f"{group}:{base}",
                              f"{base} pretrained on {group} tiles beats random init"))
    return out


def claim_of(group: str) -> str:
    base = GROUP_ARMS[group][0]
    return ("GeoKR: land-cover proportions of georeferenced tiles, as supervision, improve RS transfer (on "
            f"{base}, pretrained on {group} tiles, scored on RGB scene classification)")


def is_random(arm: str) -> bool:
    return arm.rpartition(":")[2] == "random-init"


def split_arm(arm: str) -> tuple[str, str, str, bool]:
    """``group:base+term@equal_time`` -> ``(group, base, term, equal_time)`` (empty group and term where absent;
    the term keeps its weight, ``land_cover*0.3``)."""
    group, _, rest = arm.rpartition(":")
    base, _, term = rest.partition("+")
    return group, base, term.removesuffix(EQUAL_TIME), term.endswith(EQUAL_TIME)


def term_overrides(term: str) -> dict[str, Any]:
    """The overrides that attach ``term`` (``name`` at its weight in ``TERM_OVERRIDES``, or ``name*weight``)."""
    name, _, weight = term.partition("*")
    overrides = _jsonable(TERM_OVERRIDES[name])
    if weight:
        overrides["model.knowledge"][0][name]["weight"] = float(weight)
    return overrides


@dataclass
class Study:
    args: argparse.Namespace
    out: Path
    tuned: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)  # (arm, seed) -> record + scores
    failed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def settings(self) -> dict[str, Any]:
        settings = {"trainer.max_epochs": None, "trainer.ckpt_every_n_steps": 50, "trainer.progress_bar": False}
        if self.args.data_root:
            settings["data.root"] = self.args.data_root
        return settings

    # --- stage 1 -------------------------------------------------------------------------------------------------
    def tune(self, base: str) -> dict[str, Any]:
        path = self.out / "tune.json"
        record = json.loads(path.read_text()) if path.is_file() else {}
        if base in record and record[base]["grid"] == _jsonable(TUNE_GRID[base]) \
                and record[base]["steps"] == self.args.tune_steps:
            return record[base]["best"]
        shipped = load_config(BASES[base])
        best = {key: _get(shipped, key) for key, _ in TUNE_GRID[base]}
        tried = []
        splits = self.validation_splits()
        for key, values in TUNE_GRID[base]:
            scored = []
            for value in values:
                candidate = {**best, key: value}
                earlier = next((t for t in tried if t["overrides"] == candidate), None)
                if earlier is not None:  # the best so far, tried at an earlier key: scored once
                    if "rank" in earlier:
                        scored.append((earlier["rank"], value))
                    continue
                name = f"{base}_" + "_".join(f"{k.rsplit('.', 1)[-1]}{v}" for k, v in candidate.items())
                run = BenchmarkRun(name, BASES[base], {**candidate, "seed": 0, "trainer.max_steps": self.args.tune_steps})
                try:
                    train_run(run, self.out / "tune", self.settings)
                except TrainingFailed as err:  # e.g. a non-finite loss at a too-high lr: the candidate loses
                    print(f"[tune {base}] {candidate}: {err}", flush=True)
                    tried.append({"overrides": candidate, "failed": str(err)})
                    continue
                scores = score_backbone(name, self.out / "tune" / name / "checkpoints" / "last.ckpt", splits,
                                        self.out / "tune" / name, 0)
                accuracy = {k: round(100 * sum(v) / len(v), 2) for k, v in scores.items()}
                rank = (accuracy["eurosat_val/linear"], accuracy["eurosat_val/knn"])
                tried.append({"overrides": candidate, "val": accuracy, "rank": rank})
                scored.append((rank, value))
                print(f"[tune {base}] {candidate}: val linear {accuracy['eurosat_val/linear']}, knn "
                      f"{accuracy['eurosat_val/knn']}", flush=True)
            if scored:  # the first of equal scores: the smaller value
                best[key] = max(scored, key=lambda s: s[0])[1]
        record[base] = {"grid": _jsonable(TUNE_GRID[base]), "steps": self.args.tune_steps, "shipped":
                        {key: _get(shipped, key) for key, _ in TUNE_GRID[base]}, "tried": tried, "best": best}
        write_json(path, record)
        return best

    def validation_splits(self) -> dict:
        if not hasattr(self, "_val"):
            self._val = {"eurosat_val": load_scene_splits("eurosat", self.args.data_root, self.args.probe_per_class,
                                                          test_split="val")}
        return self._val

    def test_splits(self) -> dict:
        if not hasattr(self, "_test"):
            self._test = {d: load_scene_splits(d, self.args.data_root, self.args.probe_per_class)
                          for d in self.args.datasets.split(",")}
        return self._test

    # --- stages 2 and 3 ------------------------------------------------------------------------------------------
    def arm_overrides(self, arm: str, seed: int) -> tuple[str, dict[str, Any]] | None:
        """``(config, overrides)`` of one arm at one seed (None: an equal-time arm whose pair is not trained yet)."""
        if arm in ABLATIONS:
            base, change = ABLATIONS[arm]
            return BASES[base], {**self.tuned[base], **change, "seed": seed, "trainer.max_steps": self.args.steps}
        group, base, term, equal_time = split_arm(arm)
        overrides = {**self.tuned[base], **GROUPS.get(group, {}), "seed": seed, "trainer.max_steps": self.args.steps}
        if term:
            overrides.update(term_overrides(term))
        if equal_time:
            steps = self.equal_time_steps(arm.removesuffix(EQUAL_TIME), seed)
            if steps is None:
                return None
            overrides["trainer.max_steps"] = steps
        return BASES[base], overrides

    def equal_time_steps(self, term_arm: str, seed: int) -> int | None:
        """Steps of ``term_arm@equal_time`` (``[group:]B+term``) at ``seed``: the term's run gets the base's training
        CPU time; fixed once computed (``equal_time.json``), so a resumed study keeps the same run."""
        path = self.out / "equal_time.json"
        known = json.loads(path.read_text()) if path.is_file() else {}
        base_arm = term_arm.partition("+")[0]
        key = _folder(base_arm, seed)
        if key not in known:
            clocks = [self.out / "train" / _folder(arm, seed) / "clock.json" for arm in (base_arm, term_arm)]
            if not all(c.is_file() for c in clocks) or not all((c.parent / "train.json").is_file() for c in clocks):
                return None
            (cb, ck) = [json.loads(c.read_text()) for c in clocks]
            cpu_base, cpu_term = cb["cpu_seconds"] / cb["steps"], ck["cpu_seconds"] / ck["steps"]
            known[key] = {"cpu_s_per_step_base": round(cpu_base, 4), "cpu_s_per_step_term": round(cpu_term, 4),
                          "wall_s_per_step_base": round(cb["train_seconds"] / cb["steps"], 4),
                          "wall_s_per_step_term": round(ck["train_seconds"] / ck["steps"], 4),
                          "steps": max(1, round(self.args.steps * cpu_base / cpu_term))}
            write_json(path, known)
        return int(known[key]["steps"])

    def train_and_score(self, arm: str, seed: int) -> None:
        spec = self.arm_overrides(arm, seed)
        if spec is None:
            return
        config, overrides = spec
        name = _folder(arm, seed)
        try:
            record = train_run(BenchmarkRun(name, config, overrides), self.out / "train", self.settings)
        except TrainingFailed as err:  # reported, left out of the table; the other arms go on
            print(f"[{name}] {err}", flush=True)
            self.failed.append({"arm": arm, "seed": seed, "error": str(err)})
            return
        run_dir = self.out / "train" / name
        scores = score_backbone(name, run_dir / "checkpoints" / "last.ckpt", self.test_splits(), run_dir, seed,
                                target_statistics=bool(split_arm(arm)[0]))
        self.runs[(arm, seed)] = _finished_run(run_dir, record, scores)
        print(f"[{name}] {record['steps']} steps, {self.runs[(arm, seed)]['cpu_s_per_step']} CPU s/step, " + ", ".join(
            f"{k} {100 * sum(v) / len(v):.1f}" for k, v in scores.items()), flush=True)

    def arms(self) -> list[tuple[str, int]]:
        bases = self.args.bases.split(",")
        main = [a for b in bases for a in (b, f"{b}+{TERM}", f"{b}+{TERM}{EQUAL_TIME}")]
        order = [(arm, seed) for seed in self.args.seeds for arm in main]
        for group in self.groups:
            base, term = GROUP_ARMS[group]
            arms = [f"{group}:{base}", f"{group}:{base}+{term}", f"{group}:{base}+{term}{EQUAL_TIME}"]
            order += [(arm, seed) for seed in self.args.seeds for arm in arms]
        for group in self.groups:  # after the groups' main arms: a sweep stopped early leaves them whole
            base, term = GROUP_ARMS[group]
            order += [(f"{group}:{base}+{term}*{w}", seed) for w in WEIGHT_SWEEP.get(group, ())
                      for seed in self.args.seeds]
        if self.args.ablations and "cmid" in bases:
            order += [(arm, seed) for seed in self.args.seeds for arm in ABLATIONS]
        return order

    @property
    def groups(self) -> list[str]:
        """The arm groups on other data (``--groups``) whose base is among ``--bases``."""
        return [g for g in self.args.groups.split(",") if g and g != "none" and GROUP_ARMS[g][0] in
                self.args.bases.split(",")]

    def collect_finished(self) -> None:
        """Load every finished arm's record and scores (``--report-only``), training nothing."""
        for arm, seed in self.arms():
            run_dir = self.out / "train" / _folder(arm, seed)
            if (run_dir / "train.json").is_file() and (run_dir / "scores.json").is_file():
                self.runs[(arm, seed)] = _finished_run(run_dir, json.loads((run_dir / "train.json").read_text()),
                                                       json.loads((run_dir / "scores.json").read_text()))

    def dense_scores(self, arm: str, seed: int) -> dict[str, float | None]:
        """``{task: score}`` of one arm's backbone fine-tuned on each ``--dense`` task (``dense.json`` in its folder;
        a group's random init: ``dense_s<seed>.json`` in its random-init folder, with the input conventions of the
        group's first arm). The schedule's seed fixes the head, crops and order, so an arm and the random init at one
        seed are paired. A group's backbones (pretrained on other imagery) are standardised with each task's training
        images' own statistics (``input_statistics="train"``), as their classification scores."""
        group = split_arm(arm)[0]
        if is_random(arm):
            folder = self.out / (f"{group}_random_init" if group else "random_init")
            return {task: self._dense(task, self.first_checkpoint(group), folder / f"dense_s{seed}.json", seed, True,
                                      bool(group)) for task in self.dense_tasks}
        run_dir = self.out / "train" / _folder(arm, seed)
        return {task: self._dense(task, run_dir / "checkpoints" / "last.ckpt", run_dir / "dense.json", seed, False,
                                  bool(group)) for task in self.dense_tasks}

    @property
    def dense_tasks(self) -> list[str]:
        return [t for t in self.args.dense.split(",") if t and t != "none"]

    def _dense(self, task: str, ckpt: Path, path: Path, seed: int, random_init: bool,
               target_statistics: bool) -> float | None:
        from rspretrain.downstream.dense.evaluate import default_schedule, run_dense_task
        from rspretrain.downstream.sources import encoder_specs

        known = json.loads(path.read_text()) if path.is_file() else {}
        key = f"{task}/{self.args.dense_epochs}ep"
        if key not in known and self.args.report_only:
            return None
        if key not in known:
            schedule = dataclasses.replace(default_schedule(task, epochs=self.args.dense_epochs), seed=seed,
                                           progress=False,
                                           input_statistics="train" if target_statistics else "encoder")
            specs = [s for s in encoder_specs(str(ckpt), with_random_init=True) if (s.name == "random-init") ==
                     random_init]
            with tempfile.TemporaryDirectory() as tmp:
                (result,) = run_dense_task(task, specs, None, Path(tmp) / "out", schedule)
            known[key] = result.value(DENSE_METRICS[task])
            write_json(path, known)
        return float(known[key])

    def first_checkpoint(self, group: str) -> Path | None:
        """The checkpoint of the first finished arm of ``group`` ("" the main one): whose input conventions (bands,
        image size, statistics) the fixed random init takes."""
        first = next(((a, s) for (a, s) in self.runs if split_arm(a)[0] == group and not is_random(a)), None)
        return None if first is None else self.out / "train" / _folder(*first) / "checkpoints" / "last.ckpt"

    def finetune_correct(self, method: str, init: str, dataset: str, seed: int) -> list[bool] | None:
        """Per-test-image correctness of one fine-tuning run (``rspretrain finetune``, ``method`` ``finetune`` or
        ``sskdnet``), started from ``init`` (``random`` or the base arm ``init``'s backbone at ``seed``); the seed
        fixes the head, data order and augmentation draws, so the two methods are paired. Resumes an interrupted run;
        None when not run (``--report-only``) or the init's backbone is not trained."""
        folder = self.out / "finetune" / f"{method}_{init}_{dataset}_s{seed}"
        path = folder / "predictions.json"
        if not (folder / "metrics.json").is_file():
            ckpt = self.out / "train" / _folder(init, seed) / "checkpoints" / "last.ckpt"
            if self.args.report_only or (init != "random" and not ckpt.is_file()):
                return None
            cfg = FinetuneConfig(method=method, dataset=dataset, root=self.args.data_root, image_size=64,
                                 init="random" if init == "random" else str(ckpt), backbone="resnet18",
                                 epochs=self.args.finetune_epochs, batch_size=32, seed=seed, out_dir=str(folder),
                                 progress=False, export=False,
                                 resume=(folder / "checkpoints" / "last.ckpt").is_file(), **FINETUNE_SPLITS[dataset])
            summary = run_finetune(cfg, splits=self.finetune_splits(dataset))
            print(f"[{folder.name}] {summary['steps']} steps, OA {100 * summary['overall_accuracy']:.1f}", flush=True)
        saved = json.loads(path.read_text())
        return [y == p for y, p in zip(saved["label"], saved["prediction"])]

    def finetune_splits(self, dataset: str) -> tuple[Any, Any]:
        if not hasattr(self, "_finetune_splits"):
            self._finetune_splits = {}
        if dataset not in self._finetune_splits:
            self._finetune_splits[dataset] = load_finetune_splits(dataset, self.args.data_root, image_size=64,
                                                                  **FINETUNE_SPLITS[dataset])
        return self._finetune_splits[dataset]

    @property
    def finetune_inits(self) -> list[str]:
        return [i for i in self.args.finetune_inits.split(",") if i and i != "none"]

    def finetune_rows(self) -> list[dict[str, Any]]:
        """SSKDNet vs plain fine-tuning per init x dataset: ``sskdnet - finetune`` with its bootstrap interval over
        seeds and test images (the fine-tuned network's accuracy, ``protocol`` ``finetune``)."""
        rows = []
        for init in self.finetune_inits:
            label = "random init" if init == "random" else f"{init}'s backbone"
            for dataset in FINETUNE_SPLITS:
                if dataset not in self.args.datasets.split(","):
                    continue
                per_seed = {s: [self.finetune_correct(m, init, dataset, s) for m in ("finetune", "sskdnet")]
                            for s in self.args.seeds}
                seeds = [s for s, (a, b) in per_seed.items() if a is not None and b is not None]
                if not seeds:
                    continue
                a, b = [per_seed[s][0] for s in seeds], [per_seed[s][1] for s in seeds]
                first = read_finetune_summary(self.out / "finetune" / f"finetune_{init}_{dataset}_s{seeds[0]}" /
                                              "metrics.json")
                rows.append({"comparison": f"sskdnet - finetune, from {label}", "a": f"finetune[{init}]",
                             "b": f"sskdnet[{init}]", "claim": f"{FINETUNE_CLAIM} ({label})", "dataset": dataset,
                             "protocol": "finetune", "seed_list": seeds, "n_train": first["n_train"],
                             "epochs": first["epochs"], **paired_difference(a, b)})
        return rows

    # --- stage 4 -------------------------------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        bases = self.args.bases.split(",")
        random_scores = self.random_scores()
        rows = []
        for comparison in comparisons(bases, self.args.ablations, self.groups):
            seeds = self.paired_seeds(comparison)
            if not seeds or (is_random(comparison.a) and comparison.a not in random_scores):
                continue
            for key in self.runs[(comparison.b, seeds[0])]["scores"]:
                a = [random_scores[comparison.a][key] if is_random(comparison.a)
                     else self.runs[(comparison.a, s)]["scores"][key] for s in seeds]
                b = [self.runs[(comparison.b, s)]["scores"][key] for s in seeds]
                dataset, protocol = key.split("/")
                steps = {arm: [self.runs[(arm, s)]["record"]["steps"] for s in seeds] for arm in (comparison.a,
                         comparison.b) if not is_random(arm)}
                rows.append({"comparison": comparison.label, "a": comparison.a, "b": comparison.b,
                             "claim": comparison.claim, "dataset": dataset, "protocol": protocol, "seed_list": seeds,
                             "steps": steps, **paired_difference(a, b)})
        finetune_rows = self.finetune_rows()
        claims = judge_claims([r for r in rows + finetune_rows if r["claim"]])  # controls claim nothing
        dense_rows = self.dense_report(bases) if self.dense_tasks else []
        return {
            "steps": self.args.steps, "tune_steps": self.args.tune_steps, "seeds": self.args.seeds,
            "probe_per_class": self.args.probe_per_class, "tuned": self.tuned, "term": TERM_OVERRIDES,
            "equal_time": json.loads((self.out / "equal_time.json").read_text())
            if (self.out / "equal_time.json").is_file() else {},
            "tune": json.loads((self.out / "tune.json").read_text()) if (self.out / "tune.json").is_file() else {},
            "random_init": {arm: {k: round(100 * sum(v) / len(v), 2) for k, v in scores.items()}
                            for arm, scores in random_scores.items()},
            "arms": [{"arm": arm, "seed": seed, "steps": r["record"]["steps"], "cpu_s_per_step": r["cpu_s_per_step"],
                      "images_per_s": r["record"]["images_per_s"],
                      **{k: round(100 * sum(v) / len(v), 2) for k, v in r["scores"].items()}}
                     for (arm, seed), r in sorted(self.runs.items(), key=lambda kv: (kv[0][1], kv[0][0]))],
            "rows": rows, "claims": claims, "dense_rows": dense_rows, "dense_epochs": self.args.dense_epochs,
            "finetune_rows": finetune_rows, "finetune_epochs": self.args.finetune_epochs,
            "finetune_splits": FINETUNE_SPLITS,
            "failed": self.failed,
        }


    def paired_seeds(self, comparison: Comparison) -> list[int]:
        """The seeds at which both arms of ``comparison`` are finished (a random init always is)."""
        return [s for s in self.args.seeds if (comparison.b, s) in self.runs
                and (is_random(comparison.a) or (comparison.a, s) in self.runs)]

    def random_scores(self) -> dict[str, dict[str, list[bool]]]:
        """The fixed random init's scores, with the input conventions of the first finished arm of the main group
        (``random-init``) and of each other group (``group:random-init``: standardised with the target's statistics,
        as that group's arms)."""
        out = {}
        for group in ["", *self.groups]:
            like = self.first_checkpoint(group)
            if like is None:
                continue
            arm = f"{group}:random-init" if group else "random-init"
            folder = self.out / (f"{group}_random_init" if group else "random_init")
            out[arm] = score_backbone("random-init", None, self.test_splits(), folder, 0, like=like,
                                      target_statistics=bool(group))
        return out

    def dense_report(self, bases: list[str]) -> list[dict[str, Any]]:
        """Per comparison and dense task: ``b - a`` per seed (each arm fine-tuned with one schedule and seed) with a
        t interval over the seeds (a dense score has no per-image decomposition to bootstrap over)."""
        scores: dict[tuple[str, int], dict[str, float | None]] = {}
        rows = []
        for comparison in comparisons(bases, self.args.ablations, self.groups):
            if self.args.dense_comparisons == "equal-steps" and (
                    EQUAL_TIME in comparison.b or "*" in comparison.a + comparison.b or comparison.a in ABLATIONS):
                continue
            seeds = self.paired_seeds(comparison)
            for seed in seeds:
                for arm in (comparison.a, comparison.b):
                    if (arm, seed) not in scores:
                        scores[(arm, seed)] = self.dense_scores(arm, seed)
            for task in self.dense_tasks:
                done = [s for s in seeds if scores[(comparison.a, s)][task] is not None
                        and scores[(comparison.b, s)][task] is not None]  # --report-only: what is scored
                if not done:
                    continue
                a = [scores[(comparison.a, s)][task] for s in done]
                b = [scores[(comparison.b, s)][task] for s in done]
                diff = t_interval([100 * (y - x) for x, y in zip(a, b)])
                rows.append({"comparison": comparison.label, "a": comparison.a, "b": comparison.b, "task": task,
                             "metric": DENSE_METRICS[task], "seed_list": done,
                             "a_scores": [round(100 * x, 2) for x in a], "b_scores": [round(100 * y, 2) for y in b],
                             "difference": round(diff["mean"], 2),
                             "ci95": [round(v, 2) for v in diff["ci95"]] if diff["ci95"] else None})
        return rows


COLUMNS = (("eurosat", "linear"), ("eurosat", "knn"), ("ucmerced", "linear"), ("ucmerced", "knn"))


def summary_tables(payload: dict[str, Any]) -> list[str]:
    """The two compact tables of the README: one row per comparison (b - a [95 % CI] per dataset x protocol), one
    row per arm (steps per seed, training CPU s/step of the unresumed runs, mean accuracy over seeds)."""
    heads = " | ".join(f"{'EuroSAT' if d == 'eurosat' else 'UC Merced'} {'kNN' if p == 'knn' else p}" for d, p in COLUMNS)
    lines = [f"| comparison (b - a) | seeds | {heads} |", "|---|---|" + "---|" * len(COLUMNS)]
    for comparison in dict.fromkeys(r["comparison"] for r in payload["rows"]):
        rows = {(r["dataset"], r["protocol"]): r for r in payload["rows"] if r["comparison"] == comparison}
        cells = [f"{r['difference']:+.1f} [{r['ci_low']:+.1f}, {r['ci_high']:+.1f}]" if (r := rows.get(c)) else "–"
                 for c in COLUMNS]
        lines.append(f"| {comparison} | {next(iter(rows.values()))['seeds']} | " + " | ".join(cells) + " |")
    lines += ["", f"| arm | steps | CPU s/step | {heads} |", "|---|---|---|" + "---|" * len(COLUMNS)]
    arms: dict[str, list[dict[str, Any]]] = {}
    for arm in payload["arms"]:
        arms.setdefault(arm["arm"], []).append(arm)
    for arm, runs in arms.items():
        costs = [r["cpu_s_per_step"] for r in runs if r["cpu_s_per_step"]]
        cost = f"{sum(costs) / len(costs):.2f}" if costs else "–"
        means = [f"{sum(r[f'{d}/{p}'] for r in runs) / len(runs):.1f}" if all(f"{d}/{p}" in r for r in runs) else "–"
                 for d, p in COLUMNS]
        lines.append(f"| {arm} | {'/'.join(str(r['steps']) for r in runs)} | {cost} | " + " | ".join(means) + " |")
    for arm, scores in payload["random_init"].items():
        means = [f"{scores[f'{d}/{p}']:.1f}" if f"{d}/{p}" in scores else "–" for d, p in COLUMNS]
        lines.append(f"| {arm} | – | – | " + " | ".join(means) + " |")
    return lines


def format_report(payload: dict[str, Any]) -> str:
    lines = [f"Knowledge study: paired differences b - a in points, 95 % bootstrap CI over seeds and test images; "
             f"{payload['steps']} steps (equal-time arms: the base's CPU time); probes on {payload['probe_per_class']} "
             "training images per class", "",
             "| comparison | dataset | protocol | a per seed | b per seed | b - a [95 % CI] | verdict | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for r in payload["rows"]:
        lines.append(f"| {r['comparison']} | {r['dataset']} | {r['protocol']} | {', '.join(map(str, r['a']))} | "
                     f"{', '.join(map(str, r['b']))} | {r['difference']:+.2f} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"
                     f" | {r['verdict']} | {r['seeds']} |")
    if payload["dense_rows"]:
        lines += ["", f"Dense transfer ({payload['dense_epochs']} fine-tuning epochs, default schedule): b - a per "
                  "seed, mean [95 % t interval over seeds]", "",
                  "| comparison | task (metric) | a per seed | b per seed | b - a [95 % CI] |", "|---|---|---|---|---|"]
        for r in payload["dense_rows"]:
            ci = f" [{r['ci95'][0]:+.2f}, {r['ci95'][1]:+.2f}]" if r["ci95"] else ""
            lines.append(f"| {r['comparison']} | {r['task']} ({r['metric']}) | {', '.join(map(str, r['a_scores']))} | "
                         f"{', '.join(map(str, r['b_scores']))} | {r['difference']:+.2f}{ci} |")
    if payload.get("finetune_rows"):
        lines += ["", f"SSKDNet vs plain fine-tuning ({payload['finetune_epochs']} epochs, ResNet-18 at 64 px, "
                  "batch 32; test accuracy of the fine-tuned network): b - a in points, 95 % bootstrap CI over seeds "
                  "and test images", "", "| comparison | dataset (train / test) | finetune per seed | sskdnet per seed | "
                  "b - a [95 % CI] | verdict | seeds |", "|---|---|---|---|---|---|---|"]
        for r in payload["finetune_rows"]:
            lines.append(f"| {r['comparison']} | {r['dataset']} ({r['n_train']} / {r['n_test']}) | "
                         f"{', '.join(map(str, r['a']))} | {', '.join(map(str, r['b']))} | {r['difference']:+.2f} "
                         f"[{r['ci_low']:+.2f}, {r['ci_high']:+.2f}] | {r['verdict']} | {r['seeds']} |")
    lines += ["", "Summary (means over seeds; CPU s/step of runs not resumed):", "", *summary_tables(payload)]
    lines += ["", "| claim | verdict | evidence |", "|---|---|---|"]
    lines += [f"| {c['claim']} | {c['verdict']} | {c['evidence']} |" for c in payload["claims"]]
    if payload["tuned"]:
        lines += ["", "Tuned on EuroSAT val: " + "; ".join(f"{b}: {t}" for b, t in payload["tuned"].items())]
    return "\n".join(lines)


def plot(payload: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = payload["rows"] + payload.get("finetune_rows", [])
    if not rows:
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 0.32 * len(rows) + 2), gridspec_kw={"width_ratios": [3, 1]})
    y = np.arange(len(rows))
    diffs = np.array([r["difference"] for r in rows])
    err = np.array([[r["difference"] - r["ci_low"], r["ci_high"] - r["difference"]] for r in rows]).T
    colours = ["tab:green" if r["ci_low"] > 0 else "tab:red" if r["ci_high"] < 0 else "tab:gray" for r in rows]
    for i in range(len(rows)):
        left.errorbar(diffs[i], y[i], xerr=err[:, i:i + 1], fmt="o", color=colours[i], capsize=3)
    left.axvline(0, color="k", lw=0.8)
    left.set_yticks(y, [f"{r['comparison']} | {r['dataset']} {r['protocol']}" for r in rows], fontsize=7)
    left.invert_yaxis()
    left.set_xlabel("accuracy difference b - a (points, 95 % CI over seeds and test images)")
    # the costs that set the equal-time arms (each pair's base, term and equal-time arm); the other arms' clocks
    # (ablations, the weight sweep) may have run beside other work and are in the JSON only
    timed = {a["arm"] for a in payload["arms"] if a["arm"].endswith(EQUAL_TIME)}
    timed |= {t.removesuffix(EQUAL_TIME) for t in timed} | {t.partition("+")[0] for t in timed}
    arms = [a for a in dict.fromkeys(a["arm"] for a in payload["arms"]) if a in timed]
    cost = [np.mean([a["cpu_s_per_step"] for a in payload["arms"] if a["arm"] == arm and a["cpu_s_per_step"]] or [0])
            for arm in arms]
    right.barh(arms, cost, color="tab:blue")
    right.invert_yaxis()
    right.set_xlabel("training CPU s/step\n(equal-time pairs)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _finished_run(run_dir: Path, record: dict[str, Any], scores: dict[str, list[bool]]) -> dict[str, Any]:
    """One finished arm: its training record, per-image scores and training CPU seconds per step. The cost is None
    for a resumed run: its clock covers only the steps after the resume, made under whatever else ran then (a
    2-core machine's OpenMP threads burn CPU waiting when oversubscribed)."""
    clock = json.loads((run_dir / "clock.json").read_text())
    cost = None if clock["steps"] != record["steps"] else round(clock["cpu_seconds"] / max(clock["steps"], 1), 4)
    return {"record": record, "scores": scores, "cpu_s_per_step": cost}


def _folder(arm: str, seed: int) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{arm}_s{seed}")


def _get(cfg, dotted: str) -> Any:
    section, key = dotted.split(".")
    part = getattr(cfg, section)
    return part[key] if isinstance(part, dict) else getattr(part, key)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/knowledge_study")
    parser.add_argument("--bases", default=",".join(BASES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--tune-steps", type=int, default=200)
    parser.add_argument("--no-ablations", dest="ablations", action="store_false")
    parser.add_argument("--groups", default=",".join(GROUPS),
                        help="arm groups on other data (zion: moco vs moco+land_cover on Zion tiles), or 'none'")
    parser.add_argument("--datasets", default="eurosat,ucmerced")
    parser.add_argument("--probe-per-class", type=int, default=100)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--dense", default="segmentation,change",
                        help="dense tasks every arm is also fine-tuned on (Dubai, LEVIR-CD samples), or 'none'")
    parser.add_argument("--dense-epochs", type=int, default=2)
    parser.add_argument("--dense-comparisons", choices=("equal-steps", "all"), default="equal-steps",
                        help="which comparisons get dense rows: each term at equal steps and each base vs random init "
                             "(a dense score costs ~2 CPU minutes per backbone on 2 cores), or all")
    parser.add_argument("--finetune-inits", default="random,moco",
                        help="SSKDNet vs plain fine-tuning from these inits: random and/or bases (their backbone of "
                             "the same seed), or 'none'")
    parser.add_argument("--finetune-epochs", type=int, default=7)
    parser.add_argument("--report-only", action="store_true", help="tabulate what is finished; train nothing")
    parser.add_argument("--json", default=None, help="also write the results JSON here (plus .md and .png beside)")
    args = parser.parse_args(argv)
    bad_tasks = [t for t in args.dense.split(",") if t and t != "none" and t not in DENSE_METRICS]
    if bad_tasks:
        parser.error(f"--dense: {', '.join(bad_tasks)} not among {', '.join(DENSE_METRICS)} (or none)")
    bad_groups = [g for g in args.groups.split(",") if g and g != "none" and g not in GROUPS]
    if bad_groups:
        parser.error(f"--groups: {', '.join(bad_groups)} not among {', '.join(GROUPS)} (or none)")
    bad_inits = [i for i in args.finetune_inits.split(",") if i and i not in ("none", "random", *BASES)]
    if bad_inits:
        parser.error(f"--finetune-inits: {', '.join(bad_inits)} not among random, {', '.join(BASES)} (or none)")
    unknown = [b for b in args.bases.split(",") if b not in BASES]
    if unknown:
        parser.error(f"--bases: {', '.join(unknown)} not among {', '.join(BASES)}")
    study = Study(args, Path(args.out))
    start = time.perf_counter()
    tuned_path = study.out / "tune.json"
    for base in args.bases.split(","):
        if args.report_only:
            tuned = json.loads(tuned_path.read_text()) if tuned_path.is_file() else {}
            if base in tuned:
                study.tuned[base] = tuned[base]["best"]
        else:
            study.tuned[base] = study.tune(base)
    if args.report_only:
        study.collect_finished()
    else:
        for arm, seed in study.arms():
            study.train_and_score(arm, seed)
    payload = {**study.report(), "wall_s": round(time.perf_counter() - start, 1), "protocols": list(PROTOCOLS)}
    table = format_report(payload)
    print(table)
    write_json(study.out / "results.json", payload)
    if args.json:
        path = Path(args.json)
        write_json(path, payload)
        path.with_suffix(".md").write_text(table + "\n")
        plot(payload, path.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
