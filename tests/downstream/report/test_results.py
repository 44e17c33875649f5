import json

import numpy as np
import pytest
from matplotlib.image import imread

from rspretrain.core.errors import DataError
from rspretrain.downstream.report.results import (
    BASELINE_MODEL,
    EvalResult,
    format_table,
    plot_accuracy,
    read_metrics_json,
    write_metrics_json,
)


def _results() -> list[EvalResult]:
    rows = []
    for dataset in ("eurosat", "ucmerced"):
        for protocol in ("knn", "linear"):
            for i, model in enumerate((BASELINE_MODEL, "imagenet-resnet50", "moco-v2-rs")):
                acc = 0.55 + 0.15 * i + (0.02 if protocol == "linear" else 0.0)
                rows.append(EvalResult(model, dataset, protocol, acc, acc - 0.011, acc + 0.011, 16200, 5400))
    rows[1] = EvalResult("imagenet-resnet50", "eurosat", "knn", 0.831, 0.820, 0.842, 16200, 5400, {"k": 20})
    return rows


def test_to_dict_converts_numpy_and_round_trips():
    r = EvalResult("m", "d", "knn", np.float32(0.5), np.float64(0.4), 0.6, np.int64(10), 5, {"dims": np.arange(2)})
    d = r.to_dict()
    assert type(d["accuracy"]) is float and type(d["n_train"]) is int and d["extra"] == {"dims": [0, 1]}
    json.dumps(d)
    assert EvalResult.from_dict(d) == EvalResult("m", "d", "knn", 0.5, 0.4, 0.6, 10, 5, {"dims": [0, 1]})


def test_metrics_json_round_trip(tmp_path):
    results = _results()
    path = write_metrics_json(results, tmp_path / "sub" / "metrics.json", meta={"seed": 0, "datasets": ["eurosat"]})
    payload = json.loads(path.read_text())
    assert set(payload) == {"meta", "results"}
    assert payload["results"][1]["accuracy"] == 0.831 and payload["results"][1]["extra"] == {"k": 20}
    meta, loaded = read_metrics_json(path)
    assert meta == {"seed": 0, "datasets": ["eurosat"]}
    assert loaded == results
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]  # no temp file left behind
    write_metrics_json(results[:2], path)  # overwrite in place
    assert len(read_metrics_json(path)[1]) == 2 and read_metrics_json(path)[0] == {}


def test_read_metrics_json_bad_file(tmp_path):
    bad = tmp_path / "metrics.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="metrics.json"):
        read_metrics_json(bad)


def test_format_table():
    table = format_table(_results())
    lines = table.strip().splitlines()
    assert lines[0] == "| model | eurosat/knn | eurosat/linear | ucmerced/knn | ucmerced/linear |"
    assert len(lines) == 2 + 3
    assert lines[2].startswith(f"| {BASELINE_MODEL} | 55.0 [53.9, 56.1] | 57.0 [55.9, 58.1] |")
    assert "| imagenet-resnet50 | 83.1 [82.0, 84.2] |" in table
    assert "| moco-v2-rs | 85.0 [83.9, 86.1] | 87.0 [85.9, 88.1] | 85.0" in table


def test_format_table_marks_missing_cells():
    results = [EvalResult("a", "d1", "knn", 0.5, 0.4, 0.6, 1, 1), EvalResult("b", "d2", "knn", 1, 1, 1, 1, 1)]
    table = format_table(results)
    assert "| a | 50.0 [40.0, 60.0] | - |" in table and "| b | - | 100.0 [100.0, 100.0] |" in table


def test_plot_accuracy_writes_a_real_png(tmp_path):
    path = plot_accuracy(_results(), tmp_path / "plots" / "accuracy.png", title="Scene classification")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 20_000
    image = imread(path)
    assert image.shape[0] > 800 and image.shape[1] > 800
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_plot_accuracy_single_panel_and_empty(tmp_path):
    path = plot_accuracy([EvalResult("only", "eurosat", "knn", 0.9, 0.88, 0.92, 10, 10)], tmp_path / "one.png")
    assert path.stat().st_size > 5_000
    with pytest.raises(DataError):
        plot_accuracy([], tmp_path / "none.png")
