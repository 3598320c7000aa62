"""server.web.access_log: gunicorn's access log atoms without query strings, set-password
paths or tokens (issue 22), whatever format prints them."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

from gunicorn.config import Config

from server.web.access_log import ACCESS_LOG_FORMAT, AccessLogger, redact

TOKEN = "inv_Zk3-q_9XcVbNm0aBcDeFgHiJkLmNoPqRsTuVwXyZ012"
API_TOKEN = "nabla_s3cr3tT0kenValue-xyz"


def _atoms(path: str, query: str, referer: str) -> dict:
    logger = AccessLogger(Config())
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": f"{path}?{query}", "PATH_INFO": path,
               "QUERY_STRING": query, "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "10.1.2.3",
               "HTTP_REFERER": referer, "HTTP_USER_AGENT": "test"}
    request = SimpleNamespace(headers=[("REFERER", referer),
                                       ("AUTHORIZATION", f"Bearer {API_TOKEN}")])
    response = SimpleNamespace(status="303 SEE OTHER", sent=0,
                               headers=[("Location", "/set-password")])
    return logger.atoms(response, request, environ, dt.timedelta(milliseconds=4))


def test_the_line_has_the_path_without_query_and_the_token_redacted():
    atoms = _atoms(f"/set-password/{TOKEN}", "utm_source=mail&next=%2Fsecret",
                   f"https://mail.example/read?t={TOKEN}")
    line = ACCESS_LOG_FORMAT % atoms
    assert '"GET /set-password/[redacted] HTTP/1.1" 303 0 "https://mail.example/read"' in line
    assert line.startswith("10.1.2.3 - - [")


def test_no_atom_holds_a_query_string_or_a_token():
    # Whatever format an operator writes (%(r)s, %(q)s, {raw_uri}e, {authorization}i ...).
    atoms = _atoms(f"/set-password/{TOKEN}", f"next=%2Fsecret&again={TOKEN}",
                   f"http://127.0.0.1:5000/set-password/{TOKEN}?x=secret")
    everything = " ".join(f"{name}={value}" for name, value in atoms.items())
    for secret in (TOKEN, TOKEN[4:], API_TOKEN, "secret", "utm_source"):
        assert secret not in everything
    assert atoms["r"] == "GET /set-password/[redacted] HTTP/1.1"
    assert atoms["q"] == "" and atoms["{query_string}e"] == ""
    assert atoms["{authorization}i"] == "Bearer nabla_[redacted]"
    assert atoms["f"] == "http://127.0.0.1:5000/set-password/[redacted]"


def test_other_paths_are_kept_as_they_are():
    atoms = _atoms("/staff/CS101/grades.csv", "format=canvas", "-")
    assert atoms["r"] == "GET /staff/CS101/grades.csv HTTP/1.1" and atoms["f"] == "-"
    assert redact("/login /set-password /assignments/3") == "/login /set-password /assignments/3"
    assert redact("/set-password/anything/else") == "/set-password/[redacted]/else"
