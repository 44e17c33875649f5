import json

import pytest
import timm
import torch

from rspretrain import backbones
from rspretrain.core.errors import BandMismatchError, DataError
from rspretrain.pretrain.export import export_backbone, read_metadata
from rspretrain.pretrain.methods import MoCoV2


@pytest.fixture()
def method():
    torch.manual_seed(0)
    return MoCoV2(backbone="resnet18", in_chans=4, image_size=32, queue_size=16,
                  band_names=("blue", "green", "red", "nir"), mean=[0.1, 0.2, 0.3, 0.4], std=[0.5, 0.5, 0.5, 0.5]).eval()


def test_round_trip_gives_identical_features(method, tmp_path):
    path = export_backbone(method, tmp_path / "bb.safetensors", source="unit-test")
    model = backbones.load(path)
    x = torch.randn(3, 4, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), method.backbone.eval()(x))
    meta = json.loads((tmp_path / "bb.json").read_text())
    assert meta == read_metadata(path) == model.rs_meta
    assert meta["band_names"] == ["blue", "green", "red", "nir"]
    assert meta["arch"] == "resnet18" and meta["in_chans"] == 4 and meta["input_size"] == [4, 32, 32]
    assert model.pretrained_cfg["mean"] == (0.1, 0.2, 0.3, 0.4)
    # plain timm loads the same weights with no key renaming
    from safetensors.torch import load_file

    plain = timm.create_model("resnet18", num_classes=0, in_chans=4)
    plain.load_state_dict(load_file(str(path)))


def test_band_mismatch_is_a_clear_error(method, tmp_path):
    path = export_backbone(method, tmp_path / "bb.safetensors")
    with pytest.raises(BandMismatchError, match="3 bands"):
        backbones.load(path, in_chans=3)
    with pytest.raises(BandMismatchError, match="order"):
        backbones.load(path, band_names=("red", "green", "blue", "nir"))
    assert backbones.load(path, band_names=("blue", "green", "red", "nir"), in_chans=4) is not None


