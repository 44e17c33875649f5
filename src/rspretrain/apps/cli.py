"""``rspretrain`` command line: pretrain | evaluate | export | info | quickstart | finetune | landcover-labels.

Errors the user can fix print one line naming the file or key and exit with status 2; the
traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from rspretrain.core.errors import NonFiniteLossError, RSPretrainError

log = logging.getLogger("rspretrain")


def _csv(value: str) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]``; commas inside ``{}`` / ``[]`` / ``()`` stay (``torchgeo:X{bands: [B04, B03]}``)."""
    parts, depth, current = [], 0, ""
    for char in value:
        depth += (char in "{[(") - (char in "}])")
        if char == "," and depth <= 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [v.strip() for v in [*parts, current] if v.strip()]


# -- commands ------------------------------------------------------------------------------------
def split_pretrain_args(tail: list[str]) -> tuple[str | None, list[str], bool | str | None, list[str]]:
    """``[METHOD] [--config C ...] [--resume [CKPT]] [--skip-corrupt] [--section.key value ...]`` -> parts.

    Parsed by hand because argparse would bind override values to the METHOD positional; the configs (several
    compose, in order) and overrides then go to the one jsonargparse parser (:func:`rspretrain.pretrain.config.
    load_config`).
    """
    from rspretrain.core.errors import ConfigError

    method = resume = None
    configs: list[str] = []
    overrides: list[str] = []
    i = 0
    if tail and not tail[0].startswith("-"):
        method, i = tail[0], 1
    while i < len(tail):
        arg = tail[i]
        if arg in ("--config", "-c") or arg.startswith(("--config=", "-c=")):
            if "=" in arg:
                configs.append(arg.split("=", 1)[1])
                i += 1
            elif i + 1 < len(tail):
                configs.append(tail[i + 1])
                i += 2
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
    return method, configs, resume, overrides


def _with_method(method: str | None, overrides: list[str]) -> list[str]:
    """``overrides`` with the positional METHOD as ``--method``; a ``--method`` that names another method is an error
    (the later one would silently win)."""
    from rspretrain.core.errors import ConfigError

    if method is None:
        return overrides
    given = [overrides[i + 1] for i, a in enumerate(overrides[:-1]) if a == "--method"]
    given += [a.split("=", 1)[1] for a in overrides if a.startswith("--method=")]
    if any(g != method for g in given):
        raise ConfigError(f"METHOD {method!r} and --method {given[-1]!r} disagree; give one")
    return overrides + ["--method", method]


