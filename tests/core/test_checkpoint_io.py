"""Atomic writes: a write that runs out of space is one line naming the file, and the earlier file stays whole.

The full disk is a file-size limit (``RLIMIT_FSIZE``) in a child process: the same failed ``write`` a full disk gives
(``EFBIG`` instead of ``ENOSPC``), without filling a real disk; the child ignores ``SIGXFSZ`` as a process on a full
disk gets no signal either.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import torch

CHILD = textwrap.dedent("""
    import resource, signal, sys, torch
    from rspretrain.core.checkpoint_io import atomic_torch_save, atomic_write_text
    from rspretrain.core.errors import DataError
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    ckpt, text = sys.argv[1], sys.argv[2]
    atomic_torch_save({"w": torch.zeros(10)}, ckpt)
    atomic_write_text(text, "earlier")
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    for write in (lambda: atomic_torch_save({"w": torch.zeros(1 << 20)}, ckpt),
                  lambda: atomic_write_text(text, "x" * (2 << 20))):
        try:
            write()
        except DataError as err:
            print("DataError:", err)
""")


def test_a_write_without_space_is_one_line_and_keeps_the_earlier_file(tmp_path):
    ckpt, text = tmp_path / "last.ckpt", tmp_path / "metrics.json"
    out = subprocess.run([sys.executable, "-c", CHILD, str(ckpt), str(text)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2, out.stdout
    assert lines[0].startswith(f"DataError: {ckpt}: could not be written (") and "GB free on its disk" in lines[0]
    assert lines[0].endswith("the earlier file is kept") and "File too large" in lines[0]  # the cause, not the zip
    assert "it needs about 4.0 MB, 1.0 MB were written" in lines[0]  # 2**20 float32s; the limit it ran into
    assert lines[1].startswith(f"DataError: {text}: could not be written (") and "File too large" in lines[1]
    assert "it needs about 2.0 MB" in lines[1]
    assert torch.load(ckpt, weights_only=True)["w"].numel() == 10 and text.read_text() == "earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "metrics.json"]  # no temporary left
