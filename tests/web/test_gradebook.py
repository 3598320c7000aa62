"""The staff gradebook, overrides and extensions over HTTP, the three export routes,
Canvas roster import and set-password links (issue 13)."""

import csv
import io
import re
import time

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from server.cli import main
from server.models import Enrollment, Extension, OverrideEvent, User
from server.services import tokens

from .helpers import csrf_token, login, post_form

pytestmark = pytest.mark.usefixtures("db_backend")
GRADES = "/staff/CS101/grades"


@pytest.fixture
def graded(app_session, make_user, make_course, make_assignment, make_submission):
    teacher = make_user(app_session, "teacher@example.edu", "Teacher")
    ta = make_user(app_session, "ta@example.edu", "Tom TA")
    ada = make_user(app_session, "ada@example.edu", "Ada Lovelace")
    evil = make_user(app_session, "evil@example.edu", "@SUM(A1:A9)")
    course = make_course(app_session, members={teacher: "instructor", ta: "ta",
                                               ada: "student", evil: "student"})
    hw = make_assignment(app_session, course, "=HYPERLINK(\"x\")", problems=("mlp-relu",))
    closed = make_assignment(app_session, course, "Closed", problems=("affine-np",),
                             open_offset_h=-48, due_offset_h=-24)
    make_submission(app_session, ada, hw.problems[0], score=0.5)
    ids = {}
    for user in (teacher, ta, ada):
        _, ids[user.email] = tokens.create_token(app_session, user, "tests")
    app_session.commit()
    return {"course": course, "hw": hw, "closed": closed, "ada": ada.id, "evil": evil.id,
            "tokens": ids}


def _auth(token):
    return {"Authorization": f"Bearer {token}"}


def test_a_ta_sees_the_gradebook_and_a_student_gets_403(client, graded):
    login(client, "ta@example.edu")
    page = client.get(GRADES)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Ada Lovelace" in html and "50.00" in html and "@SUM(A1:A9)" in html
    assert client.get(f"{GRADES}?sort=total&desc=1").status_code == 200
    assert client.get(f"{GRADES}?sort=nope").status_code == 400
    assert client.get(f"{GRADES}?sort=a%C2%B2").status_code == 400  # '²' is no id (was a 500)
    assert client.get(f"{GRADES}/students/{graded['ada']}").status_code == 200
    login(client, "ada@example.edu")
    assert client.get(GRADES).status_code == 403
    assert client.get(f"{GRADES}.csv").status_code == 403
    response = client.get("/api/v1/courses/CS101/grades.csv",
                          headers=_auth(graded["tokens"]["ada@example.edu"]))
    assert response.status_code == 403 and response.is_json


