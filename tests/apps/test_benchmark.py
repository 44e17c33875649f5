"""`rspretrain benchmark`: per-run training in a subprocess, one table/plot, resumable."""

import json
import zipfile

import pytest

from rspretrain.apps.benchmark import BenchmarkRun, TrainingFailed, format_benchmark_table, run_benchmark
from rspretrain.apps.cli import main
from rspretrain.core.errors import ConfigError


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory, data_root):
    """Two EuroSAT classes, 12 real images each, as a class-per-folder set."""
    root = tmp_path_factory.mktemp("folder")
    with zipfile.ZipFile(data_root / "eurosat_rgb" / "EuroSAT_RGB.zip") as z:
        for cls in ("Forest", "SeaLake"):
            members = sorted(n for n in z.namelist() if n.startswith(f"EuroSAT_RGB/{cls}/"))[:12]
            (root / cls).mkdir()
            for name in members:
                (root / cls / name.rsplit("/", 1)[1]).write_bytes(z.read(name))
    return root


def test_run_spec_parsing():
    assert BenchmarkRun.parse("moco") == BenchmarkRun("moco", "moco_resnet18_eurosat")
    run = BenchmarkRun.parse("fast=moco_resnet18_eurosat,model.queue_size=64,optim.lr=0.1")
    assert run.overrides == {"model.queue_size": 64, "optim.lr": 0.1}
    # every registered method resolves to its default config, GeoKR and BYOL included (one registry)
    assert BenchmarkRun.parse("geokr") == BenchmarkRun("geokr", "geokr_resnet18_zion")
    assert BenchmarkRun.parse("byol") == BenchmarkRun("byol", "byol_resnet18_eurosat")
    with pytest.raises(ConfigError, match="neither NAME=CONFIG"):
        BenchmarkRun.parse("simclr")
    with pytest.raises(ConfigError, match="not section.key=value"):
        BenchmarkRun.parse("x=moco_resnet18_eurosat,model.queue_size")


def test_benchmark_trains_scores_and_resumes(tmp_path, data_root, small_folder):
    tiny = {"data.root": str(data_root), "data.max_per_class": 4, "data.batch_size": 8, "model.image_size": 32}
    runs = [
        BenchmarkRun("moco", "moco_resnet18_eurosat", {**tiny, "model.queue_size": 16}),
        BenchmarkRun("supervised", "supervised_resnet18_cifar10",
                     {**tiny, "data.dataset": "folder:" + str(small_folder), "data.max_per_class": None}),
    ]
    out = tmp_path / "bench"
    rows = run_benchmark(runs, out, budget_minutes=None, max_steps=3, datasets=(f"folder:{small_folder}",),
                         root=str(data_root))
    payload = json.loads((out / "results.json").read_text())
    assert {r["method"] for r in payload["rows"]} == {"moco", "supervised", "random-init", "image-statistics"}
    for row in payload["rows"]:
        assert {"method", "dataset", "protocol", "accuracy", "ci_low", "ci_high", "images_per_s",
                "peak_rss_mb"} <= set(row)
        assert row["ci_low"] <= row["accuracy"] <= row["ci_high"]
    trained = [r for r in payload["rows"] if r["method"] in ("moco", "supervised")]
    assert all(r["steps"] == 3 and r["images_per_s"] > 0 and r["peak_rss_mb"] > 100 for r in trained)
    assert (out / "benchmark.png").stat().st_size > 10_000
    assert "| moco |" in (out / "results.md").read_text()

    # rerun: nothing is trained or scored again, the table is the same
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/train.json")} | {
        p: p.stat().st_mtime_ns for p in out.glob("*/eval.json")}
    again = run_benchmark(runs, out, budget_minutes=None, max_steps=3, datasets=(f"folder:{small_folder}",),
                          root=str(data_root))
    assert format_benchmark_table(again) == format_benchmark_table(rows)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items()) and len(stamps) == 5

    # other settings in the same folder: an error naming the run folder, never the old results
    with pytest.raises(ConfigError, match=r"moco: this run folder was made with other settings"):
        run_benchmark(runs, out, budget_minutes=None, max_steps=4, datasets=(f"folder:{small_folder}",),
                      root=str(data_root))
    # other evaluation settings: the cached scores are not reused, the trainings are
    capped = run_benchmark(runs, out, budget_minutes=None, max_steps=3, datasets=(f"folder:{small_folder}",),
                           root=str(data_root), max_train_per_class=5)
    assert len(capped) == len(rows)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items() if p.name == "train.json")
    assert all(p.stat().st_mtime_ns != t for p, t in stamps.items() if p.name == "eval.json")


