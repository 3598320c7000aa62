"""Small helpers for driving the app with the test client."""

from __future__ import annotations

import os
import re
import signal
import subprocess

_CSRF_RE = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"|'
                      r'type="hidden" name="csrf_token" value="([^"]+)"|'
                      r'name="csrf_token" value="([^"]+)"')


def csrf_token(client, path: str) -> str:
    """The CSRF token from the form on the page at ``path``."""
    return csrf_token_in(client.get(path).get_data(as_text=True), path)


def csrf_token_in(html: str, where: str = "the page") -> str:
    match = _CSRF_RE.search(html)
    assert match, f"no csrf_token on {where}"
    return next(group for group in match.groups() if group)


def login(client, email: str, password: str = "correct horse battery"):
    """Log in as ``email`` (logging out whoever is logged in on this client first)."""
    if client.get("/login").status_code == 302:
        client.post("/logout", data={"csrf_token": csrf_token(client, "/profile")})
    token = csrf_token(client, "/login")
    return client.post("/login", data={"email": email, "password": password, "csrf_token": token})


def post_form(client, page: str, action: str, data: dict, **kwargs):
    """Submit ``data`` to ``action`` with the CSRF token of the form on ``page``."""
    return client.post(action, data={**data, "csrf_token": csrf_token(client, page)}, **kwargs)


def stop_process_group(process: subprocess.Popen) -> None:
    """Stop a server started with ``start_new_session=True`` (gunicorn and its
    workers): SIGTERM, then SIGKILL after 15 s."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