def _cli_export(database_url, tmp_path, *args):
    out = tmp_path / "grades.csv"
    result = CliRunner().invoke(
        main, ["grades", "export", "--course", "CS101", *args, "-o", str(out)],
        env={"NABLA_DATABASE_URL": database_url, "NABLA_INSTANCE_PATH": str(tmp_path)},
        catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out.read_bytes()


@pytest.mark.parametrize("fmt", ["long", "canvas"])
def test_the_three_export_routes_give_the_same_bytes(client, graded, database_url, tmp_path,
                                                     fmt):
    login(client, "teacher@example.edu")
    page = client.get(f"{GRADES}.csv?format={fmt}")
    assert page.status_code == 200 and page.mimetype == "text/csv"
    assert page.is_streamed
    assert "attachment" in page.headers["Content-Disposition"]
    api = client.get(f"/api/v1/courses/CS101/grades.csv?format={fmt}",
                     headers=_auth(graded["tokens"]["ta@example.edu"]))
    assert api.status_code == 200
    cli = _cli_export(database_url, tmp_path, "--format", fmt)
    assert page.data == api.data == cli
    assert b"'=HYPERLINK" in cli and b"'@SUM(A1:A9)" in cli  # formula injection escaped
    one = client.get(f"{GRADES}.csv?format={fmt}&assignment={graded['hw'].id}").data
    assert one == _cli_export(database_url, tmp_path, "--format", fmt, "--assignment",
                              str(graded["hw"].id))


@pytest.mark.parametrize(("query", "status"), [
    ("?format=xlsx", 400), ("?assignment=abc", 400), ("?assignment=999999", 404),
    # found by fuzzing the API: these two were 500s (int('²'), an id SQLite cannot bind)
    ("?assignment=%C2%B2", 400), (f"?assignment={10**20}", 404)])
def test_bad_export_requests_say_why(client, graded, query, status):
    response = client.get(f"/api/v1/courses/CS101/grades.csv{query}",
                          headers=_auth(graded["tokens"]["teacher@example.edu"]))
    assert response.status_code == status and response.json["error"]


def test_an_override_shows_in_the_gradebook_both_exports_and_the_students_pages(
        client, graded, app_session):
    login(client, "ta@example.edu")
    ap_id, hw_id = graded["hw"].problems[0].id, graded["hw"].id
    student_page = f"{GRADES}/students/{graded['ada']}"
    action = f"{student_page}/problems/{ap_id}/override"
    bad = post_form(client, student_page, action, {"score": "150%", "reason": "x"})
    assert bad.status_code == 400 and "outside 0 to 1" in bad.get_data(as_text=True)
    ok = post_form(client, student_page, action, {"score": "90%", "reason": "oral exam"})
    assert ok.status_code == 302
    assert "90.00" in client.get(GRADES).get_data(as_text=True)
    assert "overridden" in client.get(student_page).get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(client.get(f"{GRADES}.csv").get_data(as_text=True))))
    ada = next(r for r in rows if r["email"] == "ada@example.edu" and r["problem"] == "mlp-relu")
    assert (ada["score"], ada["overridden"]) == ("0.9", "true")
    canvas = client.get(f"{GRADES}.csv?format=canvas").get_data(as_text=True)
    assert "Ada Lovelace,,,,,,90\n" in canvas  # "Closed" (due first), then the homework
    event = app_session.scalar(select(OverrideEvent))
    assert (event.old_score, event.new_score, event.reason) == (None, 0.9, "oral exam")
    app_session.rollback()
    login(client, "ada@example.edu")
    assert "set by staff" in client.get("/").get_data(as_text=True)
    # (ids read before: an expired object of app_session would begin a write on SQLite)
    assert "set by staff" in client.get(f"/assignments/{hw_id}").get_data(as_text=True)
    api = client.get("/api/v1/assignments", headers=_auth(graded["tokens"]["ada@example.edu"]))
    problem = next(a for a in api.json["assignments"] if a["id"] == hw_id)["problems"][0]
    assert (problem["score"], problem["overridden"]) == (0.9, True)


def test_an_extension_reopens_one_students_assignment(client, graded):
    login(client, "teacher@example.edu")
    student_page = f"{GRADES}/students/{graded['ada']}"
    action = f"{student_page}/assignments/{graded['closed'].id}/extension"
    response = post_form(client, student_page, action,
                         {"due_at": "2999-01-01T12:00", "late_until": ""})
    assert response.status_code == 302
    api = client.get("/api/v1/assignments", headers=_auth(graded["tokens"]["ada@example.edu"]))
    closed = next(a for a in api.json["assignments"] if a["id"] == graded["closed"].id)
    assert closed["phase"] == "open" and closed["extension"]["due_at"].startswith("2999-01-01")
    login(client, "ada@example.edu")
    page = client.get(f"/assignments/{graded['closed'].id}").get_data(as_text=True)
    assert "your extension" in page and "2999-01-01" in page
    login(client, "teacher@example.edu")
    bad = post_form(client, student_page, action,
                    {"due_at": "2999-01-01T12:00", "late_until": "2998-01-01T12:00"})
    assert bad.status_code == 400 and "before the extended due date" in bad.get_data(as_text=True)
    removed = post_form(client, student_page, action + "/remove", {})
    assert removed.status_code == 302
    api = client.get("/api/v1/assignments", headers=_auth(graded["tokens"]["ada@example.edu"]))
    closed = next(a for a in api.json["assignments"] if a["id"] == graded["closed"].id)
    assert closed["phase"] == "closed" and closed["extension"] is None


def _cell(page_html, name):
    """The gradebook row of student ``name``: its assignment cells, in order."""
    row = re.search(rf"<tr>\s*<td><a [^>]*>{re.escape(name)}</a></td>(.*?)</tr>", page_html,
                    re.S).group(1)
    return re.findall(r"<td[^>]*>.*?</td>", row, re.S)[2:-1]