def cmd_pretrain(args: argparse.Namespace) -> int:
    from rspretrain.core.errors import ConfigError
    from rspretrain.pretrain.config import full_config, load_config

    method, configs, resume, overrides = split_pretrain_args(args.args)
    flags = ("--print_config", "--overwrite", "--allow-config-change")
    print_config, overwrite, allow_change = (flag in overrides for flag in flags)
    overrides = [o for o in overrides if o not in flags]
    if not configs and method is None and not print_config:
        raise ConfigError("pretrain needs a METHOD or --config")
    overrides = _with_method(method, overrides)
    cfg = load_config(configs, overrides)
    if print_config:  # the whole resolved run, method defaults included; --config reads it back
        import yaml

        print(yaml.safe_dump(full_config(cfg), sort_keys=False), end="")
        return 0
    from rspretrain.downstream.frozen.knn_monitor import monitor_callbacks
    from rspretrain.pretrain.run import pretrain

    final = pretrain(cfg, resume=resume, overwrite=overwrite, allow_config_change=allow_change,
                     callbacks=monitor_callbacks(cfg))
    print(f"checkpoint: {final}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from rspretrain.core.errors import ConfigError
    from rspretrain.core.json_io import jsonable
    from rspretrain.pretrain.config import load_config, resolve_config_path
    from rspretrain.pretrain.plan import format_plan, plan_run

    tail, own = _plan_options(list(args.args))
    method, configs, resume, overrides = split_pretrain_args(tail)
    if resume is not None:
        raise ConfigError("plan does not train: --resume is a pretrain option")
    if not configs and method is None:
        raise ConfigError("plan needs a METHOD or --config")
    overrides = _with_method(method, overrides)
    for flag, key in (("devices", "trainer.devices"), ("nodes", "trainer.num_nodes")):
        if own[flag] is not None:
            overrides += [f"--{key}", str(own[flag])]
    cfg = load_config(configs, overrides)
    name = resolve_config_path(configs[-1]).stem if configs else None
    plan = plan_run(cfg, name, samples_per_epoch=own["dataset-size"], memory=not own["no-memory"])
    print(format_plan(plan))
    if own["json"]:
        Path(own["json"]).write_text(json.dumps(jsonable(plan), indent=2) + "\n")
        print(f"plan: {own['json']}")
    return 0


def _plan_options(tail: list[str]) -> tuple[list[str], dict]:
    """``plan``'s own options out of its tail: ``--devices N --nodes M --dataset-size N --no-memory --json PATH``."""
    from rspretrain.core.errors import ConfigError

    own: dict = {"devices": None, "nodes": None, "dataset-size": None, "no-memory": False, "json": None}
    rest, i = [], 0
    while i < len(tail):
        flag, _, value = tail[i].partition("=")
        name = flag.removeprefix("--")
        if flag.startswith("--") and name in own:
            if name == "no-memory":
                own[name], i = True, i + 1
                continue
            if not value:
                if i + 1 >= len(tail):
                    raise ConfigError(f"{flag} needs a value")
                value, i = tail[i + 1], i + 1
            if name == "json":
                own[name] = value
            else:
                try:
                    own[name] = int(value.replace("_", "").replace(",", ""))
                except ValueError:
                    raise ConfigError(f"{flag}: expected a positive integer, got {value!r}") from None
                if own[name] < 1:
                    raise ConfigError(f"{flag}: expected a positive integer, got {value!r}")
        else:
            rest.append(tail[i])
        i += 1
    return rest, own


def run_evaluation(source: str, datasets: list[str], protocols: list[str], out: Path, root: str | None,
                   max_train_per_class: int | None, image_size: int | None, batch_size: int,
                   embedding_points: int = 1000, weights_file: str | None = None) -> list:
    from rspretrain.downstream.frozen import evaluate_scene_classification, format_table
    from rspretrain.downstream.frozen.scene_benchmark import embedding_map_path
    from rspretrain.downstream.sources import encoder_specs

    specs = encoder_specs(source, image_size=image_size, weights_file=weights_file)
    results = evaluate_scene_classification(
        specs, datasets, protocols=tuple(protocols), root=root, out_dir=out,
        max_train_per_class=max_train_per_class, batch_size=batch_size, embedding_points=embedding_points,
    )
    print(format_table(results))
    print(f"metrics: {out / 'metrics.json'}")
    print(f"table:   {out / 'results.md'}")
    print(f"plot:    {out / 'scores.png'}")
    if embedding_points:
        for name in datasets:
            print(f"t-SNE:   {embedding_map_path(out, name)}")
    return results


def cmd_evaluate(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else _default_eval_dir(args.source)
    if args.task != "scene":  # dense tasks: segmentation | change | detection
        from rspretrain.downstream.dense.evaluate import evaluate_dense_source

        if args.weights_file is not None:
            from rspretrain.core.errors import ConfigError

            raise ConfigError("--weights-file: torchgeo's weights are scored by scene evaluation (--task scene) only")

        evaluate_dense_source(args.source, args.task, args.dataset, out if args.out else out / args.task,
                              args.epochs, args.freeze_backbone, args.image_size, args.batch_size,
                              _csv(args.predict_raster or ""), data_root=args.data_root, precision=args.precision,
                              device=args.device, resume=args.resume, trainer=dict(args.trainer or {}),
                              devices=args.devices, norm_eval=args.norm_eval, input_statistics=args.input_statistics)
        return 0
    run_evaluation(args.source, _csv(args.dataset or "eurosat,ucmerced"), _csv(args.protocol), out, args.data_root,
                   args.max_train_per_class, args.image_size, args.batch_size or 256, args.embedding_points,
                   weights_file=args.weights_file)
    return 0


def _default_eval_dir(source: str) -> Path:
    path = Path(source)
    if path.suffix == ".ckpt" and path.parent.name == "checkpoints":
        return path.parent.parent / "eval"
    named = source.partition(":")[0] in ("random", "timm", "torchgeo")  # ENUM.MEMBER is not a file suffix
    return Path("runs") / "eval" / (path.stem if path.suffix and not named else source.replace(":", "_"))


def cmd_export(args: argparse.Namespace) -> int:
    from rspretrain.pretrain.export import export_backbone
    from rspretrain.pretrain.run import load_method

    method = load_method(args.checkpoint)
    if args.network is not None:
        from rspretrain.core.errors import ConfigError

        exportable = getattr(method, "exportable", (method.export_from,))
        if args.network not in exportable:
            raise ConfigError(f"--network {args.network}: {method.method_name} exports {', '.join(exportable)}")
        method.export_from = args.network
    if args.format == "torchgeo":
        from rspretrain.pretrain.export import export_torchgeo

        path = export_torchgeo(method, args.to, source=args.checkpoint)
        meta = method.export_metadata()
        print(f"exported {method.export_from} backbone for torchgeo: {path}; torchgeo.trainers.ClassificationTask("
              f"model='{meta['arch']}', weights='{path}', in_channels={meta['in_chans']}, ...) loads it")
        return 0
    if args.format == "timm":
        from rspretrain.pretrain.export import export_timm_folder

        folder = export_timm_folder(method, args.to, source=args.checkpoint)
        print(f"exported {method.export_from} backbone in timm's layout: {folder} (config.json, model.safetensors, "
              f"README.md); timm.create_model('local-dir:{folder}', pretrained=True, num_classes=0) loads it")
        return 0
    path = export_backbone(method, args.to, source=args.checkpoint)
    print(f"exported {method.export_from} backbone: {path} (+ {path.with_suffix('.json').name})")
    return 0


def cmd_landcover_labels(args: argparse.Namespace) -> int:
    from rspretrain.data.io.rasters import RasterTiles, read_raster
    from rspretrain.data.pretrain.land_cover import land_cover_proportions

    images = [Path(p) for p in _csv(args.images)]
    raster = read_raster(images)
    tiles = RasterTiles(raster, args.tile, args.stride, args.max_nodata_fraction)
    supersample = args.supersample if args.supersample == "auto" else int(args.supersample)
    labels = land_cover_proportions(tiles, args.landcover, args.scheme, args.min_land_cover_fraction, supersample)
    path = labels.to_parquet(args.out)
    summary = labels.summary()
    print(f"{summary['tiles']} tiles labelled with {len(labels.classes)} {labels.meta['scheme']} classes: {path}")
    print(f"dropped: {summary['dropped_outside']} outside the land-cover extent, {summary['dropped_no_land_cover']} "
          f"without land cover, {summary['dropped_image_nodata']} for image nodata")
    print("mean proportions: " + ", ".join(f"{c} {v:.3f}" for c, v in summary["mean_proportions"].items()))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from rspretrain.data.shards.prepare import prepare

    options = dict(args.option or {})
    if args.max_per_class is not None:
        options["max_per_class"] = args.max_per_class
    manifest = prepare(args.source, args.out, root=args.data_root, split=args.split, workers=args.workers,
                       chunk_bytes=args.chunk_bytes, skip_corrupt=args.skip_corrupt,
                       max_image_pixels=args.max_image_pixels, stats_max_images=args.stats_max_images,
                       overwrite=args.overwrite, progress=not args.no_progress, **options)
    classes = f", {len(manifest.classes)} classes" if manifest.classes else ""
    what = (f"{manifest.count} tiles of {len(manifest.scenes)} scene(s) ({manifest.dtype}){classes}"
            if manifest.kind == "tiles" else f"{manifest.count} images{classes}")
    print(f"{args.out}: {what}, {manifest.shard_bytes / 1e6:.1f} MB (source files "
          f"{manifest.source_bytes / 1e6:.1f} MB); {len(manifest.skipped)} skipped; "
          f"train with --data.dataset shards:{args.out}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from rspretrain.core.errors import DataError

    path = Path(args.path)
    if path.is_dir():
        prov = path / "provenance.json"
        if not prov.is_file():
            raise DataError(f"{path}: not a run directory (no provenance.json)")
        print(prov.read_text())
        return 0
    if path.suffix == ".safetensors":
        from rspretrain.pretrain.export import read_metadata

        print(json.dumps(read_metadata(path), indent=2))
        return 0
    from rspretrain.pretrain.run import load_checkpoint

    ckpt = load_checkpoint(path)
    info = {
        **ckpt["rspretrain"],
        "global_step": ckpt.get("global_step"),
        "epoch": ckpt.get("epoch"),
        "hyper_parameters": ckpt.get("hyper_parameters"),
    }
    from rspretrain.core.json_io import dumps

    print(dumps(info), end="")
    return 0


#: The quickstart's online kNN monitor (``--knn-monitor``): EuroSAT, 500 train images as memory, 500 validation
#: images scored, every 200 steps (benchmarks/knn_monitor_overhead.py: 1,000 / 500 images every 100 steps cost 9.3 %
#: of the pretraining in the monitor's own time; this setting 4.6 %).
QUICKSTART_MONITOR = {"monitor.dataset": "eurosat", "monitor.every_n_steps": 200, "monitor.max_train_per_class": 50,
                      "monitor.max_test_per_class": 50}


def cmd_quickstart(args: argparse.Namespace) -> int:
    from rspretrain.downstream.frozen.knn_monitor import CURVES_FILE, monitor_callbacks
    from rspretrain.pretrain.config import load_config
    from rspretrain.pretrain.run import pretrain

    out = Path(args.out)
    # A wall-clock budget with the lr schedule fitted to the steps that fit: a faster step trains longer.
    overrides = {
        "trainer.out_dir": str(out),
        "trainer.max_steps": args.steps,
        "trainer.budget_minutes": args.minutes,
    }
    if args.fp32:
        overrides.update({"trainer.precision": "32-true", "trainer.channels_last": False})
    if args.data_root:
        overrides["data.root"] = args.data_root
    if args.knn_monitor:
        overrides.update(QUICKSTART_MONITOR)
    cfg = load_config("moco_resnet18_eurosat", overrides)
    print(f"[1/2] pretraining MoCo v2 ResNet-18 on EuroSAT train for {args.minutes:g} min (at most {args.steps} steps)")
    final = pretrain(cfg, overwrite=args.overwrite, callbacks=monitor_callbacks(cfg))
    if args.knn_monitor:
        print(f"curves:  {out / CURVES_FILE} (loss; kNN top-1 on held-out EuroSAT every 200 steps)")
    print(f"[2/2] evaluating {final} (kNN + linear probe; random-init and image statistics beside it)")
    run_evaluation(str(final), ["eurosat", "ucmerced"], ["knn", "linear"], out / "eval", args.data_root,
                   args.max_train_per_class, None, 256)
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from rspretrain.downstream.finetune.run import FinetuneConfig, run_finetune

    sections = {name: dict(getattr(args, name) or {}) for name in ("model", "optim", "augment", "trainer")}
    out = args.out or str(Path("runs") / "finetune" / f"{args.method}_{args.dataset.replace(':', '_').replace('/', '_')}"
                          f"_seed{args.seed}")
    cfg = FinetuneConfig(
        method=args.method, dataset=args.dataset, root=args.data_root, train_ratio=args.train_ratio,
        image_size=args.image_size, max_train_per_class=args.max_train_per_class,
        max_test_per_class=args.max_test_per_class, init=args.init, backbone=args.backbone, epochs=args.epochs,
        batch_size=args.batch_size, seed=args.seed, out_dir=out, accelerator=args.accelerator,
        precision=args.precision, devices=args.devices, resume=args.resume, progress=not args.no_progress,
        **sections,
    )  # fmt: skip
    result = run_finetune(cfg)
    if not result:  # a DDP rank other than 0: it trained, rank 0 reports
        return 0
    lo, hi = result["overall_accuracy_ci"]
    print(f"overall accuracy: {100 * result['overall_accuracy']:.2f} % [{100 * lo:.1f}, {100 * hi:.1f}] "
          f"(n_test={result['n_test']}); mean per-class accuracy {100 * result['mean_per_class_accuracy']:.2f} %")
    print(f"metrics: {Path(out) / 'metrics.json'}")
    print(f"table:   {Path(out) / 'results.md'}")
    print(f"plots:   {Path(out) / 'confusion_matrix.png'}, {Path(out) / 'scores.png'}")
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from rspretrain.apps import benchmark  # imported here: it loads Lightning and every method

    return benchmark.main_from_args(args)


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (it may be replaced after set-up, e.g. in tests)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


# -- parser --------------------------------------------------------------------------------------
class _Commands:
    """``parser.add_subcommands()`` with argparse's ``add_parser`` signature: every command is its own jsonargparse
    parser with ``--config`` (YAML files of its options, several compose) and ``--print_config``."""

    def __init__(self, parser) -> None:
        self.subcommands = parser.add_subcommands(dest="command", required=True)

    def add_parser(self, name: str, help: str, config: bool = True, **kwargs):
        from jsonargparse import ActionConfigFile, ArgumentParser

        command = ArgumentParser(prog=f"rspretrain {name}", exit_on_error=False, default_env=False, **kwargs)
        if config:
            command.add_argument("--config", action=ActionConfigFile,
                                 help="YAML file of these options (several compose, later ones win); "
                                 "--print_config prints them")
        self.subcommands.add_subcommand(name, command, help=help)
        return command


def build_parser(benchmark_arguments: bool = True):
    """The parser (jsonargparse, as under LightningCLI: every command reads ``--config`` files and has
    ``--print_config``); without ``benchmark_arguments`` the benchmark's own options (and the import of the
    benchmark, with Lightning and the methods) are left out, for the commands that do not need them."""
    from jsonargparse import ArgumentParser
    from jsonargparse.typing import ClosedUnitInterval, NonNegativeInt, OpenUnitInterval, PositiveFloat, PositiveInt

    from rspretrain.data.io.decode import DEFAULT_MAX_IMAGE_PIXELS

    parser = ArgumentParser(prog="rspretrain", description=__doc__.splitlines()[0], exit_on_error=False,
                            default_env=False)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = _Commands(parser)

    p = sub.add_parser(
        "pretrain", config=False,  # its tail goes to the run config's own parser (pretrain.config.config_parser)
        help="pretrain a backbone",
        usage="rspretrain pretrain [METHOD] [--config PATH|NAME ...] [--print_config] [--resume [CKPT]] "
        "[--overwrite] [--allow-config-change] [--skip-corrupt] [--section.key VALUE ...]",
        description="Pretrain a backbone. METHOD is a registered method or path.to.YourMethod. --config is a YAML "
        "path or a shipped config name; several compose, later ones win. --print_config prints the whole resolved "
        "run (method defaults included) as YAML that --config reads back. --resume continues from "
        "<out_dir>/checkpoints/last.ckpt (or the given checkpoint) and refuses a changed data, model, views, "
        "optimiser or global batch unless --allow-config-change; a folder that holds a run needs --resume or "
        "--overwrite (which removes the old run's files), and one run at a time writes to a folder (a lock); "
        "--skip-corrupt skips and counts unreadable images; any --section.key VALUE overrides the config, "
        "including any lightning.Trainer argument (--trainer.gradient_clip_val 1.0), callbacks and loggers by class_path "
        "(--trainer.callbacks+=LearningRateMonitor) "
        "and a user's own datamodule (--datamodule.class_path pkg.MyDataModule).",
    )

    p = sub.add_parser(
        "plan", config=False,  # its tail goes to the run config's own parser, as pretrain's
        help="print a run's resolved recipe (steps, lr, schedules, memory) without training",
        usage="rspretrain plan [METHOD] [--config PATH|NAME ...] [--devices N] [--nodes M] [--dataset-size N] "
        "[--no-memory] [--json PATH] [--section.key VALUE ...]",
        description="Resolve a pretraining run as rspretrain pretrain would, without training: dataset size, global "
        "batch, steps per epoch, total steps, warm-up, the lr after batch scaling, teacher momentum and temperature "
        "schedules, SyncBN, precision, memory per rank (measured on one small step) and the bytes read per epoch, "
        "then the differences from the method's published recipe. --devices / --nodes plan for another machine; "
        "--dataset-size N plans for data that is not here (e.g. 1281167 for ImageNet) instead of counting it.",
    )

    p = sub.add_parser("evaluate", help="kNN / linear probe (scenes) or fine-tuned segmentation / change / detection "
                       "of a checkpoint, exported backbone, random:ARCH, timm:ARCH or torchgeo:ENUM.MEMBER "
                       "(with --weights-file)")
    p.add_argument("source")
    p.add_argument("--task", choices=("scene", "segmentation", "change", "detection"), default="scene",
                   help="scene classification (default) or a dense task, each next to a random-init backbone")
    p.add_argument("--protocol", default="knn,linear")
    p.add_argument("--dataset", "--data", dest="dataset", default=None,
                   help="scene: comma list of eurosat, ucmerced, folder:PATH, torchgeo:CLASS{key: value, ...} "
                   "(default eurosat,ucmerced); "
                   "segmentation: dubai or an image/mask folder; change: levir or a LEVIR-CD-layout folder; "
                   "detection: neon, a COCO json, a VOC folder or images with CSV/XML boxes (default: the shared set)")
    p.add_argument("--data-root", default=None, help="folder holding eurosat_rgb/, ucmerced/ (default ../shared/data)")
    p.add_argument("--out", default=None)
    p.add_argument("--max-train-per-class", type=PositiveInt, default=None)
    p.add_argument("--weights-file", default=None,
                   help="the local file of a torchgeo:ENUM.MEMBER source (torchgeo's published .pth; never downloaded)")
    p.add_argument("--embedding-points", type=NonNegativeInt, default=1000,
                   help="scene: a t-SNE map per model of this many test images, side by side (embeddings_*.png); 0: none")
    p.add_argument("--image-size", type=PositiveInt, default=None,
                   help="scene: input size; dense tasks: crop/window size")
    p.add_argument("--batch-size", type=PositiveInt, default=None, help="default 256 (scene) or the dense task's")
    p.add_argument("--epochs", type=PositiveInt, default=None, help="dense tasks: training epochs (default per task)")
    p.add_argument("--freeze-backbone", action="store_true", help="dense tasks: train the decoder only")
    p.add_argument("--norm-eval", action="store_true",
                   help="dense tasks: fine-tune the backbone with its BatchNorm in eval mode (pretrained statistics)")
    p.add_argument("--input-statistics", choices=("encoder", "train"), default=None,
                   help="dense tasks: standardise inputs with the backbone's pretraining mean/std (encoder, default) "
                        "or the task's training images' own (train: a backbone pretrained on other imagery)")
    p.add_argument("--predict-raster", default=None,
                   help="segmentation: comma list of GeoTIFFs to predict whole; change: BEFORE.tif,AFTER.tif")
    p.add_argument("--precision", default=None, help="dense tasks: Lightning precision of training (e.g. bf16-mixed)")
    p.add_argument("--device", default=None, help="dense tasks: cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--devices", type=PositiveInt, default=None,
                   help="dense tasks: DDP training processes (under torchrun, or spawned); rank 0 scores")
    p.add_argument("--resume", action="store_true",
                   help="dense tasks: continue each model's training from OUT/training/<model>/checkpoints/last.ckpt")
    p.add_argument("--trainer", type=dict[str, Any], default={},
                   help="dense tasks: any further lightning.Trainer argument (--trainer.gradient_clip_val 1.0)")

    p = sub.add_parser("export", help="export the pretrained backbone to safetensors + JSON metadata")
    p.add_argument("checkpoint")
    p.add_argument("--to", required=True)
    p.add_argument("--network", choices=("student", "teacher"), default=None,
                   help="which network's backbone (default: the method's own choice, e.g. GeoKR's teacher)")
    p.add_argument("--format", choices=("safetensors", "timm", "torchgeo"), default="safetensors",
                   help="safetensors: one file + JSON; timm: a folder in timm's layout (config.json, "
                   "model.safetensors, README.md) for timm.create_model('local-dir:PATH') and the Hugging Face hub; "
                   "torchgeo: one file for torchgeo's tasks (weights=PATH)")

    p = sub.add_parser(
        "prepare",
        help="write an image source or raster scenes to sharded, streamable chunks for pretraining at scale "
        "(shards:DIR)",
        description="List SOURCE (eurosat, ucmerced, cifar10, folder:PATH with one folder per class -- ImageNet's "
        "train/ --, unlabeled:PATH for a folder searched recursively -- Million-AID --, a .txt list or a .zip), check "
        "that every image decodes, and write the original bytes to litdata chunks in --out with a manifest (classes, "
        "bands, per-band statistics). Raster scenes (geotiff:A.tif;B.tif, landcover:... with --option.land_cover "
        "PRODUCT --option.scheme nlcd8 --option.tile 256 ...: the options of data.dataset_options) are tiled once, "
        "exactly as in memory, and their tiles (with land-cover proportions) written losslessly. Parallel over "
        "--workers processes; rerunning after a kill resumes.",
    )
    p.add_argument("source")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--workers", type=PositiveInt, default=None, help="writer processes (default: the CPU count)")
    p.add_argument("--split", default="all", help="split of a named set (default all)")
    p.add_argument("--max-per-class", type=PositiveInt, default=None,
                   help="named sets: at most this many images per class")
    p.add_argument("--data-root", default=None)
    p.add_argument("--chunk-bytes", default="64MB", help="size of each chunk file (default 64MB)")
    p.add_argument("--skip-corrupt", action="store_true", help="leave unreadable images out, counted and named")
    p.add_argument("--max-image-pixels", type=PositiveInt, default=DEFAULT_MAX_IMAGE_PIXELS,
                   help="largest image (width x height) read; larger ones are errors, or skipped with --skip-corrupt")
    p.add_argument("--stats-max-images", type=PositiveInt, default=2000, help="images in the band-statistics sample")
    p.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--option", type=dict[str, Any], default={}, help="further source options (--option.extensions "
                   "[.jpg])")

    p = sub.add_parser(
        "landcover-labels",
        help="land-cover class proportions of every image tile (GeoKR's labels) to a Parquet file",
        description="Tile the image (bands from one file or stacked single-band files), warp the land-cover product "
        "onto each tile's footprint (any CRS and resolution; nodata and codes without a class are not counted) and "
        "write the class proportions. Tiles outside the product's extent or without land cover are dropped and "
        "counted.",
    )
    p.add_argument("--images", required=True, help="image GeoTIFF, or comma list of single-band files to stack")
    p.add_argument("--landcover", required=True, help="single-band land-cover raster (e.g. NLCD, GlobeLand30)")
    p.add_argument("--scheme", required=True, help="nlcd, nlcd8, globeland30, globeland30_8, worldcover, or a CSV")
    p.add_argument("--tile", type=PositiveInt, default=64)
    p.add_argument("--stride", type=PositiveInt, default=None, help="default: the tile size (no overlap)")
    p.add_argument("--max-nodata-fraction", type=ClosedUnitInterval, default=0.0,
                   help="image nodata a kept tile may have")
    p.add_argument("--min-land-cover-fraction", type=ClosedUnitInterval, default=0.0,
                   help="counted land cover a kept tile needs (0: at least one pixel)")
    p.add_argument("--supersample", default="auto", help="sub-pixels per image pixel side, or auto")
    p.add_argument("--out", required=True, help="output .parquet file")

    p = sub.add_parser("info", config=False,
                       help="print the provenance/metadata of a run dir, checkpoint or exported backbone")
    p.add_argument("path")

    p = sub.add_parser(
        "benchmark",
        help="pretrain methods under an equal budget and score them side by side (table + plot)",
        description="Each --runs entry trains in its own process for the same --budget-minutes (or --max-steps), "
        "then every backbone, a random-init one and the image-statistics baseline are scored by kNN and linear "
        "probe with 95 percent CIs. Rerunning the same command resumes a half-finished benchmark.",
    )
    if benchmark_arguments:
        from rspretrain.apps import benchmark

        benchmark.add_arguments(p)

    p = sub.add_parser("quickstart", help="short MoCo v2 pretraining on EuroSAT + kNN/linear evaluation")
    p.add_argument("--out", default="runs/quickstart")
    p.add_argument("--minutes", type=PositiveFloat, default=4.0,
                   help="pretraining budget (wall clock; the lr schedule is fitted to the steps that fit)")
    p.add_argument("--steps", type=PositiveInt, default=5000, help="at most this many steps")
    p.add_argument("--fp32", action="store_true",
                   help="the plain fp32 step (no bf16 autocast, no channels_last), to compare with the fast default")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier quickstart run in --out")
    p.add_argument("--data-root", default=None)
    p.add_argument("--max-train-per-class", type=PositiveInt, default=None)
    # Off by default: the rule is that it stays on only if it slows the quickstart's pretraining by at most 5 %.
    # benchmarks/knn_monitor_overhead.py (642 steps, QUICKSTART_MONITOR): the monitor's own time is 4.6 % of the
    # unmonitored run, but the whole monitored run took 1.12x (one pair; 0.97x and 1.15x in two pairs of the larger
    # setting), so by the conservative reading it slows the quickstart by more than 5 %.
    p.add_argument("--knn-monitor", action=argparse.BooleanOptionalAction, default=False,
                   help="score a weighted kNN on held-out EuroSAT every 200 steps while pretraining (logs/metrics.csv, "
                        "training_curves.png); off by default (it costs 5-12 %% of the pretraining)")

    p = sub.add_parser(
        "finetune",
        help="fine-tune a backbone for scene classification (plain or SSKDNet) and score it",
        usage="rspretrain finetune [--method finetune|sskdnet] [--dataset NAME] [--train-ratio R] [--init SOURCE] "
        "[options] [--model.key VALUE] [--optim.key VALUE] [--augment.key VALUE]",
        description="Train on the train split for --epochs, then report overall accuracy, per-class accuracy and "
        "the confusion matrix of the inference network on the test split (metrics.json, confusion_matrix.png, "
        "model.safetensors, backbone.safetensors). --model.key VALUE sets a task knob (e.g. --model.kd_weight 0, "
        "--model.shuffle false, --model.fusion false); --optim.key and --augment.key override the optimiser and "
        "augmentation.",
    )
    p.add_argument("--method", default="finetune", help="finetune (plain) or sskdnet")
    p.add_argument("--dataset", "--data", dest="dataset", default="ucmerced", help="eurosat, ucmerced or folder:PATH")
    p.add_argument("--train-ratio", type=OpenUnitInterval, default=None,
                   help="UC Merced / folder: train fraction (default 0.8)")
    p.add_argument("--init", default="random", help="random, a pretraining .ckpt or an exported .safetensors")
    p.add_argument("--backbone", default=None, help="timm architecture (default: the init's, or resnet18)")
    p.add_argument("--epochs", type=PositiveInt, default=30)
    p.add_argument("--batch-size", type=PositiveInt, default=32)
    p.add_argument("--image-size", type=PositiveInt, default=64)
    p.add_argument("--max-train-per-class", type=PositiveInt, default=None)
    p.add_argument("--max-test-per-class", type=PositiveInt, default=None)
    p.add_argument("--seed", type=NonNegativeInt, default=0)
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", default=None, help="default runs/finetune/<method>_<dataset>_seed<seed>")
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--precision", default="32-true", help="Lightning precision of training (e.g. bf16-mixed)")
    p.add_argument("--devices", type=PositiveInt, default=1,
                   help="DDP training processes (under torchrun, or spawned); --batch-size is the global batch")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.ckpt")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    for section, what in (("model", "task knobs (--model.kd_weight 0)"), ("optim", "optimiser (--optim.lr 0.01)"),
                          ("augment", "augmentation (--augment.crop_scale_min 0.5)"),
                          ("trainer", "any further lightning.Trainer argument (--trainer.gradient_clip_val 1.0)")):
        p.add_argument(f"--{section}", type=dict[str, Any], default={}, help=what)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _run_config_command(argv)
    debug = "--debug" in argv[: argv.index(command)] if command else "--debug" in argv
    try:
        args = parse_command_line(argv)
    except RSPretrainError as err:
        if debug:
            raise
        print(f"rspretrain: error: {err}", file=sys.stderr)
        return 2
    if not log.handlers:  # our own handler only: Lightning configures its loggers itself
        handler = _CurrentStderrHandler()
        handler.setFormatter(logging.Formatter("rspretrain: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    commands = {
        "pretrain": cmd_pretrain, "evaluate": cmd_evaluate, "export": cmd_export, "info": cmd_info,
        "landcover-labels": cmd_landcover_labels, "prepare": cmd_prepare,
        "benchmark": cmd_benchmark,
        "quickstart": cmd_quickstart, "finetune": cmd_finetune, "plan": cmd_plan,
    }
    try:
        status = commands[args.command](args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"rspretrain: interrupted{_resume_hint(args, argv)}", file=sys.stderr)
        return 130  # the shell's code for a run ended by SIGINT
    except RSPretrainError as err:
        if args.debug:
            raise
        print(f"rspretrain: error: {err}", file=sys.stderr)
        if isinstance(err, NonFiniteLossError):  # raised by every rank at the same step: safe to end
            destroy_process_group()
        return 2
    destroy_process_group()
    return status


def _resume_hint(args: argparse.Namespace, argv: list[str]) -> str:
    """For an interrupted ``pretrain``: how to continue it (its own command line with ``--resume``)."""
    if args.command != "pretrain":
        return ""
    command = " ".join(["rspretrain", *argv] + ([] if "--resume" in argv else ["--resume"]))
    return f"; the last checkpoint is kept, continue with: {command}"


def _run_config_command(argv: list[str]) -> str | None:
    """``pretrain`` or ``plan`` when that is the command (the first word that is not an option): their tails go to
    the run config's parser."""
    command = next((a for a in argv if not a.startswith("-")), None)
    return command if command in ("pretrain", "plan") else None


def parse_command_line(argv: list[str]):
    """The chosen command's options (``.command``, ``.debug``, and for ``pretrain`` the raw ``.args`` tail, which
    the run config's parser reads). A bad option is a one-line ConfigError naming it."""
    from rspretrain.core.config import parse_arguments

    parser = build_parser(benchmark_arguments="benchmark" in argv)
    tail: list[str] = []
    command = _run_config_command(argv)
    if command is not None:  # METHOD then --section.key overrides: read by the run config's own parser
        at = argv.index(command)
        argv, tail = argv[: at + 1], argv[at + 1 :]
        if "-h" in tail or "--help" in tail:
            parser.parse_args(argv + ["--help"])
    values = parse_arguments(parser, argv)
    command = values["command"]
    args = argparse.Namespace(**(values.get(command) or {}), command=command, debug=values.get("debug", False))
    args.args = tail
    return args


def destroy_process_group() -> None:
    """End the DDP process group Lightning opened, while the interpreter is still whole.

    Lightning leaves it open; at interpreter exit gloo's worker threads are then torn down after
    Python's and a rank can abort ("terminate called without an active exception", SIGABRT), which
    torchrun reports as a failed run. Called only after a command succeeded on this rank, or after
    a non-finite loss (every rank raises it at the same step): a collective shutdown while another
    rank is failing could hang (PyTorch's shutdown docs).
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
