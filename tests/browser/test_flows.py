"""End-to-end flows in headless Chromium against the served demo site (issue 14 §4),
with a screenshot of each step in build/screenshots/ (``NABLA_SCREENSHOTS`` moves
it), and an axe-core pass (npm's axe-core, installed by ``make test`` into
build/axe) on the student's and the staff's pages: no serious or critical
violation."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Any

import pytest

from server.cli.web_cmds import demo_assignment_plan
from server.engine.bank import load_bank
from server.engine.problem import draw, model_answer
from server.services.exports import CANVAS_HEADER, number

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


def staff_tab(browser: Any, live_site: str, email: str):
    """A tab logged in as ``email`` (the session's one browser shares its cookies: they are
    cleared before and after, and the next student tab logs in again)."""
    browser.clear_cookies()
    tab = browser.new_page()
    tab.set_viewport_size({"width": 1280, "height": 900})
    try:
        log_in(tab, live_site, email)
        yield tab
    finally:
        tab.close()
        browser.clear_cookies()


@pytest.fixture
def staff_page(browser: Any, live_site: str):
    """A tab logged in as the TA."""
    yield from staff_tab(browser, live_site, "ta@example.edu")


@pytest.fixture
def instructor_page(browser: Any, live_site: str):
    """A tab logged in as the instructor."""
    yield from staff_tab(browser, live_site, "instructor@example.edu")


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


def test_instructor_overrides_a_score_and_downloads_the_canvas_csv(instructor_page, live_site):
    # Student Three submits nothing in these tests: the override is all they have.
    page = instructor_page
    (first_title, first_ids), (second_title, _) = demo_assignment_plan(list(BANK))
    problem = first_ids[0]
    page.goto(f"{live_site}/staff/DEMO101/grades")
    shot(page, "instructor-1-gradebook")
    with page.expect_navigation():
        page.get_by_role("link", name="Student Three", exact=True).click()
    shot(page, "instructor-2-student")
    row = page.locator("tr", has=page.get_by_label(f"Score of {problem}", exact=True))
    row.get_by_label(f"Score of {problem}", exact=True).fill("80%")
    row.get_by_label(f"Reason for {problem}", exact=True).fill("graded by hand: a sign slip")
    with page.expect_navigation():
        row.get_by_role("button", name="Set").click()
    shot(page, "instructor-3-override-set")
    assert "Score overridden" in page.inner_text("main"), page.inner_text("main")[:2000]
    row = page.locator("tr", has=page.get_by_label(f"Score of {problem}", exact=True))
    assert re.search(r"80%\s+overridden", row.inner_text()), row.inner_text()
    row.locator("summary", has_text="history").click()
    assert "graded by hand: a sign slip" in row.inner_text(), row.inner_text()
    shot(page, "instructor-4-override-history")

    points = 100 * 0.8 / len(first_ids)  # 100 points, every problem of weight 1
    with page.expect_navigation():
        page.get_by_role("link", name="Gradebook", exact=True).click()
    student = page.locator("tbody tr", has_text="Student Three")
    shot(page, "instructor-5-gradebook-with-override")
    assert f"{points:.2f}" in student.inner_text(), student.inner_text()

    with page.expect_download() as info:
        page.get_by_role("link", name="Canvas CSV", exact=True).click()
    download = info.value
    assert download.suggested_filename == "DEMO101-grades-canvas.csv"
    target = SHOTS / "instructor-6-canvas.csv"  # kept beside the screenshots, to look at
    download.save_as(target)
    rows = list(csv.reader(target.read_text(encoding="utf-8").splitlines()))
    assert rows[0] == [*CANVAS_HEADER, first_title, second_title], rows[0]
    assert rows[1] == ["Points Possible", "", "", "", "", "100", "100"], rows[1]
    three = [r for r in rows[2:] if r[0] == "Student Three"]
    assert len(three) == 1 and three[0][5:] == [number(points, 2), ""], three


def test_the_gradebook_marks_an_override_and_the_extension_form_shows_its_result(
        instructor_page, live_site):
    page = instructor_page
    (_, first_ids), _ = demo_assignment_plan(list(BANK))
    problem = first_ids[1]
    page.goto(f"{live_site}/staff/DEMO101/grades")
    with page.expect_navigation():
        page.get_by_role("link", name="Student Two", exact=True).click()
    student_page = page.url
    row = page.locator("tr", has=page.get_by_label(f"Score of {problem}", exact=True))
    row.get_by_label(f"Score of {problem}", exact=True).fill("0.5")
    row.get_by_label(f"Reason for {problem}", exact=True).fill("regraded on paper")
    with page.expect_navigation():
        row.get_by_role("button", name="Set").click()
    page.goto(f"{live_site}/staff/DEMO101/grades")
    cell = page.locator("tbody tr", has_text="Student Two").locator("td.overridden")
    assert cell.count() == 1, page.inner_text("main")[:2000]
    mark = cell.locator("a.override-mark")
    title = mark.get_attribute("title")
    assert f"{problem}: 50%" in title and "Ines Instructor" in title, title
    assert "reason: regraded on paper" in title, title
    assert page.locator("#override-legend").is_visible()
    mark.hover()
    shot(page, "gradebook-1-override-marked")
    with page.expect_navigation():
        mark.click()
    assert page.url.split("#")[0] == student_page

    # The extension form: labelled with the site's zone; "Saving gives" follows the inputs.
    due = page.get_by_label("Due (UTC)", exact=True).first
    output = page.locator("form.extension output").first
    assert output.inner_text().startswith("due ") and "UTC" in output.inner_text()
    box = due.bounding_box()
    assert box and box["width"] < 400, box  # compact, not the page's width
    due.fill("2031-03-04T10:30")
    assert output.inner_text().startswith("due Tue 2031-03-04 10:30 UTC"), output.inner_text()
    shot(page, "gradebook-2-extension-form")
    page.set_viewport_size({"width": 390, "height": 800})
    for address in (f"{live_site}/staff/DEMO101/grades", student_page):
        page.goto(address)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{address} is {width} px wide at 390 px"
    shot(page, "gradebook-3-student-390px")
    page.goto(f"{live_site}/staff/DEMO101/grades")
    shot(page, "gradebook-4-390px")
    page.set_viewport_size({"width": 1280, "height": 900})
    found = {}
    for address in (f"{live_site}/staff/DEMO101/grades", student_page,
                    f"{live_site}/staff/DEMO101/problems/mlp-relu/preview?seed=3"):
        page.goto(address)
        found[address] = axe_violations(page)
    assert all(not v for v in found.values()), found


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
