"""``rspretrain`` command line: pretrain | evaluate | export | info | quickstart.

Errors the user can fix print one line naming the file or key and exit with status 2; the
traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from rspretrain.errors import RSPretrainError

log = logging.getLogger("rspretrain")


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


# -- commands ------------------------------------------------------------------------------------
def split_pretrain_args(tail: list[str]) -> tuple[str | None, str | None, bool | str | None, list[str]]:
    """``[METHOD] [--config C] [--resume [CKPT]] [--skip-corrupt] [--section.key value ...]`` -> parts.

    Parsed by hand because argparse would bind override values to the METHOD positional.
    """
    from rspretrain.errors import ConfigError

    method = config = resume = None
    overrides: list[str] = []
    i = 0
    if tail and not tail[0].startswith("-"):
        method, i = tail[0], 1
    while i < len(tail):
        arg = tail[i]
        if arg in ("--config", "-c") or arg.startswith("--config="):
            if "=" in arg:
                config, i = arg.split("=", 1)[1], i + 1
            elif i + 1 < len(tail):
                config, i = tail[i + 1], i + 2
            else:
                raise ConfigError("--config needs a path")
        elif arg == "--skip-corrupt":
            overrides += ["--data.skip_corrupt", "true"]
            i += 1
        elif arg == "--resume" or arg.startswith("--resume="):
            if "=" in arg:
                resume, i = arg.split("=", 1)[1], i + 1
            elif i + 1 < len(tail) and not tail[i + 1].startswith("--"):
                resume, i = tail[i + 1], i + 2
            else:
                resume, i = True, i + 1
        else:
            overrides.append(arg)
            i += 1
    return method, config, resume, overrides


def cmd_pretrain(args: argparse.Namespace) -> int:
    from rspretrain.config import load_config
    from rspretrain.errors import ConfigError
    from rspretrain.train import pretrain

    method, config, resume, overrides = split_pretrain_args(args.args)
    if config is None and method is None:
        raise ConfigError("pretrain needs a METHOD or --config")
    if method is not None:
        overrides += ["--method", method]
    cfg = load_config(config, overrides)
    final = pretrain(cfg, resume=resume)
    print(f"checkpoint: {final}")
    return 0


def run_evaluation(source: str, datasets: list[str], protocols: list[str], out: Path, root: str | None,
                   max_train_per_class: int | None, image_size: int | None, batch_size: int) -> list:
    from rspretrain.evaluation import evaluate_scene_classification, format_table
    from rspretrain.evaluation.sources import encoder_specs

    specs = encoder_specs(source, image_size=image_size)
    results = evaluate_scene_classification(
        specs, datasets, protocols=tuple(protocols), root=root, out_dir=out,
        max_train_per_class=max_train_per_class, batch_size=batch_size,
    )
    print(format_table(results))
    print(f"metrics: {out / 'metrics.json'}")
    print(f"plot:    {out / 'accuracy.png'}")
    return results


def cmd_evaluate(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else _default_eval_dir(args.source)
    run_evaluation(args.source, _csv(args.dataset), _csv(args.protocol), out, args.data_root,
                   args.max_train_per_class, args.image_size, args.batch_size)
    return 0


def _default_eval_dir(source: str) -> Path:
    path = Path(source)
    if path.suffix == ".ckpt" and path.parent.name == "checkpoints":
        return path.parent.parent / "eval"
    return Path("runs") / "eval" / (path.stem if path.suffix else source.replace(":", "_"))


def cmd_export(args: argparse.Namespace) -> int:
    from rspretrain.export import export_backbone
    from rspretrain.train import load_method

    method = load_method(args.checkpoint)
    path = export_backbone(method, args.to, source=args.checkpoint)
    print(f"exported {method.export_from} backbone: {path} (+ {path.with_suffix('.json').name})")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from rspretrain.errors import DataError

    path = Path(args.path)
    if path.is_dir():
        prov = path / "provenance.json"
        if not prov.is_file():
            raise DataError(f"{path}: not a run directory (no provenance.json)")
        print(prov.read_text())
        return 0
    if path.suffix == ".safetensors":
        from rspretrain.export import read_metadata

        print(json.dumps(read_metadata(path), indent=2))
        return 0
    from rspretrain.train import load_checkpoint

    ckpt = load_checkpoint(path)
    info = {
        **ckpt["rspretrain"],
        "global_step": ckpt.get("global_step"),
        "epoch": ckpt.get("epoch"),
        "hyper_parameters": ckpt.get("hyper_parameters"),
    }
    print(json.dumps(info, indent=2, default=str))
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from rspretrain.config import load_config
    from rspretrain.train import pretrain

    out = Path(args.out)
    overrides = {
        "trainer.out_dir": str(out),
        "trainer.max_steps": args.steps,
        "trainer.max_time_minutes": args.minutes,
    }
    if args.data_root:
        overrides["data.root"] = args.data_root
    cfg = load_config("moco_resnet18_eurosat", overrides)
    print(f"[1/2] pretraining MoCo v2 ResNet-18 on EuroSAT train: {args.steps} steps, at most {args.minutes} min")
    final = pretrain(cfg)
    print(f"[2/2] evaluating {final} (kNN + linear probe; random-init and image statistics beside it)")
    run_evaluation(str(final), ["eurosat", "ucmerced"], ["knn", "linear"], out / "eval", args.data_root,
                   args.max_train_per_class, None, 256)
    return 0


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (it may be replaced after set-up, e.g. in tests)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


# -- parser --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rspretrain", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "pretrain",
        help="pretrain a backbone",
        usage="rspretrain pretrain [METHOD] [--config PATH|NAME] [--resume [CKPT]] [--skip-corrupt] "
        "[--section.key VALUE ...]",
        description="Pretrain a backbone. --config is a YAML path or a shipped config name; --resume continues "
        "from <out_dir>/checkpoints/last.ckpt (or the given checkpoint); --skip-corrupt skips and counts unreadable "
        "images; any --section.key VALUE overrides the config.",
    )

    p = sub.add_parser("evaluate", help="kNN / linear probe of a checkpoint, exported backbone or random:ARCH")
    p.add_argument("source")
    p.add_argument("--protocol", default="knn,linear")
    p.add_argument("--dataset", "--data", dest="dataset", default="eurosat,ucmerced",
                   help="comma list of eurosat, ucmerced, folder:PATH")
    p.add_argument("--data-root", default=None, help="folder holding eurosat_rgb/, ucmerced/ (default ../shared/data)")
    p.add_argument("--out", default=None)
    p.add_argument("--max-train-per-class", type=int, default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=256)

    p = sub.add_parser("export", help="export the pretrained backbone to safetensors + JSON metadata")
    p.add_argument("checkpoint")
    p.add_argument("--to", required=True)

    p = sub.add_parser("info", help="print the provenance/metadata of a run dir, checkpoint or exported backbone")
    p.add_argument("path")

    p = sub.add_parser("quickstart", help="short MoCo v2 pretraining on EuroSAT + kNN/linear evaluation")
    p.add_argument("--out", default="runs/quickstart")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--data-root", default=None)
    p.add_argument("--max-train-per-class", type=int, default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    tail: list[str] = []
    if "pretrain" in argv:  # argparse cannot hand a tail that starts with "--" to REMAINDER
        at = argv.index("pretrain")
        argv, tail = argv[: at + 1], argv[at + 1 :]
    args = parser.parse_args(argv)
    if args.command == "pretrain":
        if "-h" in tail or "--help" in tail:
            parser.parse_args(argv + ["--help"])
        args.args = tail
    if not log.handlers:  # our own handler only: Lightning configures its loggers itself
        handler = _CurrentStderrHandler()
        handler.setFormatter(logging.Formatter("rspretrain: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    commands = {
        "pretrain": cmd_pretrain, "evaluate": cmd_evaluate, "export": cmd_export, "info": cmd_info,
        "quickstart": cmd_quickstart,
    }
    try:
        return commands[args.command](args)
    except RSPretrainError as err:
        if args.debug:
            raise
        print(f"rspretrain: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
