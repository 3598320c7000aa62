"""Start ``nabla serve`` (gunicorn) for a test, and stop it with its whole process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def nabla_serve(database_url: str, folder: Path, *, threads: int = 2) -> Iterator[tuple[str, str]]:
    """One worker on a free loopback port, instance folder ``folder``; yields the base
    URL and the body of the first ``GET /login`` (which must answer 200 within 30 s)."""
    port = free_port()
    env = {**os.environ, "NABLA_DATABASE_URL": database_url, "NABLA_INSTANCE_PATH": str(folder)}
    env.pop("NABLA_SECRET_KEY", None)
    log_path = folder / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("nabla")), "serve", "--bind",
             f"127.0.0.1:{port}", "--workers", "1", "--threads", str(threads)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(base + "/login", timeout=5) as response:
                    status, body = response.status, response.read().decode()
                break
            except OSError:  # URLError, a refused connection, a slow first answer
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("nabla serve did not answer:\n"
                                         + log_path.read_text()[-3000:]) from None
                time.sleep(0.2)
        assert status == 200, log_path.read_text()[-3000:]
        yield base, body
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
