"""`nabla serve` starts gunicorn with server:create_app() and serves pages."""

import urllib.request

import pytest

from .live import HOST, LiveServer

pytestmark = pytest.mark.usefixtures("db_backend")


def test_nabla_serve_answers_http(database_url, tmp_path, session, monkeypatch):
    monkeypatch.delenv("NABLA_SECRET_KEY", raising=False)
    server = LiveServer({"NABLA_DATABASE_URL": database_url, "NABLA_INSTANCE_PATH": str(tmp_path)},
                        workers=1, threads=2)
    try:
        assert server.wait_until_up(30) == 200
        with urllib.request.urlopen(f"http://{HOST}:{server.port}/login", timeout=2) as r:
            body = r.read().decode()
        assert "csrf_token" in body
        assert (tmp_path / "secret_key").exists()  # created once, before the workers
    finally:
        server.stop()
