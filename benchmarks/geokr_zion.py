"""GeoKR on the Zion Landsat 8 scene: does land-cover pretraining help on a spatially disjoint region of it?

Protocol (issue #5's evidence):

1. The scene (1128 x 1428 px, 30 m, 4 bands) is cut into a western pretraining region and an eastern held-out
   region with a gap of at least one tile between them (no pixel of a pretraining tile is in, or within one tile
   of, a held-out tile).
2. GeoKR (``geokr_resnet18_zion``: ResNet-18 from scratch, 4 bands, NLCD 2011 in 8 classes as labels) is pretrained
   on the western tiles for a fixed CPU budget (``trainer.budget_minutes``, via :func:`rspretrain.pretrain.run.pretrain`).
3. Downstream task, on the eastern region only: each 64 px tile's dominant NLCD class (8-class scheme). The
   region is split into a northern and a southern half with a one-tile gap; a probe is fitted on all tiles of one
   half (stride 32) and scored on the non-overlapping tiles (stride 64) of the other, both ways (2-fold spatial
   cross-fitting), so every scored tile is predicted once by a probe that never saw its neighbourhood.
4. Frozen-feature protocols (:mod:`rspretrain.downstream.frozen`): weighted kNN (k 10, t 0.07) and the linear probe, for
   the GeoKR teacher (the exported network), the GeoKR student, a random-init ResNet-18 with the same input
   conventions, the same random network with BatchNorm statistics re-estimated on the pretraining tiles (so the
   gap to it is what learned weights add beyond BN calibration), the image-statistics baseline (per-band
   mean/std/percentiles), and the majority class of the training half. Accuracy with a 95 % percentile-bootstrap CI over held-out tiles; balanced accuracy; and the
   paired-bootstrap 95 % CI of each model's accuracy minus random-init's. A finer second read-out: ridge regression
   from the frozen features to all 8 class proportions of each held-out tile (R^2, variance-weighted, with a
   bootstrap CI), beside predicting the training half's mean proportions.

Writes the one report (``<out>/metrics.json`` with provenance, ``<out>/scores.png``), then ``<out>/results.md`` with
the paired differences and the land-cover regression added, and prints it.
A finished pretraining run (its final checkpoint and ``budget.json``) is reused, so an interrupted benchmark can
be re-run to finish.

Optional ``--rgb-transfer``: also pretrain a 3-band (b4, b3, b2 = red, green, blue) GeoKR backbone on the same
western region and score it against random init on EuroSAT and UC Merced (kNN + linear probe; both encoders
standardised with the target dataset's own per-band statistics, since Landsat DN and 8-bit photos share no scale).

Example (about 10 CPU minutes on 2 cores: 7 min of pretraining, ~1 min setup, ~1 min evaluation):
    python benchmarks/geokr_zion.py --budget-minutes 7 --out runs/geokr_zion
With the RGB transfer (about +7 min of pretraining and +8 min of EuroSAT/UC Merced feature extraction):
    python benchmarks/geokr_zion.py --budget-minutes 7 --out runs/geokr_zion --rgb-transfer \\
        --transfer-max-train-per-class 100
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import RidgeCV
from sklearn.metrics import balanced_accuracy_score, r2_score

from rspretrain.core.checkpoint_io import atomic_write_text
from rspretrain.core.json_io import write_json
from rspretrain.data import DominantClassTiles, LandCoverTiles, default_data_root, read_raster
from rspretrain.data.band_statistics import band_statistics
from rspretrain.downstream.frozen import (
    EncoderSpec,
    Result,
    bootstrap_accuracy,
    evaluate_scene_classification,
    extract_features,
    format_table,
    image_statistics_features,
)
from rspretrain.downstream.frozen.knn import knn_predict
from rspretrain.downstream.frozen.linear_probe import linear_probe_predict
from rspretrain.downstream.report.writer import report_meta, write_report
from rspretrain.downstream.sources import random_init_spec
from rspretrain.pretrain.config import load_config
from rspretrain.pretrain.run import load_checkpoint, load_method, pretrain

ZION = "zion_landsat8_nlcd2011"
BAND_FILES = {b: f"{ZION}/landsat8_LC80380342015230_{b}.tif" for b in ("b2", "b3", "b4", "b5")}
TASK = "zion-east dominant NLCD class"


# -- regions ---------------------------------------------------------------------------------------------------
def regions(data_root: Path, tile: int, west_fraction: float, gap_tiles: int) -> dict[str, Any]:
    """CRS bounds of the western (pretraining) and eastern (held-out) regions, ``gap_tiles`` tiles apart."""
    raster = read_raster([data_root / BAND_FILES["b2"]])
    t = raster.transform
    minx, maxy = t.c, t.f
    maxx, miny = minx + t.a * raster.width, maxy + t.e * raster.height
    split_col = round(raster.width * west_fraction)
    east_col = split_col + gap_tiles * tile
    pixel = t.a
    return {
        "west": (minx, miny, minx + split_col * pixel, maxy),
        "east": (minx + east_col * pixel, miny, maxx, maxy),
        "west_cols": [0, split_col],
        "east_cols": [east_col, raster.width],
        "gap_px": gap_tiles * tile,
    }


def train_geokr(name: str, out: Path, budget: float, data_root: Path, west: tuple, bands: list[str],
                batch_size: int) -> dict[str, Any]:
    """Pretrain GeoKR on the western region for ``budget`` minutes (reused when already done)."""
    run_dir = out / name
    final = run_dir / "checkpoints" / "last.ckpt"
    info_path = run_dir / "budget.json"
    if final.is_file() and info_path.is_file():
        print(f"[{name}] already trained: {final}")
        return json.loads(info_path.read_text())
    settings = {
        "data.root": str(data_root),
        "data.dataset": "landcover:" + ",".join(BAND_FILES[b] for b in bands),
        "data.dataset_options.within": list(west),
        "data.batch_size": batch_size,
        "trainer.out_dir": str(run_dir),
        "trainer.budget_minutes": budget,
        "trainer.max_steps": 1_000_000,
        "trainer.ckpt_every_n_steps": 500,
    }
    cfg = load_config("geokr_resnet18_zion", settings)
    print(f"[{name}] pretraining GeoKR on the western region ({'/'.join(bands)}) for {budget} min")
    start = time.perf_counter()
    final = pretrain(cfg)
    seconds = time.perf_counter() - start
    steps = load_checkpoint(final)["global_step"]
    with open(run_dir / "logs" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
    last = rows[-1] if rows else {}
    model = load_method(final)
    info = {
        "run": name, "bands": bands, "steps": steps, "batch_size": batch_size,
        "wall_seconds_incl_setup": round(seconds, 1),
        "tiles_per_s": round(steps * batch_size / (budget * 60), 1),
        "teacher_updates": model.teacher_updates(steps, batch_size),
        "final": {k.removeprefix("train/"): float(v) for k, v in last.items() if k.startswith("train/") and v},
    }
    write_json(info_path, info)
    return info


# -- evaluation -----------------------------------------------------------------------------------------------
def spatial_folds(tiles: LandCoverTiles, tile: int, gap: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Two (train, test) folds: north half vs south half of the region, ``gap`` CRS units apart.

    Training sets take every tile of their half (stride ``tile / 2``: overlapping tiles are fine within one side);
    test sets only the non-overlapping ones (on a ``tile``-pixel grid), so test tiles share no pixel.
    """
    bounds = tiles.bounds
    windows = tiles.tiles.windows[tiles.tile_index]
    on_grid = ((windows[:, 0] - windows[:, 0].min()) % tile == 0) & ((windows[:, 1] - windows[:, 1].min()) % tile == 0)
    split = float(np.median((bounds[:, 1] + bounds[:, 3]) / 2))
    north = bounds[:, 1] >= split + gap / 2
    south = bounds[:, 3] <= split - gap / 2
    return [
        (np.flatnonzero(north), np.flatnonzero(south & on_grid)),
        (np.flatnonzero(south), np.flatnonzero(north & on_grid)),
    ]