def test_a_failing_run_is_reported_and_the_others_still_score(tmp_path, data_root, small_folder):
    empty = tmp_path / "empty"
    (empty / "Forest").mkdir(parents=True)
    tiny = {"data.root": str(data_root), "data.batch_size": 8, "model.image_size": 32, "model.queue_size": 16}
    runs = [BenchmarkRun("broken", "moco_resnet18_eurosat", {**tiny, "data.dataset": f"folder:{empty}"}),
            BenchmarkRun("moco", "moco_resnet18_eurosat", {**tiny, "data.max_per_class": 4})]
    out = tmp_path / "bench"
    with pytest.raises(TrainingFailed, match=r"1 of 2 runs failed \(broken\)"):
        run_benchmark(runs, out, budget_minutes=None, max_steps=2, datasets=(f"folder:{small_folder}",),
                      root=str(data_root))
    payload = json.loads((out / "results.json").read_text())
    (failure,) = payload["failed"]
    assert failure["run"] == "broken" and f"{empty}: no class folders with images" in failure["error"]
    assert {r["method"] for r in payload["rows"]} == {"moco", "random-init", "image-statistics"}


def test_cli_rejects_a_bad_run_key(tmp_path, capsys):
    code = main(["benchmark", "--runs", "x=moco_resnet18_eurosat,model.no_such_key=1", "--max-steps", "1",
                 "--out", str(tmp_path)])
    assert code == 2
    assert "no_such_key" in capsys.readouterr().err


def test_finetune_rows_for_sskdnet_from_random_and_from_a_run(tmp_path, data_root, small_folder):
    # Plain fine-tuning rows take the same path (tests/apps/test_cli_finetune.py runs that protocol itself).
    tiny = {"data.root": str(data_root), "data.max_per_class": 4, "data.batch_size": 8, "model.image_size": 32,
            "model.queue_size": 16}
    runs = [BenchmarkRun("moco", "moco_resnet18_eurosat", tiny)]
    out = tmp_path / "bench"
    rows = run_benchmark(runs, out, budget_minutes=None, max_steps=2, datasets=(f"folder:{small_folder}",),
                         root=str(data_root), finetune=("sskdnet",), finetune_epochs=1,
                         finetune_init=("moco",))
    tuned = {r["method"]: r for r in rows if r["protocol"] == "finetune"}
    assert set(tuned) == {"sskdnet", "sskdnet from moco"}
    for row in tuned.values():
        assert row["ci_low"] <= row["accuracy"] <= row["ci_high"] and row["n_test"] > 0
        assert row["images_per_s"] > 0 and row["peak_rss_mb"] > 100 and row["steps"] >= 1
    init = json.loads((out / "finetune" / f"sskdnet_moco_folder_{str(small_folder).replace('/', '_')}"
                       / "metrics.json").read_text())["meta"]["init"]
    assert "moco" in str(init) and "last.ckpt" in str(init)
    assert "| sskdnet from moco |" in (out / "results.md").read_text()
    with pytest.raises(ConfigError, match="--finetune-init: byol not among the --runs names"):
        run_benchmark(runs, out, max_steps=2, budget_minutes=None, finetune=("sskdnet",), finetune_init=("byol",))
