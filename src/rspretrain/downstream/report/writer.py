"""The one report writer: ``metrics.json`` + ``results.md`` + ``scores.png`` for every evaluation.

Frozen-feature probes, fine-tuning and the dense tasks all end in :func:`write_report`, so their outputs look alike
and carry the same provenance as a pretraining run (:func:`rspretrain.core.provenance.collect`: package version, git
commit, seed, config, library versions, hardware, time, command). ``metrics.json`` is ``{"meta": {...},
"results": [Result, ...]}`` written atomically with the one JSON encoder (:mod:`rspretrain.core.json_io`);
:func:`read_report` reads it back.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rspretrain.core import provenance
from rspretrain.core.checkpoint_io import atomic_write_text
from rspretrain.core.errors import DataError
from rspretrain.core.json_io import jsonable, write_json
from rspretrain.downstream.report.record import Result, format_table

__all__ = ["read_report", "report_meta", "write_report"]


def report_meta(task: str, config: dict[str, Any] | None = None, seed: int | None = None,
                **fields: Any) -> dict[str, Any]:
    """The ``meta`` block of a report: the task, its fields (data, splits, schedule...) and the provenance of the
    run (with ``config`` and ``seed`` in it). Collect it once per run: it asks git for the commit."""
    return {"task": task, **fields, "provenance": provenance.collect(jsonable(config or {}), seed)}


def write_report(
    out_dir: str | os.PathLike,
    results: list[Result],
    meta: dict[str, Any],
    title: str | None = None,
    final: bool = True,
) -> dict[str, Path]:
    """Write ``out_dir/metrics.json`` and, when ``final``, ``results.md`` (table) and ``scores.png`` (chart).

    A run that scores several models calls this with ``final=False`` after each one (a crash keeps the finished
    scores) and once with ``final=True`` at the end. ``metrics.json`` says which: ``"complete": false`` until the
    final write, so an interrupted evaluation never leaves a file that looks finished (:func:`read_report` with
    ``complete=True`` refuses it). Returns the paths written.
    """
    out = Path(out_dir)
    payload = {"complete": bool(final), "meta": meta, "results": [r.to_dict() for r in results]}
    written = {"metrics": write_json(out / "metrics.json", payload)}
    if final and results:
        from rspretrain.downstream.report.plot import plot_scores

        record = meta.get("provenance", {})
        lines = [f"# {title}\n" if title else "", format_table(results),
                 "\nScores in percent; [95 % bootstrap interval] where computed. "
                 f"rspretrain {record.get('rspretrain_version')}, commit {record.get('git_commit')}, "
                 f"seed {record.get('seed')}, {record.get('created')}. Details: metrics.json.\n"]
        atomic_write_text(out / "results.md", "\n".join(line for line in lines if line))
        written["table"] = out / "results.md"
        written["plot"] = plot_scores(results, out / "scores.png", title)
    return written


def read_report(path: str | os.PathLike, complete: bool = False) -> tuple[dict[str, Any], list[Result]]:
    """``(meta, results)`` of a ``metrics.json`` written by :func:`write_report`; with ``complete``, only of a
    finished evaluation.

    Raises:
        DataError: the file is missing, not JSON, not a report, or (``complete``) the report of an evaluation that
            did not finish (names the file and the problem).
    """
    import json

    path = Path(path)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        meta, results = dict(payload["meta"]), [Result.from_dict(r) for r in payload["results"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a readable report ({type(err).__name__}: {err})") from None
    if complete and payload.get("complete") is False:
        raise DataError(f"{path}: the report of an evaluation that did not finish ({len(results)} results)")
    return meta, results
