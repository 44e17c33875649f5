import os
import signal
import socket
import subprocess
import sys
import time

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def s3_server(monkeypatch):
    """moto's S3-compatible server over HTTP on a free localhost port (a real server, not a mocked client)."""
    from moto.server import ThreadedMotoServer

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def kill_when_chunks_exist(script: str, out, chunks: int) -> int:
    """Run ``script`` (a ``prepare`` call) in its own process group and SIGKILL the group -- litdata's writers
    included -- once ``out`` holds ``chunks`` chunk files (or the process ended, or 120 s passed); its return code."""
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    deadline = time.time() + 120
    while len(list(out.glob("chunk-*.bin"))) < chunks and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait()
