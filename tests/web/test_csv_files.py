"""Every CSV the server writes, walked with hostile data (issue 22): names, emails,
sections, Canvas and SIS ids, an assignment's title and a student's answer line that
look like formulas come out escaped from the grade exports (the gradebook page, the API
and ``nabla grades export``), the set-password links of a roster import (the page and
``nabla courses import-roster``) and every analytics table. Every cell of every file is
checked; each file is also checked to hold the hostile values, escaped."""

from __future__ import annotations

import csv
import html
import io
import json
import re
import urllib.parse

import pytest
from click.testing import CliRunner

from server.cli import main
from server.models import Enrollment, User, utcnow
from server.services import csvfile, invites, tokens
from server.services.courses import enroll
from server.services.verdicts import normalise_line, record_verdicts
from tests.services.test_analytics import _result, build_known
from tests.services.test_csvfile import CLASSIC_PAYLOADS, HOSTILE, unsafe_cells

from .helpers import login, post_form

pytestmark = pytest.mark.usefixtures("db_backend")
BASE_URL = "https://nabla.example.edu"
HOSTILE_EMAILS = ["=1+1@evil.example", "+cmd@evil.example", "-2+3+cmd@evil.example"]
ANSWER_LINE = "@SUM(1+1)*cmd|' /C calc'!A0"
IMPORT = "/instructor/CS101/roster/import"


@pytest.fixture
def fake_bank(engine_bank):
    return engine_bank


@pytest.fixture
def app_settings():
    return {"NABLA_BASE_URL": BASE_URL}


def escaped(value: str) -> str:
    return "'" + value.replace("\r", "\n")


def cleaned(value: str) -> str:
    """A name as a roster import stores it (services.accounts.clean_name)."""
    return " ".join(value.split())


@pytest.fixture
def hostile(app_session, make_user, make_course, make_assignment, make_instance,
            make_submission, engine_bank):
    """The analytics course of tests/services/test_analytics.py, with a student per
    hostile value (stored as is: whatever cleaning a form does, the writer escapes),
    formula-like emails, a formula-like assignment title and Canvas id, and a student's
    first wrong line that looks like a formula."""
    data = build_known(app_session, make_user, make_course, make_assignment, make_instance,
                       make_submission, engine_bank)
    course, hw = data["course"], data["hw"]
    hw.title, hw.canvas_id = CLASSIC_PAYLOADS[0], "=1+1"
    for k, value in enumerate(HOSTILE):
        user = make_user(app_session, f"h{k}@example.edu", "placeholder")
        user.name = value
        enrollment = enroll(app_session, course, user, "student")
        for field in ("section", "canvas_user_id", "sis_user_id", "sis_login_id"):
            setattr(enrollment, field, value[:64])
    for email in HOSTILE_EMAILS:
        enroll(app_session, course, make_user(app_session, email, "Mail Formula"), "student")
    sub = make_submission(app_session, data["users"]["s1"], data["ap"], ANSWER_LINE,
                          score=0.0)
    sub.result_json = json.dumps(_result(0.0, {"dW2": "transposed", "dx": "correct"},
                                         [(1, "dW2", "transposed")]))
    record_verdicts(app_session, sub)
    data["token"] = tokens.create_token(app_session, data["teacher"], "exports")[1]
    app_session.commit()
    return data


def checked(text: str, *, must_hold: set[str]) -> list[str]:
    """The cells of a CSV the server wrote, after checking that none would run as a
    formula and that the hostile values ``must_hold`` are there, escaped."""
    assert unsafe_cells(text) == []
    cells = [cell for row in csv.reader(io.StringIO(text)) for cell in row]
    assert must_hold - set(cells) == set()
    return cells


NAMES = {escaped(value) for value in HOSTILE}
EMAILS = {escaped(email) for email in HOSTILE_EMAILS}