def test_the_gradebook_marks_overridden_cells_with_who_and_why_and_exports_do_not(
        client, graded, app_session, database_url, tmp_path):
    from server.services.overrides import set_override

    login(client, "ta@example.edu")
    before = client.get(f"{GRADES}.csv?format=long").data
    plain = client.get(GRADES).get_data(as_text=True)
    assert "override-legend" not in plain and 'class="overridden"' not in plain
    ap_id = graded["hw"].problems[0].id
    student_page = f"{GRADES}/students/{graded['ada']}"
    assert post_form(client, student_page, f"{student_page}/problems/{ap_id}/override",
                     {"score": "90%", "reason": "oral <exam>"}).status_code == 302
    # One more, set from the command line (no actor), on another student.
    set_override(app_session, graded["course"], user_id=graded["evil"],
                 assignment_problem_id=ap_id, score=0.25, reason="late by agreement",
                 actor=None, now=graded["hw"].open_at)
    app_session.commit()
    for query in ("", "?section=", "?sort=total&desc=1"):
        html = client.get(GRADES + query).get_data(as_text=True)
        assert 'id="override-legend"' in html and "set by staff (an override)" in html
        closed, hw = _cell(html, "Ada Lovelace")  # "Closed" is due first
        assert 'class="overridden"' not in closed and "override-mark" not in closed
        assert hw.startswith('<td class="overridden">90.00')
        title = re.search(r'title="([^"]*)"', hw).group(1)
        assert re.fullmatch(r"mlp-relu: 90% \(computed 50%\) set by Tom TA &lt;ta@example\.edu"
                            r"&gt; on \d{4}-\d\d-\d\d \d\d:\d\d UTC; reason: oral &lt;exam&gt;",
                            title), title
        hidden = re.search(r'<span class="visually-hidden">(.*?)</span>', hw).group(1)
        assert hidden.startswith("Overridden by staff: mlp-relu: 90% (computed 50%) set by Tom")
        assert f'href="{student_page}#problem-{ap_id}"' in hw
        assert 'aria-describedby="override-legend"' in hw
        evil = _cell(html, "@SUM(A1:A9)")[1]
        assert "25.00" in evil and "set by the command line" in evil
        assert "reason: late by agreement" in evil and "(computed —)" in evil
    assert f'id="problem-{ap_id}"' in client.get(student_page).get_data(as_text=True)
    # The exports are not marked: the same bytes from all three routes, only the override's
    # numbers and its "overridden" column changed.
    after = client.get(f"{GRADES}.csv?format=long").data
    assert after == _cli_export(database_url, tmp_path, "--format", "long")
    assert "✎".encode() not in after and b"oral" not in after and b"Tom TA" not in after
    changed = {b.split(b",")[0] for a, b in zip(before.splitlines(), after.splitlines()) if a != b}
    assert changed == {b"ada@example.edu", b"evil@example.edu"}


@pytest.mark.parametrize("app_settings", [{"NABLA_TIMEZONE": "Europe/Paris"}])
def test_the_extension_form_is_in_the_site_time_zone_and_shows_the_result(
        client, graded, app_session, app_settings):
    login(client, "teacher@example.edu")
    student_page = f"{GRADES}/students/{graded['ada']}"
    closed, hw = graded["closed"].id, graded["hw"].id
    html = client.get(student_page).get_data(as_text=True)
    # One form per assignment: ids of their own, labels with the zone, what saving gives.
    for a in (closed, hw):
        assert f'<label for="due_at-a{a}">Due (Europe/Paris)</label>' in html
        assert f'<label for="late_until-a{a}">Late until (Europe/Paris)</label>' in html
        assert f'id="due_at-a{a}" name="due_at"' in html
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert re.search(r"Saving gives: <output [^>]*>due \w{3} \d{4}-\d\d-\d\d \d\d:\d\d "
                     r"Europe/Paris, no late period</output>", html)
    action = f"{student_page}/assignments/{closed}/extension"
    saved = post_form(client, student_page, action,
                      {"due_at": "2999-07-01T12:00", "late_until": "2999-07-08T09:30"})
    assert saved.status_code == 302
    ext = app_session.scalar(select(Extension))
    # Read in the site's zone (summer time: UTC+2), stored in UTC.
    assert (ext.due_at.isoformat(), ext.late_until.isoformat()) == (
        "2999-07-01T10:00:00+00:00", "2999-07-08T07:30:00+00:00")
    app_session.rollback()
    page = client.get(student_page).get_data(as_text=True)
    assert "Extension on &#39;Closed&#39; saved: due Mon 2999-07-01 12:00 CEST, late until " \
        "Mon 2999-07-08 09:30 CEST." in page
    assert "Saving gives: <output" in page and \
        "due Mon 2999-07-01 12:00 Europe/Paris, late until Mon 2999-07-08 09:30 Europe/Paris" \
        in page
    assert 'value="2999-07-01T12:00"' in page  # the form shows it back in the site's zone
    bad = post_form(client, student_page, action, {"due_at": "2999-07-01T12:00",
                                                   "late_until": "2999-06-01T12:00"})
    text = bad.get_data(as_text=True)
    assert bad.status_code == 400 and "before the extended due date" in text
    assert f'aria-describedby="late_until-a{closed}-hint late_until-a{closed}-error"' in text
    assert "late until Sat 2999-06-01 12:00 Europe/Paris" in text  # what was typed


