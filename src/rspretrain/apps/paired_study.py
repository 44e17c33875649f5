"""Parts of the paired studies in ``benchmarks/``: per-image scores of a backbone, paired differences, verdicts.

A paired study trains two or more arms per seed that share one config and differ only in what is tested (the
seed fixes initial weights, data order and augmentation draws), scores every backbone by kNN and linear probe on
the same test images, and reports the difference ``b - a`` per dataset x protocol with a two-level bootstrap interval
over seeds and test images (:func:`~rspretrain.downstream.report.bootstrap.bootstrap_paired_difference`). Used by
``benchmarks/precision_parity.py`` (fast step vs fp32) and ``benchmarks/knowledge_study.py`` (knowledge terms).
"""

from __future__ import annotations

import json
import math
import statistics
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rspretrain.core.bands import check_bands
from rspretrain.core.json_io import write_json
from rspretrain.data.band_statistics import band_statistics
from rspretrain.downstream.frozen.features import EncoderSpec, extract_features
from rspretrain.downstream.frozen.scene_benchmark import PROTOCOLS, run_protocol
from rspretrain.downstream.report.bootstrap import bootstrap_accuracy, bootstrap_paired_difference
from rspretrain.downstream.sources import random_init_spec
from rspretrain.pretrain.run import load_method

__all__ = ["judge_claims", "paired_difference", "score_backbone", "t_interval", "verdict"]


#: a training split's band statistics (``target_statistics``), kept while the split lives
_TARGET_STATISTICS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def score_backbone(name: str, ckpt: Path | None, splits: dict, out: Path, seed: int,
                   like: Path | None = None, protocols: Sequence[str] = PROTOCOLS,
                   target_statistics: bool = False) -> dict[str, list[bool]]:
    """Per-test-image correctness of one backbone (``ckpt``'s, or the fixed random-init one with the input
    conventions of ``like``'s), ``{"dataset/protocol": [...]}`` over ``splits`` (``{dataset: (train, test)}``);
    cached in ``out/scores.json`` (a cache made for other datasets or protocols is scored again).

    ``target_statistics``: standardise each dataset's images with its own training split's band statistics instead of
    the checkpoint's (a backbone pretrained on other imagery, e.g. Landsat reflectance, scored on RGB photographs).
    """
    path = out / "scores.json"
    wanted = {f"{dataset}/{protocol}" for dataset in splits for protocol in protocols}
    if path.is_file():
        cached = json.loads(path.read_text())
        if set(cached) == wanted:
            return cached
    method = load_method(ckpt or like)
    backbone = method.backbone_to_export().eval()
    scores = {}
    for dataset, (train_set, test_set) in splits.items():
        mean, std, bands = method.mean, method.std, method.band_names
        if target_statistics:  # the bands are still checked against the dataset's (by count and meaning)
            if train_set not in _TARGET_STATISTICS:  # one dataset, many backbones: measured once
                _TARGET_STATISTICS[train_set] = band_statistics(train_set)
            mean, std = _TARGET_STATISTICS[train_set]
            check_bands(bands, getattr(train_set, "band_names", None), f"backbone {name!r} on {dataset}",
                        backbone.in_chans, len(mean))
        if ckpt is None:
            spec = random_init_spec(backbone.arch, backbone.in_chans, method.views.image_size, mean, std, bands)
        else:
            spec = EncoderSpec(name, backbone, mean, std, method.views.image_size, bands)
        train_x, train_y = extract_features(spec, train_set, batch_size=256, progress=False)
        test_x, test_y = extract_features(spec, test_set, batch_size=256, progress=False)
        for protocol in protocols:
            pred = run_protocol(protocol, train_x, train_y, test_x, len(train_set.classes), seed)
            scores[f"{dataset}/{protocol}"] = (pred == test_y).tolist()
    write_json(path, scores)
    return scores


def verdict(low: float, high: float, better: str = "b better", worse: str = "b worse") -> str:
    """What a paired difference's 95 % interval says: ``no difference`` when it includes zero, else ``better`` /
    ``worse`` (wholly above / below zero)."""
    if low > 0:
        return better
    if high < 0:
        return worse
    return "no difference"


def paired_difference(a: Sequence[Sequence[bool]], b: Sequence[Sequence[bool]], **verdict_words: str) -> dict[str, Any]:
    """``b - a`` of two arms' per-seed, per-image correctness (rows paired by seed), in points, with its 95 % interval
    over seeds and test images, each arm's per-seed accuracy and its pooled interval, and the verdict."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    diff, low, high = bootstrap_paired_difference(a, b, seed=0)
    return {
        "a": [round(100 * float(x.mean()), 2) for x in a], "b": [round(100 * float(x.mean()), 2) for x in b],
        "a_ci": [round(100 * v, 2) for v in bootstrap_accuracy(a.reshape(-1))[1:]],
        "b_ci": [round(100 * v, 2) for v in bootstrap_accuracy(b.reshape(-1))[1:]],
        "difference": round(100 * diff, 2), "ci_low": round(100 * low, 2), "ci_high": round(100 * high, 2),
        "verdict": verdict(low, high, **verdict_words), "seeds": int(a.shape[0]), "n_test": int(a.shape[1]),
    }


#: two-sided 95 % quantiles of Student's t for 1..9 degrees of freedom
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262)


def t_interval(diffs: Sequence[float]) -> dict[str, Any]:
    """Mean of per-seed paired differences with its 95 % t interval over the seeds (for scores without a per-image
    decomposition, e.g. a dense task's mIoU); one seed has no interval."""
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return {"mean": mean, "ci95": None, "per_seed": list(diffs)}
    half = _T95[min(len(diffs) - 2, len(_T95) - 1)] * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return {"mean": mean, "ci95": [mean - half, mean + half], "per_seed": list(diffs)}


def judge_claims(rows: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """One verdict per claim, from all its rows (each carries ``claim``, ``dataset``, ``protocol``, ``difference``,
    ``ci_low``, ``ci_high``, ``seeds``): *supported* when some interval lies above zero and none below, *not
    supported* when some lies below and none above, *mixed* when both happen (the rows are named), *undecided at this
    budget* when every interval includes zero."""
    out = []
    for claim in dict.fromkeys(r["claim"] for r in rows):
        mine = [r for r in rows if r["claim"] == claim]
        above = [f"{r['dataset']} {r['protocol']}" for r in mine if r["ci_low"] > 0]
        below = [f"{r['dataset']} {r['protocol']}" for r in mine if r["ci_high"] < 0]
        if above and below:
            word = f"mixed (better: {', '.join(above)}; worse: {', '.join(below)})"
        elif above:
            word = "supported"
        elif below:
            word = "not supported"
        else:
            word = "undecided at this budget"
        detail = "; ".join(f"{r['dataset']} {r['protocol']} {r['difference']:+.2f} [{r['ci_low']:+.2f}, "
                           f"{r['ci_high']:+.2f}]" for r in mine)
        seeds = sorted({r["seeds"] for r in mine})
        out.append({"claim": claim, "verdict": word, "evidence": f"{detail} (seeds: {', '.join(map(str, seeds))})"})
    return out
