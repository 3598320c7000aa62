"""`nabla serve` starts gunicorn with server:create_app() and serves pages."""

import pytest

from .served import nabla_serve

pytestmark = pytest.mark.usefixtures("db_backend")


def test_nabla_serve_answers_http(database_url, tmp_path, session):
    with nabla_serve(database_url, tmp_path) as (_, body):
        assert "csrf_token" in body
        assert (tmp_path / "secret_key").exists()  # created once, before the workers
