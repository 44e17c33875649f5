"""Export a pretrained backbone to safetensors with its band and normalisation metadata.

The file holds the timm model's own ``state_dict`` (so ``timm.create_model(arch, in_chans=...)``
loads it with no key renaming) and, in the safetensors header and a JSON file beside it, the
metadata a user needs to feed it correctly: architecture, timm kwargs, in_chans, band names
and order, per-band mean/std, value scale and input size. :func:`load_backbone` returns a
plain timm model with that metadata attached as ``model.rs_meta`` and refuses input bands
that do not match (:func:`check_bands`).

The two files are one unit: both are written in full to temp files, then renamed into place one after the other
with SIGINT / SIGTERM held back until both are done (a Ctrl-C during an export over an earlier one used to leave
the new weights beside the old JSON). The header is the export's truth; a JSON beside it that differs (a kill
between the two renames) is rewritten from the header when the export is read, with a warning.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from rspretrain.core.bands import check_bands
from rspretrain.core.checkpoint_io import default_file_mode
from rspretrain.core.errors import ConfigError, DataError
from rspretrain.core.json_io import dumps, write_json
from rspretrain.nn.backbones import local_arch

log = logging.getLogger("rspretrain")

META_KEY = "rspretrain"


def export_backbone(method, path: str | Path, source: str | None = None) -> Path:
    """Write ``method``'s exported backbone to ``path`` (.safetensors) and ``path.json``."""
    backbone = method.backbone_to_export()
    return _save_with_metadata(backbone.model.state_dict(), method.export_metadata(), path, source)


def export_timm_folder(method, folder: str | Path, source: str | None = None) -> Path:
    """Write ``method``'s exported backbone in timm's folder layout: ``config.json`` (``architecture``, ``model_args``,
    ``pretrained_cfg`` with the bands' mean / std and the input size, written by timm's own
    ``save_config_for_hf``; rspretrain's metadata under ``"rspretrain"``), ``model.safetensors`` (the timm state
    dict, with the same metadata in its header as :func:`export_backbone`'s file) and a model card ``README.md``.

    ``timm.create_model("local-dir:FOLDER", pretrained=True)`` builds it, ``push_to_hf_hub`` / ``huggingface-cli
    upload`` publish it, and :func:`load_backbone` reads it with the band check. The folder is one unit: written
    beside, then swapped in with SIGINT / SIGTERM held, so an interrupted export leaves the earlier folder whole.
    """
    from timm.models import save_for_hf

    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or (any(folder.iterdir()) and not (folder / "config.json").is_file())):
        raise ConfigError(f"{folder}: exists and is not an earlier timm-layout export; give a new or empty folder")
    net = method.backbone_to_export().model
    meta = _stamped(method.export_metadata(), source)
    tmp = folder.with_name(f".{folder.name}.tmp")
    old = folder.with_name(f".{folder.name}.old")
    for stale in (tmp, old):
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        preprocessing = {"mean": tuple(meta["mean"]), "std": tuple(meta["std"]),
                         "input_size": tuple(meta["input_size"])}
        # timm's own writer for config.json (and a plain model.safetensors, replaced below by the same tensors with
        # rspretrain's metadata in the header, so the file alone still carries its bands)
        save_for_hf(net, str(tmp), model_config={"pretrained_cfg": preprocessing, "rspretrain": meta},
                    safe_serialization=True, data_config=preprocessing)
        weights = tmp / "model.safetensors"
        save_file({k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}, str(weights),
                  metadata={META_KEY: json.dumps(meta)})
        for written in tmp.iterdir():
            os.chmod(written, default_file_mode())
        (tmp / "README.md").write_text(_model_card(folder.name, meta))
        with _signals_held():
            if folder.exists():
                folder.rename(old)
            tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return folder