def test_grade_exports_escape_every_cell_on_the_page_the_api_and_the_command_line(
        client, hostile, database_url, tmp_path):
    login(client, "teacher@example.edu")
    long_cells = {"long": NAMES | EMAILS | {escaped(CLASSIC_PAYLOADS[0])},
                  "canvas": NAMES | {escaped(f"{CLASSIC_PAYLOADS[0]} (=1+1)")}}
    auth = {"Authorization": f"Bearer {hostile['token']}"}
    runner = CliRunner()
    env = {"NABLA_DATABASE_URL": database_url, "NABLA_INSTANCE_PATH": str(tmp_path)}
    for fmt, must_hold in long_cells.items():
        page = client.get(f"/staff/CS101/grades.csv?format={fmt}")
        api = client.get(f"/api/v1/courses/CS101/grades.csv?format={fmt}", headers=auth)
        assert page.status_code == api.status_code == 200
        assert page.get_data() == api.get_data()
        checked(page.get_data(as_text=True), must_hold=must_hold)
        out = tmp_path / f"{fmt}.csv"
        result = runner.invoke(main, ["grades", "export", "--course", "CS101", "--format", fmt,
                                      "-o", str(out)], env=env)
        assert result.exit_code == 0, result.output
        assert out.read_bytes() == page.get_data()


def test_every_analytics_table_escapes_every_cell(client, hostile):
    login(client, "teacher@example.edu")
    pages = ["/staff/CS101/analytics/problems/mlp-relu",
             f"/staff/CS101/analytics/assignments/{hostile['hw'].id}"]
    downloads = []
    for page in pages:
        text = client.get(page).get_data(as_text=True)
        downloads += [html.unescape(href) for href in re.findall(r'href="([^"]+\.csv[^"]*)"',
                                                                   text)]
    assert len(downloads) >= 10  # six tables of a problem, four of an assignment
    line = escaped(normalise_line(ANSWER_LINE))
    held = set()
    for href in downloads:
        response = client.get(href)
        assert response.status_code == 200, href
        held |= set(checked(response.get_data(as_text=True), must_hold=set()))
    assert line in held  # the student's wrong line, in the first mistakes table


def _roster(rows: list[tuple[str, str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([("email", "name", "role"),
                                                       *((e, n, "student") for e, n in rows)])
    return buffer.getvalue()


def test_set_password_links_escape_every_cell_on_the_page_and_the_command_line(
        client, hostile, app_session, database_url, tmp_path):
    names = {cleaned(value) for value in HOSTILE}
    expected = {"'" + name for name in names if name.startswith(csvfile.FORMULA_STARTS)}
    assert len(expected) >= 10  # most survive a roster import's cleaning
    web_rows = [(f"web{k}@example.edu", cleaned(value)) for k, value in enumerate(HOSTILE)]
    login(client, "teacher@example.edu")
    response = post_form(client, IMPORT, IMPORT, {"csv_text": _roster(
        web_rows + [("=web@evil.example", "Mail Formula")])})
    assert response.status_code == 201, response.get_data(as_text=True)
    page = response.get_data(as_text=True)
    shown = html.unescape(re.search(r"<textarea[^>]*>(.*?)</textarea>", page, re.S).group(1))
    download = urllib.parse.unquote(re.search(r'href="data:text/csv;charset=utf-8,([^"]*)"',
                                              page).group(1))
    assert shown.lstrip("\n") == html.unescape(download)
    checked(download, must_hold=expected | {"'=web@evil.example"})

    roster = tmp_path / "roster.csv"
    roster.write_text(_roster([(f"cli{k}@example.edu", cleaned(value))
                               for k, value in enumerate(HOSTILE)]))
    links = tmp_path / "links.csv"
    result = CliRunner().invoke(main, ["courses", "import-roster", "CS101", str(roster),
                                       "--invites", str(links)],
                                env={"NABLA_DATABASE_URL": database_url,
                                     "NABLA_INSTANCE_PATH": str(tmp_path),
                                     "NABLA_BASE_URL": BASE_URL})
    assert result.exit_code == 0, result.output
    checked(links.read_text(), must_hold=expected)

    # Names stored as they are (a tab or a carriage return first, which a roster import
    # would have cleaned away): the links file escapes them too.
    users = [e.user for e in app_session.query(Enrollment).filter(
        Enrollment.user.has(User.email.like("h%@example.edu")))]
    text = invites.invites_csv(app_session, users, BASE_URL, utcnow())
    cells = checked(text, must_hold=NAMES)
    assert sum(cell.startswith(BASE_URL + "/set-password/inv_") for cell in cells) == \
        len(HOSTILE)
