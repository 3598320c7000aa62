"""The student's pages in headless Chromium (issue 11): the answer box's gutter, the
keyboard (Esc then Tab leaves the box, Ctrl+Enter submits), Check, and no horizontal
page scroll at 390 px. One browser and one served demo site per session."""

from __future__ import annotations

import re
from typing import Any

SHAPE_ERROR = "dz7 = doutput\ndW3 = dz7 @ z6\n"  # @ with the inner dimensions disagreeing

# Where line n's text starts, in the gutter (the number's top) and in the textarea (from
# its padding, line height and scroll), in CSS pixels from the top of the viewport.
MEASURE = """
n => {
  const gutter = document.querySelector('.editor .gutter');
  const box = document.querySelector('.editor textarea');
  const text = gutter.firstChild.textContent;
  let start = 0;
  for (let k = 1; k < n; k++) { start = text.indexOf('\\n', start) + 1; }
  const range = document.createRange();
  range.setStart(gutter.firstChild, start);
  range.setEnd(gutter.firstChild, text.indexOf('\\n', start));
  const number = range.getBoundingClientRect();
  const style = getComputedStyle(box);
  const boxRect = box.getBoundingClientRect();
  const lineTop = boxRect.top + parseFloat(style.borderTopWidth) + parseFloat(style.paddingTop)
      + (n - 1) * parseFloat(style.lineHeight) - box.scrollTop;
  const gutterRect = gutter.getBoundingClientRect();
  return {number: number.top, numberHeight: number.height, numberWidth: number.width,
          label: range.toString(), line: lineTop, lineHeight: parseFloat(style.lineHeight),
          gutterTop: gutterRect.top, gutterBottom: gutterRect.bottom,
          gutterWidth: gutterRect.width, boxHeight: boxRect.height};
}
"""


def problem_url(page: Any, base: str, problem_id: str) -> str:
    page.goto(f"{base}/")
    href = page.get_attribute(f"a[href$='/problems/{problem_id}']", "href")
    assert href, f"no link to {problem_id} on the dashboard"
    return base + href


def _scroll(box: Any, end: str) -> None:
    """Scroll the answer box to its top or bottom, as a user's wheel would."""
    box.evaluate("(b, end) => { b.scrollTop = end === 'top' ? 0 : b.scrollHeight; "
                 "b.dispatchEvent(new Event('scroll')); }", end)


def _history_rows(page: Any) -> int:
    return page.locator("#history-heading ~ .table-scroll tbody tr").count()


def test_gutter_numbers_are_visible_and_aligned_on_a_15_line_answer(page, live_site):
    page.goto(problem_url(page, live_site, "mlp-relu"))
    box = page.locator("#answer")
    box.fill("\n".join(f"# line {n}" for n in range(1, 16)))
    for n, end in ((1, "top"), (8, "top"), (15, "bottom")):
        _scroll(box, end)
        m = page.evaluate(MEASURE, n)
        assert m["label"] == str(n)
        assert m["numberWidth"] > 4 and m["gutterWidth"] >= 24, m  # visible, not a sliver
        assert m["gutterTop"] <= m["number"] and m["number"] + m["numberHeight"] \
            <= m["gutterBottom"] + 0.5, m  # inside the gutter, not cut off
        assert abs(m["number"] - m["line"]) <= 2, m  # on its line of text
    # a long answer scrolled to its end: the gutter scrolls with the text
    box.fill("\n".join(f"# line {n}" for n in range(1, 61)))
    _scroll(box, "bottom")
    m = page.evaluate(MEASURE, 60)
    assert m["label"] == "60" and abs(m["number"] - m["line"]) <= 2, m
    assert m["number"] + m["numberHeight"] <= m["gutterBottom"] + 0.5, m
    assert m["boxHeight"] < 60 * m["lineHeight"]  # it scrolled: the box did not grow


def test_tab_indents_and_esc_then_tab_reaches_submit(page, live_site):
    page.goto(problem_url(page, live_site, "mlp-relu"))
    box = page.locator("#answer")
    box.fill("")
    box.focus()
    page.keyboard.type("dz7 = doutput")
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    assert box.input_value() == "dz7 = doutput\n    "
    assert page.evaluate("document.activeElement.id") == "answer"
    page.keyboard.press("Escape")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.hasAttribute('data-submit')")
    assert box.input_value() == "dz7 = doutput\n    "  # nothing typed by the Tab that left
    assert "Esc" in page.inner_text("#answer-keys")


def test_ctrl_enter_submits(page, live_site):
    page.goto(problem_url(page, live_site, "mlp-relu"))
    page.locator("#answer").fill("dz7 = doutput\ndb3 = doutput")
    page.locator("#answer").focus()
    with page.expect_navigation():
        page.keyboard.press("Control+Enter")
    assert re.search(r"/submissions/\d+$", page.url), page.url
    assert "Score" in page.inner_text("section.verdict")


def test_check_shows_a_shape_error_and_stores_nothing(page, live_site):
    url = problem_url(page, live_site, "mlp-relu")
    page.goto(url)
    before = _history_rows(page)
    attempts = page.inner_text("section.status")
    page.locator("#answer").fill(SHAPE_ERROR)
    with page.expect_navigation():
        page.click("button[data-check]")
    result = page.inner_text("#check-result")
    assert "Check: 1 problem" in result and "line 2" in result and "inner dimensions" in result
    assert "^" in result  # the caret, as feedback shows it
    assert page.locator("#answer").input_value() == SHAPE_ERROR
    page.goto(url)
    assert _history_rows(page) == before
    assert page.inner_text("section.status") == attempts  # no attempt used


def test_no_horizontal_page_scroll_at_390_px(page, live_site):
    url = problem_url(page, live_site, "mlp-relu")
    page.goto(url)
    page.locator("#answer").fill("dz7 = doutput\ndW3 = z6 @ dz7")
    with page.expect_navigation():
        page.click("button[data-submit]")
    feedback = page.url
    page.set_viewport_size({"width": 390, "height": 800})
    for address in (f"{live_site}/", url, feedback):
        page.goto(address)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{address} is {width} px wide at 390 px"
        header = page.locator("header.site").bounding_box()
        assert header["height"] < 60, f"the header wraps on {address}: {header}"
