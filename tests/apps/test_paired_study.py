"""Parts of the paired studies: per-image scores of a backbone (cached), paired differences, verdicts, claims."""

import json

import numpy as np
import pytest

from rspretrain.apps.paired_study import judge_claims, paired_difference, score_backbone, verdict


def test_verdict_reads_the_interval():
    assert verdict(0.1, 2.0) == "b better"
    assert verdict(-2.0, -0.1, worse="fast worse") == "fast worse"
    assert verdict(-0.1, 0.1) == "no difference"


def test_paired_difference_sees_a_small_consistent_gain_that_seed_noise_would_hide():
    rng = np.random.default_rng(0)
    # three seeds of very different luck (60 %, 75 %, 90 %); b fixes 20 of a's errors in every seed
    a = np.stack([rng.random(500) < p for p in (0.6, 0.75, 0.9)])
    b = a.copy()
    for row in b:
        row[np.flatnonzero(~row)[:20]] = True
    pair = paired_difference(a, b)
    assert pair["difference"] == pytest.approx(100 * 20 / 500)
    assert pair["ci_low"] > 0 and pair["verdict"] == "b better"
    assert pair["a"] == [round(100 * x.mean(), 2) for x in a] and pair["seeds"] == 3 and pair["n_test"] == 500
    same = paired_difference(a, a)
    assert (same["difference"], same["ci_low"], same["ci_high"], same["verdict"]) == (0, 0, 0, "no difference")


def _row(claim, dataset, protocol, low, high):
    return {"claim": claim, "dataset": dataset, "protocol": protocol, "difference": (low + high) / 2,
            "ci_low": low, "ci_high": high, "seeds": 3}


def test_claims_are_judged_on_all_their_rows():
    rows = [_row("helps", "eurosat", "linear", 0.5, 2.0), _row("helps", "ucmerced", "knn", -1.0, 4.0),
            _row("hurts", "eurosat", "linear", -2.0, -0.5), _row("hurts", "ucmerced", "linear", -1.0, 1.0),
            _row("mixed", "eurosat", "knn", 0.5, 2.0), _row("mixed", "ucmerced", "linear", -4.0, -1.0),
            _row("unclear", "eurosat", "linear", -0.5, 2.0), _row("unclear", "eurosat", "knn", -0.1, 0.1)]
    verdicts = {c["claim"]: c["verdict"] for c in judge_claims(rows)}
    assert verdicts == {"helps": "supported", "hurts": "not supported",
                        "mixed": "mixed (better: eurosat knn; worse: ucmerced linear)",
                        "unclear": "undecided at this budget"}
    (helps, *_) = judge_claims(rows)
    assert helps["evidence"] == "eurosat linear +1.25 [+0.50, +2.00]; ucmerced knn +1.50 [-1.00, +4.00] (seeds: 3)"


def test_score_backbone_scores_each_test_image_and_caches(tmp_path, data_root):
    from rspretrain.downstream.frozen.scene_benchmark import load_scene_splits
    from rspretrain.pretrain.config import load_config
    from rspretrain.pretrain.run import pretrain

    cfg = load_config("moco_resnet18_eurosat", {
        "data.root": str(data_root), "data.max_per_class": 4, "data.batch_size": 8, "model.image_size": 32,
        "model.queue_size": 16, "trainer.max_steps": 1, "trainer.progress_bar": False,
        "trainer.out_dir": str(tmp_path / "run")})
    ckpt = pretrain(cfg)
    train, val = load_scene_splits("eurosat", data_root, max_train_per_class=3, test_split="val")
    assert len(val) == 5400 and len(train) == 30  # the val split, never test
    small = {"eurosat_val": (train, type(train)(val, range(0, 5400, 54)))}  # 100 val images
    scores = score_backbone("moco", ckpt, small, tmp_path / "scores", seed=0)
    assert set(scores) == {"eurosat_val/knn", "eurosat_val/linear"}
    assert all(len(v) == 100 and set(v) <= {True, False} for v in scores.values())
    cached = json.loads((tmp_path / "scores" / "scores.json").read_text())
    assert cached == scores
    # a cache for other datasets or protocols is not reused; the same request is
    assert score_backbone("moco", ckpt, small, tmp_path / "scores", seed=0, protocols=("knn",)).keys() == {
        "eurosat_val/knn"}
    random = score_backbone("random-init", None, small, tmp_path / "random", seed=0, like=ckpt)
    assert set(random) == {"eurosat_val/knn", "eurosat_val/linear"} and (tmp_path / "random" / "scores.json").is_file()


def test_target_statistics_standardise_each_dataset_with_its_own_bands(tmp_path, data_root):
    """A backbone pretrained on Landsat reflectance (the knowledge study's Zion group) is scored on RGB photographs
    with their own band statistics; its bands are still checked against theirs."""
    from rspretrain.core.errors import BandMismatchError
    from rspretrain.data.band_statistics import band_statistics
    from rspretrain.downstream.frozen.features import EncoderSpec, extract_features
    from rspretrain.downstream.frozen.scene_benchmark import load_scene_splits, run_protocol
    from rspretrain.pretrain.config import load_config
    from rspretrain.pretrain.run import load_method, pretrain
    from tests.conftest import zion_tiles

    def checkpoint(bands, out):
        cfg = load_config("moco_resnet18_eurosat", {
            **zion_tiles(data_root, bands), "data.batch_size": 8, "model.image_size": 32, "model.queue_size": 16,
            "trainer.max_steps": 1,
            "trainer.progress_bar": False, "trainer.out_dir": str(tmp_path / out)})
        return pretrain(cfg)

    rgb = checkpoint(("b4", "b3", "b2"), "rgb")
    train, val = load_scene_splits("eurosat", data_root, max_train_per_class=3, test_split="val")
    small = {"eurosat_val": (train, type(train)(val, range(0, 5400, 108)))}  # 50 val images
    scores = score_backbone("zion", rgb, small, tmp_path / "target", seed=0, protocols=("knn",),
                            target_statistics=True)
    method = load_method(rgb)
    mean, std = band_statistics(train)
    assert max(abs(a - b) for a, b in zip(mean, method.mean)) > 0.05  # Landsat reflectance is not EuroSAT's RGB
    spec = EncoderSpec("zion", method.backbone_to_export().eval(), mean, std, 32, method.band_names)
    train_x, train_y = extract_features(spec, train, progress=False)
    test_x, test_y = extract_features(spec, small["eurosat_val"][1], progress=False)
    expected = run_protocol("knn", train_x, train_y, test_x, 10, 0) == test_y
    assert scores["eurosat_val/knn"] == np.asarray(expected).tolist()
    with pytest.raises(BandMismatchError, match="data has 3 bands but the model expects 4"):
        score_backbone("zion4", checkpoint(("b2", "b3", "b4", "b5"), "four"), small, tmp_path / "four", seed=0,
                       protocols=("knn",), target_statistics=True)