def test_not_an_export_is_an_error(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"not safetensors")
    with pytest.raises(DataError, match="x.safetensors"):
        backbones.load(bad)
    with pytest.raises(DataError, match="not found"):
        backbones.load(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("tamper, message", [
    (lambda meta: {**meta, "arch": "hf-hub:timm/resnet18.a1_in1k"}, "not a model of timm's local registry"),
    (lambda meta: {**meta, "arch": "no_such_net"}, "not a model of timm's local registry"),
    (lambda meta: {k: v for k, v in meta.items() if k != "in_chans"}, "metadata lacks in_chans"),
    (lambda meta: "{not json", "not valid JSON"),
    (lambda meta: {**meta, "in_chans": 7}, r"weights do not fit resnet18 \(size mismatch for conv1.weight"),
])
def test_tampered_or_foreign_metadata_is_one_error_and_never_reaches_the_network(method, tmp_path, tamper, message):
    # An architecture name read from a file is only ever a local timm model: a hub name would make timm download.
    from safetensors.torch import load_file, save_file

    from rspretrain.pretrain.export import META_KEY

    path = export_backbone(method, tmp_path / "bb.safetensors")
    meta = tamper(read_metadata(path))
    save_file(load_file(str(path)), str(path), metadata={META_KEY: meta if isinstance(meta, str) else json.dumps(meta)})
    with pytest.raises(DataError, match=f"bb.safetensors: .*{message}"):
        backbones.load(path)


def test_a_hub_backbone_name_in_a_config_is_refused_before_timm():
    from rspretrain.core.errors import ConfigError
    from rspretrain.nn.backbones import Backbone

    with pytest.raises(ConfigError, match="hub and URL names are refused"):
        Backbone("hf-hub:timm/resnet18.a1_in1k")


def test_an_export_over_an_earlier_one_is_one_unit(method, tmp_path, caplog):
    import logging
    import shutil

    path = export_backbone(method, tmp_path / "bb.safetensors", source="first")
    other = export_backbone(method, tmp_path / "other" / "bb.safetensors", source="second")
    # A kill between the two renames: the new weights and header, the old JSON beside them.
    shutil.copy(other, path)
    assert json.loads(path.with_suffix(".json").read_text())["source"] == "first"
    with caplog.at_level(logging.WARNING, logger="rspretrain"):
        assert read_metadata(path)["source"] == "second"
    assert json.loads(path.with_suffix(".json").read_text())["source"] == "second"  # rewritten from the header
    assert "did not match the metadata" in caplog.text
    # An export that fails while writing leaves the earlier one whole and no temp files.
    before = path.read_bytes(), path.with_suffix(".json").read_text()
    with pytest.raises(Exception):
        from rspretrain.pretrain.export import _save_with_metadata

        _save_with_metadata({"w": object()}, {"arch": "resnet18"}, path, "broken")
    assert (path.read_bytes(), path.with_suffix(".json").read_text()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bb.json", "bb.safetensors", "other"]


def test_an_interrupt_during_the_renames_waits_until_both_are_done():
    # In a child process: a real SIGINT must never reach the test runner itself.
    import subprocess
    import sys

    code = (
        "import os, signal\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from rspretrain.pretrain.export import _signals_held\n"
        "try:\n"
        "    with _signals_held():\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        print('both renames', flush=True)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted after', flush=True)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["both", "renames", "interrupted", "after"], proc.stderr[-2000:]


def test_an_existing_folder_as_target_is_refused_and_files_follow_the_umask(method, tmp_path):
    import os

    from rspretrain.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"is a folder; give the export's file name"):
        export_backbone(method, tmp_path)
    assert not (tmp_path.parent / f"{tmp_path.name}.safetensors").exists()  # nothing written beside the folder
    old = os.umask(0o022)
    try:
        path = export_backbone(method, tmp_path / "b.safetensors")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644 and path.with_suffix(".json").stat().st_mode & 0o777 == 0o644


def _tampered(model, tmp_path, name, edit):
    """The checkpoint entries load_method reads, of ``model``, edited by ``edit``, written to ``tmp_path/name``."""
    ckpt = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
            "rspretrain": {"method": "moco", "class_path": "rspretrain.pretrain.methods.moco.MoCoV2"}}
    edit(ckpt)
    torch.save(ckpt, tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.pop("state_dict"), "a damaged or foreign checkpoint \\(no state_dict\\)"),
    (lambda c: c["rspretrain"].update(method="nope"), "names method 'nope' but its class is .*MoCoV2 \\('moco'\\)"),
    (lambda c: c["rspretrain"].pop("class_path") and c["rspretrain"].update(method="nope"), "'nope' is not registered"),
    (lambda c: c["hyper_parameters"].update(no_such_argument=1), "hyper_parameters do not build MoCoV2"),
    (lambda c: c["state_dict"].pop(next(iter(c["state_dict"]))), "weights do not fit MoCoV2 \\(missing"),
])
def test_a_tampered_checkpoint_is_one_error_naming_it(method, tmp_path, edit, message):
    from rspretrain.pretrain.run import load_method

    path = _tampered(method, tmp_path, "t.ckpt", edit)
    with pytest.raises(DataError, match=f"t.ckpt: .*{message}"):
        load_method(path)
    assert load_method(_tampered(method, tmp_path, "ok.ckpt", lambda c: None)) is not None  # the untampered loads


def test_the_timm_folder_layout_loads_in_timm_and_in_rspretrain_with_the_same_features(method, tmp_path):
    from rspretrain.core.errors import ConfigError
    from rspretrain.pretrain.export import export_timm_folder

    folder = export_timm_folder(method, tmp_path / "bb", source="run.ckpt")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "resnet18" and config["model_args"]["in_chans"] == 4
    assert config["pretrained_cfg"]["mean"] == [0.1, 0.2, 0.3, 0.4] and config["rspretrain"]["source"] == "run.ckpt"
    x = torch.rand(2, 4, 32, 32)
    with torch.no_grad():
        expected = method.backbone_to_export().model.eval()(x)
        by_timm = timm.create_model(f"local-dir:{folder}", pretrained=True, num_classes=0).eval()(x)
        by_us = backbones.load(folder, band_names=("blue", "green", "red", "nir")).eval()(x)
    torch.testing.assert_close(by_timm, expected)
    torch.testing.assert_close(by_us, expected)
    with pytest.raises(BandMismatchError):
        backbones.load(folder, in_chans=3)
    # a second export replaces the folder as one unit; a folder that is not an export is refused
    assert export_timm_folder(method, folder) == folder and not list(tmp_path.glob(".bb.*"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an earlier timm-layout export"):
        export_timm_folder(method, tmp_path / "other")
