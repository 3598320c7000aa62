"""A real ``nabla serve`` (gunicorn) for tests, and a small browser that can choose
its source address on the loopback network (127.0.0.2, 127.0.0.3, ...)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from .helpers import csrf_token_in, stop_process_group

HOST = "127.0.0.1"


# Below the kernel's ephemeral range (32768-60999 by default), where a port bind(0)
# gave us may be taken by any client connection's source port before gunicorn binds it.
SERVER_PORTS = range(20000, 32000)


def free_port() -> int:
    """A loopback port nobody listens on, outside the ephemeral range (another test's
    connections cannot take it meanwhile); a server that still loses it is started
    again on another (LiveServer)."""
    import random

    for _ in range(100):
        port = random.choice(SERVER_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class LiveServer:
    """``nabla serve`` on a free loopback port; ``stop()`` ends its process group."""

    def __init__(self, env: dict[str, str], workers: int = 2, threads: int = 2) -> None:
        self.env, self.workers, self.threads = env, workers, threads
        # A file, not a pipe: nobody reads a pipe while the test runs, and a full
        # one would stop gunicorn.
        self.log = tempfile.TemporaryFile()
        self._start()

    def _start(self) -> None:
        self.port = free_port()
        nabla = Path(sys.executable).with_name("nabla")
        self.process = subprocess.Popen(
            [str(nabla), "serve", "--bind", f"{HOST}:{self.port}", "--workers",
             str(self.workers), "--threads", str(self.threads)],
            env={**os.environ, **self.env}, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)

    def output(self, tail: int | None = 3000) -> str:
        """What the server printed so far: the last ``tail`` characters, or all of it."""
        self.log.seek(0)
        text = self.log.read().decode(errors="replace")
        return text if tail is None else text[-tail:]

    def wait_until_up(self, timeout: float = 60) -> int:
        """The status of GET /login once the server answers (or a clear failure)."""
        deadline = time.monotonic() + timeout
        restarts = 0
        while time.monotonic() < deadline:
            connection = http.client.HTTPConnection(HOST, self.port, timeout=2)
            try:
                connection.request("GET", "/login")
                return connection.getresponse().status
            except (OSError, http.client.HTTPException):
                if self.process.poll() is not None:
                    if "Address already in use" not in self.output() or restarts == 3:
                        break
                    restarts += 1  # someone took the port between our look and its bind
                    self._start()
                time.sleep(0.2)
            finally:
                connection.close()
        raise AssertionError(f"nabla serve did not answer on port {self.port}: {self.output()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            stop_process_group(self.process)
        self.log.close()


@contextmanager
def nabla_serve(database_url: str, folder: Path, *, workers: int = 1, threads: int = 2,
                env: dict[str, str] | None = None) -> Iterator[str]:
    """A served app on ``database_url`` with instance folder ``folder``; yields its base
    URL once ``GET /login`` answers 200."""
    server = LiveServer({"NABLA_DATABASE_URL": database_url,
                         "NABLA_INSTANCE_PATH": str(folder), **(env or {})},
                        workers=workers, threads=threads)
    try:
        assert server.wait_until_up(30) == 200, server.output()
        yield f"http://{HOST}:{server.port}"
    finally:
        server.stop()


def nabla_command(args: list[str], env: dict[str, str], timeout: float = 120) -> str:
    """Run ``nabla ARGS`` with these settings (besides the environment); its output, once
    it exited 0 (else a failure showing what it said)."""
    nabla = str(Path(sys.executable).with_name("nabla"))
    done = subprocess.run([nabla, *args], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@contextmanager
def demo_site(database_url: str, folder: Path, *, env: dict[str, str] | None = None,
              workers: int = 1, threads: int = 4) -> Iterator[str]:
    """``nabla db upgrade``, ``nabla demo`` (DEMO101, its logins) and ``nabla serve`` on an
    empty database; yields the site's base URL."""
    settings = {"NABLA_DATABASE_URL": database_url, "NABLA_INSTANCE_PATH": str(folder),
                **(env or {})}
    for command in (["db", "upgrade"], ["demo"]):
        nabla_command(command, settings)
    with nabla_serve(database_url, folder, workers=workers, threads=threads,
                     env=settings) as base:
        yield base


class Browser:
    """Cookies, CSRF tokens and one source address; a new connection per request,
    so that gunicorn's workers take turns."""

    def __init__(self, port: int, source: str = HOST) -> None:
        self.port, self.source = port, source
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: bytes | str | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any, str]:
        connection = http.client.HTTPConnection(HOST, self.port, timeout=60,
                                                source_address=(self.source, 0))
        all_headers = {"Connection": "close", **(headers or {})}
        if self.cookies:
            all_headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        try:
            connection.request(method, path, body=body, headers=all_headers)
            response = connection.getresponse()
            text = response.read().decode()
        finally:
            connection.close()
        for header in response.headers.get_all("Set-Cookie") or []:
            cookie = SimpleCookie()
            cookie.load(header)
            self.cookies.update({name: morsel.value for name, morsel in cookie.items()})
        return response.status, response.headers, text

    def login(self, email: str, password: str) -> tuple[int, Any, str]:
        _, _, page = self.request("GET", "/login")
        token = csrf_token_in(page, "/login")
        form = urllib.parse.urlencode({"email": email, "password": password,
                                       "csrf_token": token})
        return self.request("POST", "/login", form,
                            {"Content-Type": "application/x-www-form-urlencoded"})

    def post_json(self, path: str, document: Any, token: str) -> tuple[int, Any, Any]:
        status, headers, text = self.request(
            "POST", path, json.dumps(document),
            {"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        return status, headers, json.loads(text)
