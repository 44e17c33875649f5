import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from rspretrain.core.json_io import dumps, jsonable, write_json


@dataclass
class _Point:
    x: float
    where: Path


def test_numpy_torch_paths_dataclasses_sets_and_non_finite_become_plain_json():
    value = {1: np.float32(0.5), "a": np.arange(3), "t": torch.tensor([1.5, 2.0]), "p": Path("/x/y"),
             "d": _Point(float("inf"), Path("z")), "s": {"b", "a"}, "n": float("nan"), "i": np.int64(7), "tup": (1, 2)}
    assert jsonable(value) == {"1": 0.5, "a": [0, 1, 2], "t": [1.5, 2.0], "p": "/x/y", "d": {"x": None, "where": "z"},
                               "s": ["a", "b"], "n": None, "i": 7, "tup": [1, 2]}
    assert json.loads(dumps(value))["n"] is None and dumps(value).endswith("\n")


def test_unknown_objects_are_refused_by_name():
    with pytest.raises(TypeError, match="object is not JSON serialisable"):
        jsonable({"x": object()})


def test_write_json_is_atomic_and_creates_parents(tmp_path):
    path = write_json(tmp_path / "a" / "b.json", {"v": np.float64(1.25)})
    assert json.loads(path.read_text()) == {"v": 1.25}
    assert [p.name for p in path.parent.iterdir()] == ["b.json"]
