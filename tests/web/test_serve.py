"""`nabla serve` starts gunicorn with server:create_app() and serves pages."""

import html
import re
import urllib.parse
import urllib.request

import pytest

from tests.conftest import DEFAULT_PASSWORD

from .helpers import csrf_token_in
from .live import HOST, Browser, LiveServer

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


def test_the_access_log_of_nabla_serve_has_no_tokens_and_no_query_strings(
        database_url, tmp_path, session, make_user, make_course, monkeypatch):
    """Issue 22: gunicorn logged `GET /set-password/inv_...`, and a logged token set the
    password of an account that had none. Also the loopback demo: with no NABLA_BASE_URL,
    a server bound to 127.0.0.1 makes its set-password links from that address."""
    for name in ("NABLA_BASE_URL", "NABLA_LOOPBACK_BIND", "NABLA_PROXIES"):
        monkeypatch.delenv(name, raising=False)
    teacher = make_user(session, "teacher@example.edu", "Teacher")
    make_course(session, members={teacher: "instructor"})
    session.commit()
    server = LiveServer({"NABLA_DATABASE_URL": database_url, "NABLA_INSTANCE_PATH": str(tmp_path)},
                        workers=1, threads=2)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    try:
        assert server.wait_until_up(30) == 200
        staff = Browser(server.port)
        assert staff.login("teacher@example.edu", DEFAULT_PASSWORD)[0] == 302
        page = "/instructor/CS101/roster/import"
        body = urllib.parse.urlencode({"csv_text": "new@example.edu,New Student,student\n",
                                       "csrf_token": csrf_token_in(staff.request("GET", page)[2])})
        status, _, links = staff.request("POST", page, body, form)
        assert status == 201, links
        (link,) = re.findall(rf"new@example\.edu,New Student,(http://{HOST}:{server.port}"
                             r"/set-password/inv_[\w-]+)", html.unescape(links))
        path = urllib.parse.urlsplit(link).path
        token = path.rsplit("/", 1)[1]

        student = Browser(server.port)
        status, headers, _ = student.request(
            "GET", f"{path}?utm_source=secret-query",
            headers={"Referer": f"https://mail.example/read?t={token}"})
        assert status == 303 and headers["Location"] == "/set-password"
        status, _, page_text = student.request("GET", "/set-password")
        assert status == 200 and "new@example.edu" in page_text
        body = urllib.parse.urlencode({"new_password": "a brand new password",
                                       "confirm": "a brand new password",
                                       "csrf_token": csrf_token_in(page_text)})
        status, headers, _ = student.request("POST", "/set-password", body, form)
        assert status == 302 and headers["Location"] == "/"
        replay, _, replayed = Browser(server.port).request("GET", path)
        assert replay == 404 and "already used" in html.unescape(replayed)
        assert Browser(server.port).request("GET", "/login?next=/secret-next")[0] == 200
        log = server.output(tail=None)
    finally:
        server.stop()
    assert token not in log and token[4:] not in log
    assert re.findall(r"inv_[A-Za-z0-9_-]+", log) == []
    for secret in ("secret-query", "secret-next", "utm_source", "mail.example/read?"):
        assert secret not in log
    for line in ('"GET /set-password/[redacted] HTTP/1.1" 303',
                 '"GET /set-password HTTP/1.1" 200', '"POST /set-password HTTP/1.1" 302',
                 '"GET /set-password/[redacted] HTTP/1.1" 404', '"GET /login HTTP/1.1" 200',
                 '"https://mail.example/read"'):
        assert line in log, log[-3000:]
