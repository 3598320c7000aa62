"""Browser tests: Playwright driving Debian's Chromium against a real ``nabla serve``.

One browser and one server per session: the server runs on a temporary SQLite
database with the demo course (``nabla db upgrade``, ``nabla demo``). Chromium
is /usr/bin/chromium (``make test`` installs it with apt-get); a test that
needs it fails when it is missing, it never skips. Playwright never downloads
a browser here.

In a parallel run (pytest-xdist) every browser test runs on one worker
(``XDIST_GROUPS`` in tests/conftest.py): they share that server, whose demo scores
several of them change, and that browser, and they write their screenshots to one
folder.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from tests.web.live import demo_site

CHROMIUM = os.environ.get("NABLA_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
PASSWORD = "nabla-demo-password"


@pytest.fixture(scope="session")
def live_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of ``nabla serve`` on a fresh SQLite database with the demo course."""
    folder = tmp_path_factory.mktemp("browser-site")
    url = f"sqlite:///{folder / 'nabla.sqlite3'}"
    with demo_site(url, folder, workers=1, threads=4,
                   env={"NABLA_SUBMIT_RATE": "off", "NABLA_CHECK_RATE": "off"}) as base:
        yield base


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's), with a fresh user-data folder."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)",
                    pytrace=False)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="nabla-chromium-") as profile, \
            sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900})
        try:
            yield context
        finally:
            context.close()


def log_in(page: Any, base: str, email: str) -> None:
    """Log in through the form (the context keeps the session cookie)."""
    page.goto(f"{base}/login")
    if "/login" not in page.url:
        return  # already logged in as someone
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(lambda u: "/login" not in u)


@pytest.fixture
def page(browser: Any, live_site: str) -> Iterator[Any]:
    """A new tab of the session's browser, logged in as student1, at 1280 px."""
    tab = browser.new_page()
    tab.set_viewport_size({"width": 1280, "height": 900})
    try:
        log_in(tab, live_site, "student1@example.edu")
        yield tab
    finally:
        tab.close()
