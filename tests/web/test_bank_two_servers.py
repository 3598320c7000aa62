"""Two app servers on one PostgreSQL database share nothing but the database: a
problem saved through one is previewed (and listed) through the other at once."""

from __future__ import annotations

import json
import urllib.request

import pytest

from server.services import bank
from server.services.tokens import create_token
from tests.services.test_bank import tiny

from .live import nabla_serve


def _call(base: str, method: str, path: str, token: str, body: object = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        base + path, method=method, data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.backends("postgresql")
@pytest.mark.usefixtures("db_backend")
def test_a_version_saved_through_one_server_is_seen_by_the_other(
        database_url, session, make_user, make_course, tmp_path):
    ta = make_user(session, "ta@example.edu")
    make_course(session, "A101", members={ta: "ta"})
    token = create_token(session, ta, "t")[1]
    session.commit()
    path = "/api/v1/courses/A101/problems/mine"
    secret = {"NABLA_SECRET_KEY": "s" * 40}
    with nabla_serve(database_url, tmp_path / "one", workers=1, env=secret) as one, \
            nabla_serve(database_url, tmp_path / "two", workers=1, env=secret) as two:
        for round_, title in enumerate(["First", "Second", "Third"], 1):
            text = tiny(title).replace('id = "tiny"', 'id = "mine"')
            writer, reader = (one, two) if round_ % 2 else (two, one)
            status, body = _call(writer, "PUT", path, token, {"spec": text})
            assert (status, body["version"]) == (201, round_)
            status, body = _call(reader, "POST", path + "/preview", token, {"seed": 1})
            assert status == 200 and body["instance"]["problem"] == "mine"
            status, listed = _call(reader, "GET", "/api/v1/courses/A101/problems", token)
            assert [(p["title"], p["version"]) for p in listed["problems"]] == [(title, round_)]
    assert bank.export_text(session, "mine", _course(session)) \
        .startswith('id = "mine"')


def _course(session):
    from server.services.courses import get_course

    return get_course(session, "A101")
