"""`nabla serve` starts gunicorn with server:create_app() and serves pages."""

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .helpers import stop_process_group

pytestmark = pytest.mark.usefixtures("db_backend")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_nabla_serve_answers_http(database_url, tmp_path, session):
    port = _free_port()
    nabla = Path(sys.executable).with_name("nabla")
    env = {**os.environ, "NABLA_DATABASE_URL": database_url,
           "NABLA_INSTANCE_PATH": str(tmp_path)}
    env.pop("NABLA_SECRET_KEY", None)
    process = subprocess.Popen(
        [str(nabla), "serve", "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=2) as r:
                    status, body = r.status, r.read().decode()
                break
            except (urllib.error.URLError, ConnectionError):
                if process.poll() is not None:
                    break
                time.sleep(0.2)
        assert status == 200, process.stdout.read1().decode() if process.poll() else "timeout"
        assert "csrf_token" in body
        assert (tmp_path / "secret_key").exists()  # created once, before the workers
    finally:
        stop_process_group(process)
        process.stdout.close()
