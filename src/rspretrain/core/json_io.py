"""The one JSON encoder of every file rspretrain writes (reports, records, run facts), and an atomic writer.

Scores and settings come as numpy scalars and arrays, torch tensors, tuples, paths and dataclasses; the standard
encoder refuses all of them. :func:`jsonable` turns any of them into plain JSON values, and NaN / infinity into
``null`` (JSON has no NaN; ``json.dumps`` would otherwise write the non-standard token ``NaN`` that strict readers
refuse). Written by hand because it is ten lines and the alternatives (orjson's options, pydantic) would add a
dependency for it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

from rspretrain.core.checkpoint_io import atomic_write_text

__all__ = ["dumps", "jsonable", "write_json"]


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values: dicts (keys as strings), lists, str, int, float (finite), bool, None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in (sorted(obj, key=str) if isinstance(obj, (set, frozenset)) else obj)]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj))
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy scalars / arrays, torch tensors
        return jsonable(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def dumps(obj: Any, indent: int | None = 2) -> str:
    """JSON text of :func:`jsonable` ``(obj)``, with a final newline when indented."""
    text = json.dumps(jsonable(obj), indent=indent, allow_nan=False)
    return text + "\n" if indent is not None else text


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as JSON atomically (a reader or a crash never sees half a file); parents are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, dumps(obj))
    return path
