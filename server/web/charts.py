"""Server-side SVG charts (pygal) for the analytics pages, inline and without JavaScript.

pygal draws a chart from a handful of values in a few milliseconds, with each
bar a link (``xlink``) and a <title> on every value, and no runtime
dependency beyond itself. Its <style> element carries the page's CSP nonce
(``style-src 'nonce-...'``), since the site's policy allows no other inline style;
its configuration <script> is removed (no JavaScript: the table beside each chart
has the numbers that pygal's tooltips would show).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import Any

import pygal
from markupsafe import Markup
from pygal.style import Style

# pygal appends an importer with only the legacy find_module() to sys.meta_path, for
# its map plugins (pygal.maps.*), which we do not use. Python 3.11 warns on every
# import that reaches it (any module not found elsewhere: ImportWarning, an error
# under the tests' filterwarnings) and 3.12 ignores it: it is taken out again.
sys.meta_path[:] = [finder for finder in sys.meta_path
                    if type(finder).__module__ != "pygal" or hasattr(finder, "find_spec")]

STYLE = Style(
    background="transparent", plot_background="transparent", foreground="#222",
    foreground_strong="#111", foreground_subtle="#777", opacity="1", opacity_hover=".75",
    colors=("#2f6f9f", "#c0392b", "#e08e0b", "#6c5ce7", "#16a085", "#7f8c8d", "#d35400",
            "#8e44ad"),
    font_family="system-ui, sans-serif", label_font_size=12, major_label_font_size=12,
    title_font_size=14, legend_font_size=12, value_font_size=11,
)
_SCRIPT = re.compile(r"<script\b.*?</script>", re.S)
CONFIG = {"js": [], "disable_xml_declaration": True, "style": STYLE, "width": 560,
          "height": 300, "explicit_size": False, "print_values": False,
          "show_y_guides": True, "truncate_label": -1, "margin": 10}


def _svg(chart: Any, nonce: str, label: str) -> Markup:
    # pygal's config <script> is for its optional JavaScript tooltips: not wanted.
    svg = _SCRIPT.sub("", chart.render(is_unicode=True))
    svg = svg.replace("<style type=\"text/css\">", f"<style nonce=\"{nonce}\">", 1)
    # An accessible name for the chart; the table beside it has the numbers.
    svg = svg.replace("<svg ", f"<svg role=\"img\" aria-label=\"{Markup.escape(label)}\" ", 1)
    return Markup(svg)


def _values(counts: Sequence[float], links: Sequence[str | None],
            labels: Sequence[str]) -> list[dict[str, Any]]:
    return [{"value": c, "label": label, **({"xlink": {"href": href, "target": "_self"}}
                                            if href else {})}
            for c, href, label in zip(counts, links, labels)]


def bar(title: str, x_labels: Sequence[str], counts: Sequence[float],
        links: Sequence[str | None], nonce: str, *, y_title: str = "",
        value_labels: Sequence[str] | None = None) -> Markup:
    """One series of bars, each a link to what it counts."""
    chart = pygal.Bar(title=title, show_legend=False, x_title="", y_title=y_title,
                      x_label_rotation=(30 if len(x_labels) > 8 else 0), **CONFIG)
    chart.x_labels = list(x_labels)
    chart.add(title, _values(counts, links, value_labels or [str(c) for c in counts]))
    return _svg(chart, nonce, title)


def stacked_shares(title: str, rows: Sequence[str], series: dict[str, list[float]],
                   links: dict[str, list[str | None]], nonce: str) -> Markup:
    """Horizontal stacked bars: per row (a gradient), the share of each series (verdict)."""
    chart = pygal.HorizontalStackedBar(title=title, show_legend=True, legend_at_bottom=True,
                                       range=(0, 100), **{**CONFIG, "height": 90 + 34 * len(rows)})
    # pygal draws the first row at the bottom: reversed, the first gradient is on top.
    chart.x_labels = list(rows)[::-1]
    for name, shares in series.items():
        chart.add(name, _values(shares[::-1], links[name][::-1],
                                [f"{name}: {s:.0f}%" for s in shares[::-1]]))
    return _svg(chart, nonce, title)


def lines(title: str, x_labels: Sequence[str], series: dict[str, list[float]],
          links: Sequence[str | None], nonce: str) -> Markup:
    """Cumulative lines over days; every point of every line links to that day."""
    chart = pygal.Line(title=title, show_legend=True, legend_at_bottom=True,
                       x_label_rotation=30, dots_size=3, **CONFIG)
    chart.x_labels = list(x_labels)
    for name, values in series.items():
        chart.add(name, _values(values, links, [f"{name}: {v:g}" for v in values]))
    return _svg(chart, nonce, title)