CANVAS_EXPORT = (
    "Student,ID,SIS User ID,SIS Login ID,Section,Homework (12)\n"
    "    Points Possible,,,,,100\n"
    '"Lovelace, Ada",1001,S1,ada@example.edu,Sec 1,\n'
    '"Hopper, Grace",1002,S2,grace,Sec 2,\n'
)


@pytest.mark.parametrize("app_settings", [{"NABLA_BASE_URL": "https://nabla.example.edu"}])
def test_canvas_roster_import_is_idempotent_and_new_accounts_get_links(
        client, graded, app_session):
    login(client, "teacher@example.edu")
    page = "/instructor/CS101/roster/import"
    missing = post_form(client, page, page, {"csv_text": CANVAS_EXPORT})
    assert missing.status_code == 400 and "line 4" in missing.get_data(as_text=True)
    first = post_form(client, page, page, {"csv_text": CANVAS_EXPORT,
                                           "email_domain": "example.edu"})
    assert first.status_code == 201
    html = first.get_data(as_text=True)
    assert "1 new accounts, 1 enrolled" in html and "1 updated" in html
    (path,) = re.findall(r"grace@example\.edu,.*,https://nabla\.example\.edu"
                         r"(/set-password/[\w-]+)", html)
    rows = {e.user.email: (e.role, e.section, e.canvas_user_id, e.sis_user_id, e.sis_login_id)
            for e in app_session.scalars(select(Enrollment))}
    assert rows["grace@example.edu"] == ("student", "Sec 2", "1002", "S2", "grace")
    assert rows["ada@example.edu"] == ("student", "Sec 1", "1001", "S1", "ada@example.edu")
    app_session.rollback()
    again = post_form(client, page, page, {"csv_text": CANVAS_EXPORT,
                                           "email_domain": "example.edu"},
                      follow_redirects=True)
    assert "nothing changed" in again.get_data(as_text=True)
    canvas = client.get(f"{GRADES}.csv?format=canvas").get_data(as_text=True)
    assert '"Hopper, Grace",1002,S2,grace,Sec 2,' in canvas
    # The link sets a password once.
    client.post("/logout", data={"csrf_token": csrf_token(client, "/profile")})
    opened = client.get(path)
    assert opened.status_code == 303 and opened.location == "/set-password"
    response = client.post("/set-password", data={
        "new_password": "a brand new password", "confirm": "a brand new password",
        "csrf_token": csrf_token(client, "/set-password")})
    assert response.status_code == 302
    assert client.get("/profile").status_code == 200  # logged in
    assert client.get(path).status_code == 404
    assert app_session.scalar(select(User).where(User.email == "grace@example.edu")).password_hash