def export_torchgeo(method, path: str | Path, source: str | None = None) -> Path:
    """Write ``method``'s exported backbone as a file torchgeo's tasks take as ``weights=PATH``.

    torchgeo's trainers (``ClassificationTask``, ``RegressionTask``, ``SemanticSegmentationTask``, ``MoCoTask``, ...)
    read a path with ``torchgeo.trainers.utils.extract_backbone``: a ``torch.load``-able dict whose
    ``hyper_parameters["model"]`` is the timm architecture and whose ``state_dict`` holds the backbone under
    ``model.``; they build ``timm.create_model(model, in_chans=in_channels)`` (a segmentation task: the encoder of
    that name) and load it. So the file is ``{"state_dict": {"model." + timm key: tensor}, "hyper_parameters":
    {"model": arch, "in_channels": in_chans}, "rspretrain": metadata}`` (bands, mean/std, value scale: torchgeo does
    not read them; pass ``in_channels`` equal to ``in_chans``). It loads with ``weights_only=True``. Written to a
    temp file, then renamed into place with SIGINT / SIGTERM held; a path without a suffix gets ``.ckpt``.

    Raises:
        ConfigError: ``path`` is a folder; or torchgeo's ``timm.create_model(arch, in_chans=...)`` would not build
            this backbone's shapes (e.g. a ViT or Swin trained at another input size: torchgeo passes no ``img_size``),
            or a timm key holds ``model.`` (torchgeo strips every occurrence).
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give the export's file name, e.g. {path / 'backbone.ckpt'}")
    if not path.suffix:
        path = path.with_suffix(".ckpt")
    net = method.backbone_to_export().model
    meta = json.loads(dumps(_stamped(method.export_metadata(), source)))  # plain types: weights_only loads them
    state = {k: v.detach().contiguous().cpu().clone() for k, v in net.state_dict().items()}
    rebuilt = timm.create_model(meta["arch"], pretrained=False, num_classes=0, in_chans=meta["in_chans"]).state_dict()
    differing = [k for k in state if k not in rebuilt or tuple(rebuilt[k].shape) != tuple(state[k].shape)]
    differing += [k for k in rebuilt if k not in state]
    if differing:
        key = differing[0]
        shapes = (f" ({tuple(state[key].shape)} here, {tuple(rebuilt[key].shape)} in torchgeo's)"
                  if key in state and key in rebuilt else "")
        raise ConfigError(f"--format torchgeo: torchgeo builds timm.create_model({meta['arch']!r}, in_chans="
                          f"{meta['in_chans']}) with no other arguments, and that model differs from this backbone "
                          f"(built with {meta.get('timm_kwargs') or {}}) at {key!r}{shapes}; export as safetensors "
                          "or --format timm instead")
    clashing = [k for k in state if "model." in k]
    if clashing:
        raise ConfigError(f"--format torchgeo: the timm key {clashing[0]!r} holds 'model.', which torchgeo's "
                          "extract_backbone strips everywhere; this backbone cannot be written in torchgeo's layout")
    checkpoint = {
        "state_dict": {f"model.{k}": v for k, v in state.items()},
        "hyper_parameters": {"model": meta["arch"], "in_channels": meta["in_chans"]},
        META_KEY: meta,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.save(checkpoint, tmp)
        os.chmod(tmp, default_file_mode())
        with _signals_held():
            tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _model_card(name: str, meta: dict[str, Any]) -> str:
    """A Hugging Face model card (YAML front matter + text) for a timm-layout export."""
    bands = ", ".join(map(str, meta.get("band_names") or [])) or f"{meta['in_chans']} unnamed bands"
    return (f"---\nlibrary_name: timm\ntags:\n- timm\n- remote-sensing\n- rspretrain\n- {meta.get('method')}\n"
            f"pipeline_tag: image-feature-extraction\n---\n# {name}\n\n"
            f"A {meta['arch']} backbone pretrained with {meta.get('method')} by rspretrain "
            f"{meta.get('rspretrain_version')} (source: {meta.get('source')}).\n\n"
            f"- Bands, in order: {bands}; value scale: {meta.get('value_scale')}\n"
            f"- Normalisation: mean {meta['mean']}, std {meta['std']}; input size {meta['input_size']}\n\n"
            f"Load: `timm.create_model('local-dir:PATH', pretrained=True, num_classes=0)`, or "
            "`rspretrain.backbones.load(PATH, band_names=...)`, which checks the bands. The method, recipe and "
            "provenance are in `config.json` under `rspretrain`.\n")


def _stamped(meta: dict[str, Any], source: str | None) -> dict[str, Any]:
    """``meta`` plus where and when it was exported."""
    from rspretrain import __version__

    return {**meta, "source": str(source) if source else None, "rspretrain_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _save_with_metadata(state: dict[str, torch.Tensor], meta: dict[str, Any], path: str | Path,
                        source: str | None) -> Path:
    """Write ``state`` to ``path`` (.safetensors) with ``meta`` in its header and in ``path.json``, atomically."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give the export's file name, e.g. {path / 'backbone.safetensors'}")
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = _stamped(meta, source)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    tmp = path.with_name(f".{path.name}.tmp")
    sidecar = path.with_suffix(".json")
    tmp_sidecar = sidecar.with_name(f".{sidecar.name}.tmp")
    try:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta)})
        os.chmod(tmp, default_file_mode())  # safetensors 0.8 creates its file 0600
        tmp_sidecar.write_text(dumps(meta))
        with _signals_held():
            tmp.replace(path)
            tmp_sidecar.replace(sidecar)
    finally:
        tmp.unlink(missing_ok=True)
        tmp_sidecar.unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def _signals_held():
    """SIGINT and SIGTERM that arrive inside the block are delivered when it ends (main thread only).

    The Python handlers are swapped for ones that only record the signal, then the recorded signals are raised
    again to the original handlers. Blocking them with ``pthread_sigmask`` would not do: it masks the calling thread
    only, and the kernel hands a process signal to another thread (torch's) that leaves it unblocked.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {}
    for number in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(number) is not None:  # None: a handler set outside Python, left as it is
            previous[number] = signal.signal(number, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for number in dict.fromkeys(received):
            signal.raise_signal(number)


def _repair_sidecar(path: Path, meta: dict[str, Any]) -> None:
    """Rewrite ``path.json`` from the header when it differs (an export killed between its two renames)."""
    sidecar = path.with_suffix(".json")
    try:
        if not sidecar.is_file() or json.loads(sidecar.read_text()) == json.loads(dumps(meta)):
            return
    except (OSError, json.JSONDecodeError):
        pass
    try:
        write_json(sidecar, meta)
        log.warning("%s did not match the metadata in %s (an interrupted export); rewritten from it", sidecar, path)
    except OSError as err:
        log.warning("%s does not match the metadata in %s, which is the export's truth (%s)", sidecar, path, err)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The rspretrain metadata stored in an exported safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as err:  # noqa: BLE001 - safetensors raises several types
        raise DataError(f"{path}: not a readable safetensors file ({err})") from None
    if META_KEY not in header:
        raise DataError(f"{path}: safetensors file has no rspretrain metadata (not exported by rspretrain)")
    try:
        meta = json.loads(header[META_KEY])
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: its rspretrain metadata is not valid JSON ({err})") from None
    missing = [key for key in ("arch", "in_chans", "mean", "std", "input_size") if key not in meta] if isinstance(
        meta, dict) else []
    if not isinstance(meta, dict) or missing:
        raise DataError(f"{path}: its rspretrain metadata lacks {', '.join(missing) or 'everything'} (a damaged or "
                        "foreign export)")
    try:  # the architecture name comes from the file: only a local timm model, never a hub download
        local_arch(meta["arch"], str(path))
    except ConfigError as err:
        raise DataError(str(err)) from None
    _repair_sidecar(path, meta)
    return meta


def load_backbone(
    path: str | Path, band_names: Sequence[str] | None = None, in_chans: int | None = None
) -> torch.nn.Module:
    """Load an exported backbone as a plain timm model (``num_classes=0``, pooled output).

    Args:
        path: the .safetensors file written by :func:`export_backbone`.
        band_names: the bands the caller will feed, in order; checked against the export.
        in_chans: the band count the caller will feed; checked against the export.
    """
    if Path(path).is_dir():  # timm's folder layout (export_timm_folder): its weights file has the same header
        path = Path(path) / "model.safetensors"
    meta = read_metadata(path)
    if meta.get("kind") == "scene_classifier":
        raise DataError(f"{path}: an exported scene classifier, not a backbone (use load_scene_classifier)")
    check_bands(meta.get("band_names"), band_names, str(path), meta["in_chans"], in_chans)
    model = timm.create_model(
        meta["arch"], pretrained=False, num_classes=0, in_chans=meta["in_chans"], **(meta.get("timm_kwargs") or {})
    )
    load_weights(model, load_file(str(path)), path, meta["arch"])
    model.rs_meta = meta
    model.pretrained_cfg = {
        **getattr(model, "pretrained_cfg", {}),
        "mean": tuple(meta["mean"]),
        "std": tuple(meta["std"]),
        "input_size": tuple(meta["input_size"]),
    }
    return model


def export_scene_classifier(task, path: str | Path, source: str | None = None) -> Path:
    """Write a scene-classification task's inference network -- backbone (+ fusion) + classifier, no training-only
    branch -- to ``path`` (.safetensors, keys of ``task.net.state_dict()``) and ``path.json``.

    The metadata holds everything :func:`load_scene_classifier` needs: the backbone's (as in :func:`export_backbone`)
    plus ``kind="scene_classifier"``, ``num_classes``, ``classes`` and the fusion settings.
    """
    return _save_with_metadata(task.net.state_dict(), task.classifier_metadata(), path, source)


def load_scene_classifier(
    path: str | Path, band_names: Sequence[str] | None = None, in_chans: int | None = None
) -> torch.nn.Module:
    """Rebuild the :class:`~rspretrain.nn.scene_classifier.SceneClassifier` written by :func:`export_scene_classifier`
    (eval mode, metadata as ``model.rs_meta``); the caller's bands are checked as in :func:`load_backbone`."""
    from rspretrain.nn.backbones import Backbone
    from rspretrain.nn.scene_classifier import SceneClassifier

    meta = read_metadata(path)
    if meta.get("kind") != "scene_classifier":
        raise DataError(f"{path}: not an exported scene classifier (use load_backbone for exported backbones)")
    check_bands(meta.get("band_names"), band_names, str(path), meta["in_chans"], in_chans)
    backbone = Backbone(meta["arch"], in_chans=meta["in_chans"], timm_kwargs=meta.get("timm_kwargs") or None)
    model = SceneClassifier(
        backbone, meta["num_classes"], fusion_stages=meta.get("fusion_stages") or None,
        fusion_channels=meta.get("fusion_channels", 256), fusion_weighting=meta.get("fusion_weighting", "channel"),
        dropout=meta.get("dropout", 0.0),
    )  # fmt: skip
    load_weights(model, load_file(str(path)), path, "the classifier")
    model.rs_meta = meta
    return model.eval()


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path, what: str) -> None:
    """``model.load_state_dict(state)``, every key and shape required; a mismatch (a damaged or edited file whose
    metadata and tensors disagree, e.g. another ``in_chans``) is one :class:`DataError` naming ``path``."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # torch lists every size mismatch; the first says enough
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        first = next((line for line in lines if line.startswith("size mismatch")), lines[0] if lines else "")
        raise DataError(f"{path}: weights do not fit {what} ({first}); its metadata and tensors disagree "
                        "(a damaged or edited file)") from None
    if missing or unexpected:
        raise DataError(f"{path}: weights do not fit {what} (missing {missing[:3]}, unexpected {unexpected[:3]})")
