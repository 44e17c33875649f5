"""Re-run issue 17's hostile-user cases against the command line and print what each one did.

Every case is a real ``rspretrain`` process (``python -m rspretrain.apps.cli``) on real files made in a temporary
folder: a tiny MoCo v2 run on EuroSAT from the shared data, its export, tampered copies of both, image folders with
a symlink loop or a FIFO, bad values for config keys and CLI options. A case passes when the process exits with the
expected code, prints no traceback, ends in one line that says what was wrong (naming the key or the file), and
whatever the case protects (a finished run, an earlier export, a complete report) is still intact afterwards.

Prints one line per case (``ok`` / ``FAIL`` with the reason and the last line the user saw) and a summary line
``hostile cases: N tried, M passed``; ``--json`` writes every case's outcome. Exit 1 when any case fails. About five
minutes on 2 cores (each case starts a Python process that imports torch).

Usage:
    python benchmarks/hostile_cases.py [--json benchmarks/results/hostile_cases.json] [--only SUBSTRING]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rspretrain.core.json_io import write_json
from rspretrain.data.io.data_root import default_data_root

TINY = ["--data.max_per_class", "4", "--data.batch_size", "8", "--model.image_size", "32", "--model.queue_size", "16",
        "--model.backbone", "resnet10t", "--trainer.progress_bar", "false", "--trainer.ckpt_every_n_steps", "1"]


@dataclass
class Case:
    name: str
    argv: list[str] | Callable[[], list[str]]
    rc: int = 2
    says: tuple[str, ...] = ()  # fragments the last line must contain
    setup: Callable[[], None] | None = None
    after: Callable[[], str | None] | None = None  # returns a failure reason, or None
    signal_after: tuple[Callable[[], bool], int] | None = None  # (ready?, signal): interrupt the process when ready
    outcome: dict = field(default_factory=dict)


def cli(argv: list[str], env: dict, cwd: Path, ready_signal=None, timeout: float = 300) -> tuple[int, str, str]:
    # In the temporary folder: a default out_dir (runs/moco) is the case's own, never the caller's runs.
    proc = subprocess.Popen([sys.executable, "-m", "rspretrain.apps.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    if ready_signal is not None:
        ready, sig = ready_signal
        deadline = time.time() + timeout
        while not ready() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        if proc.poll() is None:
            os.kill(proc.pid, sig)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--only", default=None, help="run only the cases whose name contains this")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    data = str(default_data_root())
    work = Path(tempfile.mkdtemp(prefix="rspretrain_hostile_"))
    env = {**os.environ, "RSPRETRAIN_CACHE": str(work / "cache"), "PYTHONWARNINGS": "default",
           "RSPRETRAIN_DATA": data}
    run = work / "run"
    ckpt = run / "checkpoints" / "last.ckpt"
    export = work / "export" / "backbone.safetensors"

    # The real material: one finished tiny run and its export, made once.
    base = ["pretrain", "--config", "moco_resnet18_eurosat", "--data.root", data, *TINY]
    rc, _, err = cli([*base, "--trainer.max_steps", "4", "--trainer.out_dir", str(run)], env, work)
    if rc != 0:
        print(err[-3000:])
        raise SystemExit("could not make the tiny run the cases need")
    rc, _, err = cli(["export", str(ckpt), "--to", str(export)], env, work)
    if rc != 0:
        print(err[-3000:])
        raise SystemExit("could not export the tiny run")
    finished = ckpt.read_bytes()
    finished_metrics = {p: p.read_bytes() for p in (run / "logs").rglob("metrics.csv")}

    def run_intact() -> str | None:
        if ckpt.read_bytes() != finished:
            return "the finished run's last.ckpt changed"
        if {p: p.read_bytes() for p in (run / "logs").rglob("metrics.csv")} != finished_metrics:
            return "the finished run's metrics.csv changed"
        return None

    def tampered_export(name: str, edit: Callable[[dict], dict] | None = None, header: bytes | None = None) -> str:
        """A copy of the export with its header JSON edited (or replaced by raw bytes); the sidecar removed, so the
        header is all a loader has."""
        blob = export.read_bytes()
        (n,) = struct.unpack("<Q", blob[:8])
        meta = json.loads(blob[8:8 + n])
        if header is None:
            header = json.dumps(edit(meta)).encode()
        header += b" " * (-len(header) % 8)
        out = work / "tampered" / f"{name}.safetensors"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(struct.pack("<Q", len(header)) + header + blob[8 + n:])
        return str(out)

    def edit_metadata(**changes) -> Callable[[dict], dict]:
        def edit(meta: dict) -> dict:
            inner = json.loads(meta["__metadata__"]["rspretrain"])
            for key, value in changes.items():
                if value is None:
                    inner.pop(key, None)
                else:
                    inner[key] = value
            meta["__metadata__"]["rspretrain"] = json.dumps(inner)
            return meta
        return edit

    def tampered_checkpoint(name: str, edit: Callable[[dict], None]) -> str:
        import torch

        obj = torch.load(ckpt, weights_only=True, map_location="cpu")
        edit(obj)
        out = work / "tampered" / f"{name}.ckpt"
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(obj, out)
        return str(out)

    def image_folder(name: str, extra: Callable[[Path], None]) -> str:
        from PIL import Image

        folder = work / "folders" / name
        for cls in ("a", "b"):
            (folder / cls).mkdir(parents=True, exist_ok=True)
            for i in range(3):
                Image.new("RGB", (16, 16), (40 * i, 80, 120)).save(folder / cls / f"{i}.png")
        extra(folder)
        return f"folder:{folder}"

    def symlink_loop(folder: Path) -> None:
        os.symlink(folder / "a" / "loop2.jpg", folder / "a" / "loop1.jpg")
        os.symlink(folder / "a" / "loop1.jpg", folder / "a" / "loop2.jpg")

    def fifo(folder: Path) -> None:
        os.mkfifo(folder / "b" / "pipe.jpg")

    nan_ckpt = None

    def make_nan_checkpoint() -> None:
        nonlocal nan_ckpt
        def poison(obj: dict) -> None:
            for key, value in obj["state_dict"].items():
                if key.endswith("conv1.weight") and value.is_floating_point():
                    value.fill_(float("nan"))

        nan_ckpt = tampered_checkpoint("nan_weights", poison)

    interrupted_out = work / "eval_interrupted"

    def report_kept_or_marked() -> str | None:
        path = interrupted_out / "metrics.json"
        if path.exists() and json.loads(path.read_text()).get("complete") is not False:
            return "an interrupted evaluation left a metrics.json that does not say it is incomplete"
        return None

    stale = run / "checkpoints" / ".last.ckpt.12345.tmp"

    def no_stale_temp() -> str | None:
        return "a stale temp file of a killed write is still there" if stale.exists() else None

    cases = [
        # run folders
        Case("pretrain into a finished run without --resume", [*base, "--trainer.max_steps", "2",
             "--trainer.out_dir", str(run)], says=("--resume", "--overwrite"), after=run_intact),
        Case("--resume with another batch size and lr", [*base, "--trainer.max_steps", "6", "--trainer.out_dir",
             str(run), "--data.batch_size", "4", "--optim.lr", "0.5", "--resume"], says=("data.batch_size",),
             after=run_intact),
        Case("stale temp files of a killed write are removed at start", [*base, "--trainer.max_steps", "5",
             "--trainer.out_dir", str(run), "--resume"], rc=0, setup=lambda: stale.write_bytes(b"x" * 1024),
             after=no_stale_temp),
        # out-of-range and wrong values
        *[Case(f"pretrain {' '.join(opt)}", ["pretrain", "moco", *opt], says=(key,)) for opt, key in (
            (["--data.batch_size", "0"], "data.batch_size"), (["--data.batch_size", "-4"], "data.batch_size"),
            (["--optim.lr", "-0.1"], "optim.lr"), (["--data.image_size", "0"], "data.image_size"),
            (["--model.image_size", "0"], "model.image_size"), (["--model.queue_size", "0"], "model.queue_size"),
            (["--data.num_workers", "-1"], "data.num_workers"), (["--trainer.precision", "bogus"], "precision"),
            (["--optim.name", "bogus"], "optim.name"), (["--trainer.accelerator", "gpu"], "gpu"),
            (["--trainer.max_steps", "-1"], "trainer.max_steps"), (["--trainer.max_steps", "0"], "trainer.max_steps"),
            (["--data.batch_size"], "data.batch_size"), (["--method", "nope"], "nope"),
            (["--trainer.precision", "bf16-true"], "precision"), (["--no_such.key", "1"], "no_such"),
        )],
        Case("--optim.lr 1e-3 is a float", [*base, "--optim.lr", "1e-3", "--print_config"], rc=0),
        Case("evaluate --image-size 0", ["evaluate", str(ckpt), "--image-size", "0"], says=("image-size",)),
        Case("evaluate --max-train-per-class -1", ["evaluate", str(ckpt), "--max-train-per-class", "-1"],
             says=("max-train-per-class",)),
        # files
        Case("a missing checkpoint", ["evaluate", str(work / "nope.ckpt")], says=("nope.ckpt",)),
        Case("a symlink loop among the images", lambda: ["evaluate", str(ckpt), "--dataset",
             image_folder("loop", symlink_loop), "--protocol", "knn", "--out", str(work / "e_loop")],
             says=("loop1.jpg",)),
        Case("a FIFO named *.jpg", lambda: ["evaluate", str(ckpt), "--dataset", image_folder("fifo", fifo),
             "--protocol", "knn", "--out", str(work / "e_fifo")], says=("pipe.jpg",)),
        Case("an empty folder", lambda: ["evaluate", str(ckpt), "--dataset", f"folder:{work / 'empty'}"],
             setup=lambda: (work / "empty").mkdir(exist_ok=True), says=(str(work / "empty"),)),
        Case("NaN weights", lambda: ["evaluate", nan_ckpt, "--dataset", image_folder("ok", lambda f: None),
             "--protocol", "knn", "--out", str(work / "e_nan")], setup=make_nan_checkpoint,
             says=("moco", "not finite")),
        # exports and checkpoints from elsewhere
        Case("export --to an existing folder", ["export", str(ckpt), "--to", str(work)], says=(str(work),)),
        Case("export: invalid header JSON", lambda: ["evaluate", tampered_export("bad_json", header=b"{not json"),
             "--protocol", "knn"], says=("bad_json.safetensors",)),
        Case("export: arch is an hf-hub name", lambda: ["evaluate", tampered_export(
             "hub", edit_metadata(arch="hf-hub:timm/resnet18.a1_in1k")), "--protocol", "knn"],
             says=("hub.safetensors", "hf-hub")),
        Case("export: arch unknown", lambda: ["evaluate", tampered_export(
             "arch", edit_metadata(arch="resnet9000")), "--protocol", "knn"], says=("arch.safetensors",)),
        Case("export: metadata without arch", lambda: ["evaluate", tampered_export(
             "no_arch", edit_metadata(arch=None)), "--protocol", "knn"], says=("no_arch.safetensors",)),
        Case("export: in_chans changed", lambda: ["evaluate", tampered_export(
             "chans", edit_metadata(in_chans=7)), "--protocol", "knn"], says=("chans.safetensors",)),
        Case("checkpoint: no state_dict", lambda: ["evaluate", tampered_checkpoint(
             "no_state", lambda o: o.pop("state_dict")), "--protocol", "knn"], says=("no_state.ckpt",)),
        Case("checkpoint: method name changed", lambda: ["evaluate", tampered_checkpoint(
             "method", lambda o: o["rspretrain"].update(method="nope")), "--protocol", "knn"],
             says=("method.ckpt",)),
        Case("checkpoint: not a checkpoint", lambda: ["evaluate", str(_write(work / "tampered" / "text.ckpt",
             b"hello")), "--protocol", "knn"], says=("text.ckpt",)),
        # interrupts
        Case("Ctrl-C during evaluate", ["evaluate", str(ckpt), "--dataset", "eurosat", "--protocol", "knn,linear",
             "--out", str(interrupted_out)], rc=130, says=("interrupted",),
             signal_after=(lambda: (interrupted_out / "metrics.json").exists(), signal.SIGINT),
             after=report_kept_or_marked),
    ]
    results = []
    for case in cases:
        if args.only and args.only not in case.name:
            continue
        if case.setup:
            case.setup()
        argv = case.argv() if callable(case.argv) else case.argv
        start = time.perf_counter()
        rc, out, err = cli(argv, env, work, case.signal_after)
        said = last_line(err) or last_line(out)
        problems = []
        if rc != case.rc:
            problems.append(f"exit {rc}, expected {case.rc}")
        if "Traceback" in err:
            problems.append("a traceback")
        if case.rc != 0:
            missing = [s for s in case.says if s not in said]
            if missing:
                problems.append(f"the last line does not say {missing}")
        if case.after is not None and not problems:
            reason = case.after()
            if reason:
                problems.append(reason)
        outcome = {"case": case.name, "passed": not problems, "exit": rc, "said": said[:300], "problems": problems,
                   "seconds": round(time.perf_counter() - start, 1)}
        results.append(outcome)
        mark = "ok  " if not problems else "FAIL"
        print(f"{mark} {case.name}: exit {rc}; {said[:160]}" + (f"  <- {'; '.join(problems)}" if problems else ""),
              flush=True)
    passed = sum(r["passed"] for r in results)
    print(f"hostile cases: {len(results)} tried, {passed} passed")
    if args.json:
        write_json(Path(args.json), {"tried": len(results), "passed": passed, "cases": results})
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if passed == len(results) else 1


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


if __name__ == "__main__":
    sys.exit(main())