def test_an_instructor_starts_a_regrade_and_watches_its_progress(client, graded):
    login(client, "ta@example.edu")
    response = post_form(client, GRADES, f"{GRADES}/regrade", {"target": f"a{graded['hw'].id}"})
    assert response.status_code == 403
    login(client, "teacher@example.edu")
    response = post_form(client, GRADES, f"{GRADES}/regrade",
                         {"target": f"a{graded['hw'].id}", "reason": "check"})
    assert response.status_code == 302 and "/jobs/" in response.location
    assert client.get(response.location).status_code == 200
    deadline = time.monotonic() + 60
    while True:
        progress = client.get(response.location + ".json").json
        if progress["state"] in ("done", "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    # make_submission's instance is no engine draw: the grading fails on our side, which
    # is counted and not applied (the stored score stays).
    assert progress["state"] == "done", progress
    assert (progress["total"], progress["done"], progress["errors"], progress["changed"],
            progress["percent"]) == (1, 1, 1, 0, 100)
    assert "50.00" in client.get(GRADES).get_data(as_text=True)


def test_cli_canvas_roster_import_prints_links_once_and_invite_makes_one(
        graded, database_url, tmp_path, app_session):
    env = {"NABLA_DATABASE_URL": database_url, "NABLA_INSTANCE_PATH": str(tmp_path),
           "NABLA_BASE_URL": "https://nabla.example.edu"}
    roster = tmp_path / "canvas.csv"
    roster.write_text(CANVAS_EXPORT)
    runner = CliRunner()
    first = runner.invoke(main, ["courses", "import-roster", "CS101", str(roster),
                                 "--email-domain", "example.edu"], env=env)
    assert first.exit_code == 0, first.output
    assert "1 new accounts, 1 enrolled" in first.output
    assert re.search(r"grace@example\.edu,\"Hopper, Grace\",https://nabla\.example\.edu/"
                     r"set-password/inv_", first.output)
    again = runner.invoke(main, ["courses", "import-roster", "CS101", str(roster),
                                 "--email-domain", "example.edu"], env=env)
    assert again.exit_code == 0 and "nothing changed" in again.output
    assert "set-password" not in again.output
    invite = runner.invoke(main, ["users", "invite", "grace@example.edu"], env=env)
    assert invite.exit_code == 0
    assert invite.output.startswith("https://nabla.example.edu/set-password/inv_")
    bad = runner.invoke(main, ["users", "invite", "nobody@example.edu"], env=env)
    assert bad.exit_code == 1 and "no user nobody@example.edu" in bad.output


def test_a_failed_job_is_shown_failed_and_restarted_from_its_page(client, graded, app_session):
    from server.services import regrade

    job = regrade.start_regrade(app_session, graded["course"], actor=None,
                                assignment_id=graded["hw"].id)
    job.state, job.heartbeat_at = "running", job.created_at
    app_session.commit()
    login(client, "teacher@example.edu")
    page = f"/staff/CS101/jobs/{job.id}"
    assert client.get(page + ".json").json["state"] == "running"  # heartbeat recent enough
    app_session.refresh(job)
    job.heartbeat_at = job.created_at.replace(year=2000)
    app_session.commit()
    html = client.get(page).get_data(as_text=True)
    assert "failed" in html and "worker stopped" in html and "Restart" in html
    response = post_form(client, page, page + "/restart", {})
    assert response.status_code == 302
    deadline = time.monotonic() + 60
    while client.get(page + ".json").json["state"] not in ("done", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert client.get(page + ".json").json["state"] == "done"
    login(client, "ta@example.edu")
    assert client.post(page + "/restart", data={"csrf_token": csrf_token(client, GRADES)}
                       ).status_code == 403
    assert client.get("/staff/CS101/jobs/999999").status_code == 404


def test_staff_see_regrades_and_recoveries_in_the_jobs_list(client, graded, app_session):
    """A look of the app (as at start and periodically) starts a recovery job for a
    submission left pending; staff see it in the jobs list and on its page."""
    import datetime as dt

    from server.models import Job, Submission
    from server.services import regrade
    from server.web.background import look_for_pending

    regrade.start_regrade(app_session, graded["course"], actor=None,
                          assignment_id=graded["hw"].id)
    pending = app_session.scalar(select(Submission))
    pending.status, pending.score, pending.attempt = "pending", None, 1
    pending.graded_at = None
    pending.created_at = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    app_session.commit()
    app = client.application
    job = look_for_pending(app)
    assert job is not None and job.kind == "recover"
    assert look_for_pending(app) is None or app_session.get(Job, job.id).state == "done"
    login(client, "ta@example.edu")
    html = client.get("/staff/CS101/jobs").get_data(as_text=True)
    assert f'/staff/CS101/jobs/{job.id}"' in html and "recovery" in html and "regrade" in html
    deadline = time.monotonic() + 60
    while client.get(f"/staff/CS101/jobs/{job.id}.json").json["state"] != "done":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    page = client.get(f"/staff/CS101/jobs/{job.id}").get_data(as_text=True)
    assert "Recovery job" in page and "recovered" in page
    app_session.expire_all()
    # make_submission's instance is no engine draw: our error, its attempt given back.
    assert (app_session.get(Submission, pending.id).status, app_session.get(Job, job.id).errors
            ) == ("error", 1)
    app_session.rollback()
    login(client, "ada@example.edu")
    assert client.get("/staff/CS101/jobs").status_code == 403
    assert client.get(f"/staff/CS101/jobs/{job.id}").status_code == 403
