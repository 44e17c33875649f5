"""Listing folders and zips: only regular files are images; what cannot be read is named at listing, not hung on or
misread later (issue 17, files)."""

import os
import zipfile

import pytest

from rspretrain.core.errors import DataError
from rspretrain.data import SceneFolder
from rspretrain.data.io.cache import cache_key
from rspretrain.data.io.listing import list_tree
from tests.conftest import write_jpegs


def test_a_fifo_named_like_an_image_is_refused_by_name_not_read(tmp_path):
    write_jpegs(tmp_path / "set", classes=("a", "b"), per_class=2)
    fifo = tmp_path / "set" / "a" / "stuck.jpg"
    os.mkfifo(fifo)  # reading it would block for ever
    with pytest.raises(DataError, match=r"stuck.jpg: not a regular file \(a FIFO"):
        SceneFolder(tmp_path / "set", image_size=32)


def test_looping_and_broken_links_are_named(tmp_path):
    write_jpegs(tmp_path / "set", classes=("a",), per_class=2)
    os.symlink(tmp_path / "set" / "a" / "y.jpg", tmp_path / "set" / "a" / "x.jpg")
    os.symlink(tmp_path / "set" / "a" / "x.jpg", tmp_path / "set" / "a" / "y.jpg")  # x -> y -> x
    with pytest.raises(DataError, match="x.jpg: a broken or looping link"):
        list_tree(tmp_path / "set")
    with pytest.raises(DataError, match="x.jpg: cannot be read"):
        cache_key([tmp_path / "set" / "a" / "x.jpg"], 32, False)


def test_a_folder_link_back_to_its_parent_is_listed_once(tmp_path):
    write_jpegs(tmp_path / "set", classes=("a",), per_class=2)
    os.symlink(tmp_path / "set", tmp_path / "set" / "a" / "up")  # os.walk(followlinks=True) would never end
    files = [e for e in list_tree(tmp_path / "set") if not e.is_dir]
    assert sorted(e.parts[-1] for e in files) == sorted(p.name for p in (tmp_path / "set" / "a").glob("*.jpg"))


@pytest.mark.parametrize("member", ["/abs/z.jpg", "a/../../z.jpg", "C:/z.jpg"])
def test_zip_members_outside_the_archive_root_are_refused_by_name(tmp_path, member):
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("a/ok.jpg", b"x")
        handle.writestr(zipfile.ZipInfo(member), b"x")
    with pytest.raises(DataError, match=f"set.zip:{member}: a member outside the archive's root"):
        list_tree(archive)
