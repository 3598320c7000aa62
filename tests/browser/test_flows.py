"""End-to-end flows in headless Chromium against the served demo site (issue 14 §4),
with a screenshot of each step in build/screenshots/ (``NABLA_SCREENSHOTS`` moves
it), and an axe-core pass (npm's axe-core, installed by ``make test`` into
build/axe) on the student's and the staff's pages: no serious or critical
violation.

Not here: the instructor's overrides and Canvas CSV (they come with the grades
work, not on this branch)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from server.engine.bank import load_bank
from server.engine.problem import draw, model_answer

from .conftest import log_in
from .test_answer_page import problem_url

ROOT = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("NABLA_SCREENSHOTS", ROOT / "build" / "screenshots"))
AXE = Path(os.environ.get("NABLA_AXE", ROOT / "build" / "axe" / "node_modules" / "axe-core"
                          / "axe.min.js"))
BANK = load_bank()


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def submit(page: Any, answer: str) -> None:
    page.locator("#answer").fill(answer)
    with page.expect_navigation():
        page.click("button[data-submit]")


def test_student_fixes_a_transposed_line_and_gets_100(page, live_site):
    page.goto(problem_url(page, live_site, "mlp-relu"))
    shot(page, "student-1-problem")
    # The forward program is rendered as MathML, and laid out (not raw text).
    maths = page.locator("math")
    assert maths.count() > 0
    box = maths.first.bounding_box()
    assert box and box["width"] > 10 and box["height"] > 5, box
    right = model_answer(BANK["mlp-relu"], draw(BANK["mlp-relu"], 0))
    transposed = right.replace("dW3 = z6 @ dz7", "dW3 = (z6 @ dz7).T")
    assert transposed != right
    submit(page, transposed)
    shot(page, "student-2-transposed-line-flagged")
    line = page.locator("tr#line-3")
    assert "wrong" in (line.get_attribute("class") or ""), line.inner_html()
    assert page.locator("tr#line-1").get_attribute("class").split()[-1] == "correct"
    assert "100%" not in page.inner_text("section.verdict")
    page.goto(problem_url(page, live_site, "mlp-relu"))
    submit(page, right)
    shot(page, "student-3-fixed-100")
    assert re.search(r"Score\s+100\s*%", page.inner_text("section.verdict"))


def test_a_numpy_runtime_error_shows_its_traceback(page, live_site):
    page.goto(problem_url(page, live_site, "mlp-relu-numpy"))
    right = model_answer(BANK["mlp-relu-numpy"], draw(BANK["mlp-relu-numpy"], 0))
    broken = right.replace("    N = x.shape[0]\n", "    N = x.shape[0]\n    N = N / 0\n", 1)
    assert broken != right
    submit(page, broken)
    shot(page, "numpy-runtime-error")
    text = page.inner_text("main")
    assert "ZeroDivisionError" in text, text[:2000]
    assert "stopped with an error at line" in text
    link = page.locator("p.run-error a").first.get_attribute("href")
    assert link.startswith("#line-") and page.locator(f"tr{link}").count() == 1


@pytest.fixture
def staff_page(browser: Any, live_site: str):
    """A tab logged in as the TA (the session's one browser shares its cookies: they are
    cleared before and after, and the next student tab logs in again)."""
    browser.clear_cookies()
    tab = browser.new_page()
    tab.set_viewport_size({"width": 1280, "height": 900})
    try:
        log_in(tab, live_site, "ta@example.edu")
        yield tab
    finally:
        tab.close()
        browser.clear_cookies()


def test_ta_validates_a_problem_previews_two_seeds_and_tries_an_answer(staff_page, live_site):
    page = staff_page
    page.goto(f"{live_site}/staff/DEMO101/problems/new")
    shot(page, "ta-1-editor")
    with page.expect_navigation():
        page.click("button[value=validate]")
    shot(page, "ta-2-validated")
    assert page.locator("button[value=save]").count() == 1, page.inner_text("main")[:2000]
    with page.expect_navigation():
        page.click("text=Preview this draft")
    shot(page, "ta-3-preview-seed-0")
    first = page.inner_text("main")
    with page.expect_navigation():
        page.click("text=Next seed")
    shot(page, "ta-4-preview-seed-1")
    assert page.inner_text("main") != first
    page.locator("#answer").fill("1. dx = doutput")
    with page.expect_navigation():
        page.click("text=Grade it")
    shot(page, "ta-5-tried-an-answer")
    assert page.locator("section.verdict").count() == 1, page.inner_text("main")[:2000]


def axe_violations(page: Any) -> list[dict]:
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: `make test` installs axe-core from npm "
                    "(npm install --prefix build/axe axe-core@4)", pytrace=False)
    # Evaluated through the DevTools protocol, which the site's CSP (no inline
    # scripts) does not apply to; a <script> tag would be refused.
    page.evaluate("source => { (0, eval)(source); }", AXE.read_text())
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    assert len(result["passes"]) > 10, result.get("passes")  # axe did check the page
    return [{"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]]}
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


def test_axe_finds_no_serious_violation_on_the_student_pages(page, live_site):
    pages = [f"{live_site}/", problem_url(page, live_site, "mlp-relu"), f"{live_site}/profile"]
    page.goto(pages[1])
    submit(page, "1. dz7 = doutput")
    pages.append(page.url)  # a feedback page
    found = {}
    for address in pages:
        page.goto(address)
        found[address] = axe_violations(page)
    assert all(not v for v in found.values()), found


def test_axe_finds_no_serious_violation_on_the_staff_pages(staff_page, live_site):
    page = staff_page
    found = {}
    for path in ("/", "/staff/DEMO101/problems", "/staff/DEMO101/problems/new"):
        page.goto(live_site + path)
        found[path] = axe_violations(page)
    assert all(not v for v in found.values()), found
