import json

import numpy as np
import pytest
from matplotlib.image import imread

from rspretrain.core.errors import DataError
from rspretrain.downstream.report.plot import plot_scores, short_label
from rspretrain.downstream.report.record import BASELINE_MODEL, Result, format_table
from rspretrain.downstream.report.writer import read_report, report_meta, write_report


def _results() -> list[Result]:
    rows = []
    for dataset in ("eurosat", "ucmerced"):
        for protocol in ("knn", "linear"):
            for i, model in enumerate((BASELINE_MODEL, "imagenet-resnet50", "moco-v2-rs")):
                acc = 0.55 + 0.15 * i + (0.02 if protocol == "linear" else 0.0)
                rows.append(Result.accuracy(model, dataset, protocol, acc, acc - 0.011, acc + 0.011, 16200, 5400))
    rows[1] = Result.accuracy("imagenet-resnet50", "eurosat", "knn", 0.831, 0.820, 0.842, 16200, 5400, {"k": 20})
    return rows


def test_to_dict_converts_numpy_nan_and_round_trips():
    r = Result("m", "segmentation", "d", {"miou": np.float32(0.5), "miou_ci": np.array([0.4, 0.6]),
                                         "per_class_iou": {"a": float("nan")}}, np.int64(10), 5, {"dims": np.arange(2)})
    d = r.to_dict()
    assert type(d["metrics"]["miou"]) is float and type(d["n_train"]) is int and d["extra"] == {"dims": [0, 1]}
    assert d["metrics"]["per_class_iou"] == {"a": None}  # NaN is not JSON
    json.dumps(d, allow_nan=False)
    assert Result.from_dict(d).cell() == "50.0 [40.0, 60.0]"


def test_report_round_trip_with_provenance(tmp_path):
    results = _results()
    meta = report_meta("scene_classification", {"datasets": ["eurosat"]}, 0, datasets=["eurosat"])
    written = write_report(tmp_path / "sub", results, meta, title="Scene classification")
    assert set(written) == {"metrics", "table", "plot"}
    payload = json.loads(written["metrics"].read_text())
    assert payload["results"][1]["metrics"] == {"accuracy": 0.831, "accuracy_ci": [0.82, 0.842]}
    record = payload["meta"]["provenance"]
    assert record["seed"] == 0 and record["config"] == {"datasets": ["eurosat"]} and "git_commit" in record
    loaded_meta, loaded = read_report(written["metrics"])
    assert loaded == results and loaded_meta["datasets"] == ["eurosat"]
    table = written["table"].read_text()
    assert table.startswith("# Scene classification") and f"seed 0, {record['created']}" in table
    assert sorted(p.name for p in written["metrics"].parent.iterdir()) == ["metrics.json", "results.md", "scores.png"]
    assert payload["complete"] is True and read_report(written["metrics"], complete=True)[1] == results
    partial = write_report(tmp_path / "partial", results[:2], meta, final=False)["metrics"]  # after each model
    assert [p.name for p in (tmp_path / "partial").iterdir()] == ["metrics.json"]
    assert json.loads(partial.read_text())["complete"] is False and len(read_report(partial)[1]) == 2
    with pytest.raises(DataError, match="metrics.json: the report of an evaluation that did not finish"):
        read_report(partial, complete=True)


def test_read_report_bad_file(tmp_path):
    bad = tmp_path / "metrics.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="metrics.json: not a readable report"):
        read_report(bad)


def test_format_table_probes_and_dense_and_finetune_columns():
    table = format_table(_results())
    lines = table.strip().splitlines()
    assert lines[0] == "| model | eurosat/knn | eurosat/linear | ucmerced/knn | ucmerced/linear |"
    assert len(lines) == 2 + 3
    assert lines[2].startswith(f"| {BASELINE_MODEL} | 55.0 [53.9, 56.1] | 57.0 [55.9, 58.1] |")
    assert "| imagenet-resnet50 | 83.1 [82.0, 84.2] |" in table
    segmentation = {"miou": 0.4, "miou_ci": [0.3, 0.5], "pixel_accuracy": 0.8}
    dense = [Result("moco", "segmentation", "dubai", segmentation, 36, 9),
             Result("moco", "detection", "neon", {"ap50": 0.12, "ap": -1.0}, 3, 3),
             Result("random-init", "sskdnet", "ucmerced", {"overall_accuracy": 0.5, "mean_per_class_accuracy": 0.4},
                    1, 1)]
    table = format_table(dense)
    assert table.splitlines()[0] == ("| model | dubai mIoU | dubai pixel acc. | neon AP50 | neon AP[.5:.95] | "
                                     "ucmerced sskdnet OA | ucmerced sskdnet mean class acc. |")
    assert "| moco | 40.0 [30.0, 50.0] | 80.0 | 12.0 | - | - | - |" in table
    assert "| random-init | - | - | - | - | 50.0 | 40.0 |" in table


def test_plot_writes_a_real_png_and_long_paths_are_shortened(tmp_path):
    long = "folder:/very/long/path/to/some/users/remote_sensing/scenes/rgb"
    results = _results() + [Result.accuracy("moco-v2-rs", long, "knn", 0.7, 0.6, 0.8, 10, 10)]
    path = plot_scores(results, tmp_path / "plots" / "scores.png", title="Scene classification")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.shape[0] > 800 and image.shape[1] > 800
    assert image[..., :3].std() > 0.05  # not a blank canvas
    assert short_label(long) == "folder:\u2026/scenes/rgb"
    assert len(short_label("folder:/" + "x" * 80)) == 28
    with pytest.raises(DataError, match="no results"):
        plot_scores([], tmp_path / "empty.png")