def cross_fit(protocol: str, x: np.ndarray, y: np.ndarray, folds, num_classes: int, knn_k: int,
              standardise: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Predictions for every test tile of the folds, each from a probe fitted on the other half."""
    test_index = np.concatenate([te for _, te in folds])
    preds = np.empty(len(test_index), dtype=np.int64)
    at = 0
    for train, test in folds:
        xtr, xte = x[train], x[test]
        if standardise:  # hand-made statistics mix scales; z-score with the training half only
            mean, std = xtr.mean(0), xtr.std(0)
            std[std == 0] = 1.0
            xtr, xte = (xtr - mean) / std, (xte - mean) / std
        if protocol == "knn":
            p = knn_predict(xtr, y[train], xte, num_classes, k=knn_k, temperature=0.07)
        elif protocol == "linear":
            p = linear_probe_predict(xtr, y[train], xte)
        else:  # majority class of the training half
            p = np.full(len(test), np.bincount(y[train], minlength=num_classes).argmax())
        preds[at : at + len(test)] = p
        at += len(test)
    return test_index, preds


def proportion_regression(x: np.ndarray | None, targets: np.ndarray, folds, n: int = 2000,
                          seed: int = 0) -> list[float]:
    """R^2 (variance-weighted over classes) of ridge regression from frozen features to the class proportions,
    cross-fitted over the folds, with a percentile-bootstrap 95 % CI over scored tiles. ``x`` None: predict the
    training half's mean proportions (the trivial baseline, R^2 <= 0)."""
    test_index = np.concatenate([te for _, te in folds])
    preds = np.empty((len(test_index), targets.shape[1]))
    at = 0
    for train, test in folds:
        if x is None:
            p = np.broadcast_to(targets[train].mean(0), (len(test), targets.shape[1]))
        else:
            mean, std = x[train].mean(0), x[train].std(0)
            std[std == 0] = 1.0
            ridge = RidgeCV(alphas=np.logspace(-1, 4, 11)).fit((x[train] - mean) / std, targets[train])
            p = ridge.predict((x[test] - mean) / std)
        preds[at : at + len(test)] = p
        at += len(test)
    truth = targets[test_index]
    r2 = r2_score(truth, preds, multioutput="variance_weighted")
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(n):
        idx = rng.integers(0, len(truth), len(truth))
        if truth[idx].var(0).sum() > 0:
            boot.append(r2_score(truth[idx], preds[idx], multioutput="variance_weighted"))
    return [float(r2), *map(float, np.quantile(boot, [0.025, 0.975]))]


def paired_difference(correct_a: np.ndarray, correct_b: np.ndarray, n: int = 2000, seed: int = 0) -> list[float]:
    """Accuracy of a minus b and its paired percentile-bootstrap 95 % CI (same resampled tiles for both)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(correct_a), size=(n, len(correct_a)))
    diffs = correct_a[idx].mean(1) - correct_b[idx].mean(1)
    return [float(correct_a.mean() - correct_b.mean()), *map(float, np.quantile(diffs, [0.025, 0.975]))]


@torch.no_grad()
def recalibrated_random_init(spec: EncoderSpec, images: list[Path], west: tuple, value_scale: float) -> EncoderSpec:
    """Random-init weights with BatchNorm statistics re-estimated on the pretraining (western) tiles.

    A GeoKR teacher differs from a random network in its weights *and* in BatchNorm running statistics fitted to
    Landsat tiles; this control has only the latter, so the gap to it is what the learned weights add.
    """
    import copy

    from rspretrain.data import RasterTiles
    from rspretrain.downstream.frozen import preprocess_images

    encoder = copy.deepcopy(spec.encoder)
    for module in encoder.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over all batches
    tiles = RasterTiles(read_raster(images), tile=64, stride=48, within=west)
    encoder.train()
    for start in range(0, len(tiles), 128):
        batch = tiles.__getitems__(list(range(start, min(start + 128, len(tiles)))))["image"]
        encoder(preprocess_images(batch, value_scale, spec.mean, spec.std, spec.image_size))
    return EncoderSpec("random-init+bn", encoder.eval(), spec.mean, spec.std, spec.image_size, spec.band_names)


def evaluate_zion(out: Path, data_root: Path, east: tuple, west: tuple, run: str, tile: int, gap_tiles: int,
                  knn_k: int) -> dict[str, Any]:
    images = [data_root / BAND_FILES[b] for b in ("b2", "b3", "b4", "b5")]
    held_out = LandCoverTiles.from_files(images, land_cover=data_root / ZION / "nlcd2011.tif", scheme="nlcd8",
                                         tile=tile, stride=tile // 2, within=east)
    scene = DominantClassTiles(held_out)
    y = scene.labels.numpy()
    num_classes = len(scene.classes)
    folds = spatial_folds(held_out, tile, gap_tiles * tile * abs(held_out.tiles.raster.transform.a))
    method = load_method(out / run / "checkpoints" / "last.ckpt")
    conventions = (method.mean, method.std, method.views.image_size, method.band_names)
    teacher = method.teacher.module["backbone"].eval()
    student = method.student["backbone"].eval()
    random = random_init_spec(teacher.arch, teacher.in_chans, method.views.image_size, method.mean, method.std,
                              method.band_names)
    specs = [
        EncoderSpec("geokr-teacher", teacher, *conventions),
        EncoderSpec("geokr-student", student, *conventions),
        random,
        recalibrated_random_init(random, images, west, held_out.value_scale),
    ]
    features: dict[str, tuple[np.ndarray, bool]] = {}
    stats, _ = image_statistics_features(scene)
    features["image-statistics"] = (stats, True)
    for spec in specs:
        features[spec.name] = (extract_features(spec, scene, batch_size=128)[0], False)

    results: list[Result] = []
    correct: dict[tuple[str, str], np.ndarray] = {}
    for protocol in ("knn", "linear"):
        for name, (x, standardise) in [("majority-class", (np.zeros((len(y), 1)), False)), *features.items()]:
            test_index, preds = cross_fit("majority" if name == "majority-class" else protocol, x, y, folds,
                                          num_classes, knn_k, standardise)
            truth = y[test_index]
            ok = preds == truth
            correct[(name, protocol)] = ok
            acc, lo, hi = bootstrap_accuracy(ok, n_resamples=2000, seed=0)
            extra = {"balanced_accuracy": float(balanced_accuracy_score(truth, preds)),
                     "feature_dim": int(x.shape[1]), **({"k": knn_k} if protocol == "knn" else {})}
            n_train = int(sum(len(tr) for tr, _ in folds) // 2)
            results.append(Result.accuracy(name, TASK, protocol, acc, lo, hi, n_train, len(truth), extra))
    targets = held_out.targets.numpy().astype(np.float64)
    regression = {"mean-proportions": proportion_regression(None, targets, folds)}
    for name, (x, _) in features.items():
        regression[name] = proportion_regression(x, targets, folds)
    for r in results:
        if r.model not in ("random-init", "majority-class"):
            r.extra["minus_random_init"] = paired_difference(correct[(r.model, r.task)],
                                                             correct[("random-init", r.task)])
    test_index = np.concatenate([te for _, te in folds])
    counts = np.bincount(y[test_index], minlength=num_classes)
    task = {
        "held_out_tiles": len(held_out), "scored_tiles": len(test_index),
        "fold_sizes": [[len(tr), len(te)] for tr, te in folds],
        "class_counts_scored": {c: int(n) for c, n in zip(scene.classes, counts) if n},
        "dropped_outside": held_out.dropped_outside, "dropped_no_land_cover": held_out.dropped_no_land_cover,
    }
    return {"results": results, "task": task, "proportion_r2": regression}


def evaluate_rgb_transfer(out: Path, run: str, data_root: Path, max_train_per_class: int | None) -> list[Result]:
    """RGB GeoKR teacher vs random init on EuroSAT and UC Merced, each re-standardised to the target data."""
    from rspretrain.downstream.frozen import load_scene_splits

    method = load_method(out / run / "checkpoints" / "last.ckpt")
    teacher = method.teacher.module["backbone"].eval()
    results: list[Result] = []
    for dataset in ("eurosat", "ucmerced"):
        train, _ = load_scene_splits(dataset, data_root, max_train_per_class)
        mean, std = band_statistics(train)
        size = 64 if dataset == "eurosat" else 256
        specs = [
            EncoderSpec("geokr-rgb-teacher", teacher, mean, std, size),
            random_init_spec(teacher.arch, 3, size, mean, std),
        ]
        results += evaluate_scene_classification(specs, [dataset], root=data_root,
                                                 max_train_per_class=max_train_per_class, n_resamples=2000)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-minutes", type=float, default=7.0, help="pretraining budget per GeoKR run")
    parser.add_argument("--out", default="runs/geokr_zion")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--west-fraction", type=float, default=0.5, help="share of the columns used for pretraining")
    parser.add_argument("--gap-tiles", type=int, default=1, help="tiles between pretraining and held-out regions")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--knn-k", type=int, default=10,
                        help="kNN neighbours (10: a probe set of a few hundred tiles, not DINO's ImageNet-sized 20)")
    parser.add_argument("--rgb-transfer", action="store_true", help="also an RGB GeoKR backbone on EuroSAT/UC Merced")
    parser.add_argument("--transfer-max-train-per-class", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = Path(args.out)
    data_root = Path(args.data_root) if args.data_root else default_data_root()
    tile = 64
    geometry = regions(data_root, tile, args.west_fraction, args.gap_tiles)
    runs = [train_geokr("geokr_4band", out, args.budget_minutes, data_root, geometry["west"],
                        ["b2", "b3", "b4", "b5"], args.batch_size)]
    evaluation = evaluate_zion(out, data_root, geometry["east"], geometry["west"], "geokr_4band", tile,
                               args.gap_tiles, args.knn_k)
    results = evaluation["results"]
    if args.rgb_transfer:
        runs.append(train_geokr("geokr_rgb", out, args.budget_minutes, data_root, geometry["west"],
                                ["b4", "b3", "b2"], args.batch_size))
        results = results + evaluate_rgb_transfer(out, "geokr_rgb", data_root, args.transfer_max_train_per_class)

    meta = report_meta("geokr_zion", vars(args), 0,
                       budget_minutes=args.budget_minutes, regions=geometry, runs=runs, held_out=evaluation["task"],
                       proportion_r2=evaluation["proportion_r2"],
                       protocols={"knn": {"k": args.knn_k, "temperature": 0.07},
                                  "linear": {"C": 1.0, "standardised": True},
                                  "bootstrap": {"n_resamples": 2000, "confidence": 0.95}})
    write_report(out, results, meta, title="GeoKR (Zion, NLCD 2011) vs random init, frozen features")
    table = format_table(results)
    lines = [f"# GeoKR on Zion: held-out east region, {args.budget_minutes} min CPU pretraining", "", table, ""]
    for r in results:
        if "minus_random_init" in r.extra:
            d, lo, hi = (100 * v for v in r.extra["minus_random_init"])
            lines.append(f"- {r.dataset} / {r.task}: {r.model} minus random-init = {d:+.1f} pp "
                         f"[{lo:+.1f}, {hi:+.1f}] (paired bootstrap 95 % CI)")
    for r in results:
        if "balanced_accuracy" in r.extra:
            lines.append(f"- balanced accuracy {r.task} {r.model}: {100 * r.extra['balanced_accuracy']:.1f} %")
    lines += ["", "Land-cover proportions of held-out tiles from frozen features (ridge, cross-fitted; R^2, 95 % CI):", ""]
    for name, (r2, lo, hi) in evaluation["proportion_r2"].items():
        lines.append(f"- {name}: {r2:.3f} [{lo:.3f}, {hi:.3f}]")
    lines.append("")
    lines.append(f"Task: {json.dumps(evaluation['task'])}")
    for info in runs:
        lines.append(f"Run {info['run']}: {info['steps']} steps at batch {info['batch_size']}, "
                     f"{info['teacher_updates']} teacher updates, final {json.dumps(info['final'])}")
    atomic_write_text(out / "results.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"results: {out / 'metrics.json'}; plot: {out / 'scores.png'}; table: {out / 'results.md'}")


if __name__ == "__main__":
    main()
