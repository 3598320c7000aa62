import html
import io

import pytest

from server.models import Assignment, Enrollment

from .helpers import csrf_token, login, post_form

pytestmark = pytest.mark.usefixtures("db_backend")


@pytest.fixture
def course_people(app_session, make_user, make_course, make_assignment):
    people = {
        "instructor": make_user(app_session, "instructor@example.edu", "Ines Instructor"),
        "ta": make_user(app_session, "ta@example.edu", "Tom TA"),
        "student": make_user(app_session, "student1@example.edu", "Student One"),
        "outsider": make_user(app_session, "outsider@example.edu", "Otto Outsider"),
        "admin": make_user(app_session, "admin@example.edu", "Ada Admin", is_admin=True),
    }
    course = make_course(app_session, "CS101", "Backprop 101", members={
        people["instructor"]: "instructor", people["ta"]: "ta", people["student"]: "student"})
    make_course(app_session, "OTHER", "Another course", members={people["outsider"]: "student"})
    make_assignment(app_session, course, "Homework 1", problems=("mlp-relu", "affine-np"),
                    max_attempts=3, late_offset_h=48, late_credit=50)
    make_assignment(app_session, course, "Homework 2", open_offset_h=24, due_offset_h=48)
    app_session.commit()
    return people


STAFF_PAGES = ["/staff/CS101/"]
INSTRUCTOR_PAGES = ["/instructor/CS101/assignments/new", "/instructor/CS101/roster/import"]


@pytest.mark.parametrize(
    ("who", "page", "status"),
    [("student", p, 403) for p in STAFF_PAGES + INSTRUCTOR_PAGES]
    + [("outsider", p, 404) for p in STAFF_PAGES + INSTRUCTOR_PAGES]
    + [("ta", p, 200) for p in STAFF_PAGES] + [("ta", p, 403) for p in INSTRUCTOR_PAGES]
    + [("instructor", p, 200) for p in STAFF_PAGES + INSTRUCTOR_PAGES]
    + [("admin", p, 200) for p in STAFF_PAGES + INSTRUCTOR_PAGES],
)
def test_course_pages_by_role(client, course_people, who, page, status):
    login(client, course_people[who].email)
    assert client.get(page).status_code == status


@pytest.mark.parametrize("page", ["/", "/profile", *STAFF_PAGES, *INSTRUCTOR_PAGES])
def test_every_page_needs_a_login(client, course_people, page):
    response = client.get(page)
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


def test_unknown_course_is_404(client, course_people):
    login(client, "instructor@example.edu")
    assert client.get("/staff/NOPE/").status_code == 404


def test_student_dashboard_lists_courses_assignments_and_status(client, course_people):
    login(client, "student1@example.edu")
    page = client.get("/").get_data(as_text=True)
    assert "CS101 · Backprop 101" in page
    assert "Homework 1" in page and "Homework 2" in page
    assert "An MLP with relu" in page and "0/3 attempts" in page
    assert "late until" in page and "(50%)" in page
    assert "upcoming" in page  # Homework 2 opens tomorrow
    assert "Another course" not in page
    assert "Course staff page" not in page
    # Homework 1's problems link to their pages; Homework 2 has not opened yet.
    assert page.count("/problems/mlp-relu") == 1 and "/problems/affine-np" in page


def test_staff_dashboard_links_to_the_course_page(client, course_people):
    login(client, "ta@example.edu")
    assert "/staff/CS101/" in client.get("/").get_data(as_text=True)


def test_staff_course_page_lists_assignments_and_roster(client, course_people):
    login(client, "ta@example.edu")
    page = client.get("/staff/CS101/").get_data(as_text=True)
    assert "Homework 1" in page and "mlp-relu" in page and "affine-np" in page
    for name in ("Ines Instructor", "Tom TA", "Student One"):
        assert name in page
    assert "Otto Outsider" not in page
    assert "New assignment" not in page  # TA: no instructor actions
    login(client, "instructor@example.edu")
    assert "New assignment" in client.get("/staff/CS101/").get_data(as_text=True)


NEW = "/instructor/CS101/assignments/new"


def _assignment_form(**changes):
    data = {
        "title": "Homework 3", "open_at": "2026-03-01T09:00", "due_at": "2026-03-08T23:59",
        "late_until": "2026-03-10T23:59", "late_credit": "70", "max_attempts": "5",
        "score_policy": "best",
        "problems-0-problem_id": "affine-np", "problems-0-weight": "1",
        "problems-1-problem_id": "mlp-relu", "problems-1-include": "y", "problems-1-weight": "2.5",
        "problems-2-problem_id": "scalar-chain", "problems-2-include": "y",
        "problems-2-weight": "1",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def test_instructor_creates_an_assignment(client, course_people, app_session):
    login(client, "instructor@example.edu")
    form = client.get(NEW).get_data(as_text=True)
    for problem_id in ("mlp-relu", "affine-np", "scalar-chain"):
        assert problem_id in form
    response = post_form(client, NEW, NEW, _assignment_form())
    assert response.status_code == 302, response.get_data(as_text=True)
    assert response.headers["Location"] == "/staff/CS101/"
    app_session.expire_all()
    created = app_session.query(Assignment).filter_by(title="Homework 3").one()
    assert [(ap.problem_id, ap.weight) for ap in created.problems] == [
        ("mlp-relu", 2.5), ("scalar-chain", 1.0)]
    assert (created.late_credit, created.max_attempts, created.score_policy) == (70, 5, "best")
    assert created.due_at.isoformat() == "2026-03-08T23:59:00+00:00"  # NABLA_TIMEZONE=UTC
    assert created.late_until.isoformat() == "2026-03-10T23:59:00+00:00"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"due_at": "2026-02-01T09:00"}, "Due: is before the opening date"),
        ({"late_until": "2026-03-02T00:00"}, "Late submissions until: is before the due date"),
        ({"late_credit": "120"}, "Late credit (%): must be between 0 and 100"),
        ({"late_credit": "lots"}, "Late credit (%): Not a valid integer value"),
        ({"late_until": "", "late_credit": "50"}, "needs a late-until date"),
        ({"open_at": "yesterday"}, "Opens: Not a valid datetime value"),
        ({"title": ""}, "Title: This field is required"),
        ({"problems-1-include": None, "problems-2-include": None}, "choose at least one problem"),
        ({"problems-1-weight": "-1"}, "weight: must be between 0.01 and 1000"),
        ({"problems-1-problem_id": "not-in-bank"}, "'not-in-bank' is not in the problem bank"),
        ({"score_policy": "median"}, "Not a valid choice"),
    ],
)
def test_bad_assignment_forms_say_which_field_and_why(client, course_people, app_session,
                                                     changes, message):
    login(client, "instructor@example.edu")
    response = post_form(client, NEW, NEW, _assignment_form(**changes))
    assert response.status_code == 400
    assert message in html.unescape(response.get_data(as_text=True))
    app_session.expire_all()
    assert app_session.query(Assignment).filter_by(title="Homework 3").count() == 0


def test_assignment_form_without_csrf_is_refused(client, course_people, app_session):
    login(client, "instructor@example.edu")
    assert client.post(NEW, data=_assignment_form()).status_code == 400
    assert app_session.query(Assignment).filter_by(title="Homework 3").count() == 0


def test_ta_cannot_post_an_assignment(client, course_people, app_session):
    login(client, "ta@example.edu")
    token = csrf_token(client, "/profile")
    response = client.post(NEW, data={**_assignment_form(), "csrf_token": token})
    assert response.status_code == 403
    assert app_session.query(Assignment).filter_by(title="Homework 3").count() == 0


IMPORT = "/instructor/CS101/roster/import"


def _roles(app_session):
    app_session.expire_all()
    rows = app_session.query(Enrollment).filter(Enrollment.course.has(code="CS101")).all()
    result = {e.user.email: e.role for e in rows}
    app_session.rollback()
    return result


@pytest.mark.parametrize("app_settings", [{"NABLA_BASE_URL": "https://nabla.example.edu"}])
def test_roster_import_from_pasted_text(client, course_people, app_session):
    login(client, "instructor@example.edu")
    text = "email,name,role\nnew1@example.edu,New One,student\nta@example.edu,Tom TA,instructor\n"
    response = post_form(client, IMPORT, IMPORT, {"csv_text": text}, follow_redirects=True)
    page = response.get_data(as_text=True)
    assert response.status_code == 201  # the new accounts' set-password links, shown once
    # ta@ is an existing account: raised to instructor by an instructor, it is invited.
    assert "1 new accounts, 1 enrolled, 0 role changes, 1 invited as staff (the role is " \
        "theirs once they accept it on their dashboard: ta@example.edu), 0 unchanged" in page
    assert "email,name,link\nnew1@example.edu,New One,https://nabla.example.edu/set-password/" \
        "inv_" in page
    roles = _roles(app_session)
    assert roles["new1@example.edu"] == "student" and roles["ta@example.edu"] == "ta"


@pytest.mark.parametrize("app_settings", [{"NABLA_BASE_URL": "https://nabla.example.edu"}])
def test_roster_import_from_an_uploaded_file(client, course_people, app_session):
    login(client, "instructor@example.edu")
    upload = (io.BytesIO(b"\xef\xbb\xbfnew2@example.edu,New Two\n"), "roster.csv")
    response = post_form(client, IMPORT, IMPORT, {"csv_file": upload},
                         content_type="multipart/form-data")
    assert response.status_code == 201
    assert _roles(app_session)["new2@example.edu"] == "student"


def test_roster_import_errors_name_the_line_and_import_nothing(client, course_people,
                                                               app_session):
    login(client, "instructor@example.edu")
    text = "good@example.edu,Good\nbad-email,Bad\nx@example.edu,X,dean\n"
    response = post_form(client, IMPORT, IMPORT, {"csv_text": text})
    page = html.unescape(response.get_data(as_text=True))
    assert response.status_code == 400
    assert "Nothing was imported" in page
    assert "line 2: email: 'bad-email' is not an email address" in page
    assert "line 3: role: 'dean' is not one of" in page
    assert "good@example.edu" not in _roles(app_session)


def test_roster_import_rejects_binary_and_empty_uploads(client, course_people):
    login(client, "instructor@example.edu")
    binary = (io.BytesIO(b"\xff\xfe\x00garbage"), "roster.csv")
    response = post_form(client, IMPORT, IMPORT, {"csv_file": binary},
                         content_type="multipart/form-data")
    assert response.status_code == 400
    assert "csv_file: the file is not UTF-8 text" in response.get_data(as_text=True)
    empty = post_form(client, IMPORT, IMPORT, {"csv_text": "  "})
    assert "upload a CSV file or paste its text" in empty.get_data(as_text=True)


def test_too_large_upload_is_413_not_500(app, client, course_people):
    app.config["MAX_CONTENT_LENGTH"] = 2048
    login(client, "instructor@example.edu")
    token = csrf_token(client, IMPORT)
    response = client.post(IMPORT, data={"csv_text": "x" * 5000, "csrf_token": token})
    assert response.status_code == 413


def test_form_times_are_read_in_the_site_time_zone(app, client, course_people, app_session):
    app.config["NABLA_TIMEZONE"] = "America/New_York"
    login(client, "instructor@example.edu")
    response = post_form(client, NEW, NEW, _assignment_form(late_until="", late_credit="0"))
    assert response.status_code == 302
    app_session.expire_all()
    created = app_session.query(Assignment).filter_by(title="Homework 3").one()
    # Daylight saving time starts in New York on March 8, 2026: 23:59 that day
    # is EDT (UTC-4), so 03:59 UTC on March 9; the open time (March 1) is EST.
    assert created.due_at.isoformat() == "2026-03-09T03:59:00+00:00"
    assert created.open_at.isoformat() == "2026-03-01T14:00:00+00:00"


def _edit_url(app_session, title="Homework 1"):
    assignment_id = app_session.query(Assignment.id).filter_by(title=title).scalar()
    app_session.rollback()
    return f"/instructor/CS101/assignments/{assignment_id}/edit", assignment_id


def test_instructor_edits_an_assignment(app, client, course_people, app_session):
    app.config["NABLA_TIMEZONE"] = "Europe/Berlin"
    url, assignment_id = _edit_url(app_session)
    login(client, "instructor@example.edu")
    form = client.get(url).get_data(as_text=True)
    assert 'value="Homework 1"' in form
    # the assignment's problems come first, checked, with their weights
    assert form.index("affine-np") < form.index("scalar-chain")
    response = post_form(client, url, url, _assignment_form(
        title="Homework 1 (extended)", due_at="2026-03-09T23:59",
        **{"problems-0-problem_id": "affine-np", "problems-0-include": "y",
           "problems-0-weight": "3"}))
    assert response.status_code == 302, html.unescape(response.get_data(as_text=True))
    app_session.expire_all()
    edited = app_session.get(Assignment, assignment_id)
    assert edited.title == "Homework 1 (extended)"
    assert edited.due_at.isoformat() == "2026-03-09T22:59:00+00:00"  # Berlin is UTC+1
    assert [(ap.problem_id, ap.weight, ap.position) for ap in edited.problems] == [
        ("affine-np", 3.0, 0), ("mlp-relu", 2.5, 1), ("scalar-chain", 1.0, 2)]
    app_session.rollback()
    # the form shows the stored times back in the site's zone
    assert 'value="2026-03-09T23:59"' in client.get(url).get_data(as_text=True)


def test_a_started_problem_cannot_be_removed(client, course_people, app_session):
    from server.models import Instance
    from server.services.problems import latest_version

    assignment = app_session.query(Assignment).filter_by(title="Homework 1").one()
    ap = next(ap for ap in assignment.problems if ap.problem_id == "mlp-relu")
    app_session.add(Instance(
        user_id=course_people["student"].id, assignment_problem_id=ap.id,
        problem_version_id=latest_version(app_session, "mlp-relu").id, seed=7,
        dims_json="{}", choices_json="{}", values_json="{}", reference_json="{}"))
    app_session.commit()
    url = f"/instructor/CS101/assignments/{assignment.id}/edit"
    login(client, "instructor@example.edu")
    data = _assignment_form(**{"problems-1-include": None, "problems-2-include": None,
                               "problems-0-include": "y"})
    response = post_form(client, url, url, data)
    assert response.status_code == 400
    assert "mlp-relu cannot be removed: students have started them" in \
        html.unescape(response.get_data(as_text=True))
    app_session.expire_all()
    kept = app_session.get(Assignment, assignment.id)
    assert sorted(ap.problem_id for ap in kept.problems) == ["affine-np", "mlp-relu"]
    assert kept.title == "Homework 1"


def test_edit_of_another_courses_assignment_is_404(client, course_people, app_session,
                                                   make_course, make_assignment):
    other = make_course(app_session, "CS202", "Other",
                        members={course_people["instructor"]: "student"})
    foreign = make_assignment(app_session, other, "Foreign")
    app_session.commit()
    login(client, "instructor@example.edu")
    assert client.get(f"/instructor/CS101/assignments/{foreign.id}/edit").status_code == 404
    assert client.get(f"/instructor/CS202/assignments/{foreign.id}/edit").status_code == 403
    login(client, "ta@example.edu")
    url, _ = _edit_url(app_session)
    assert client.get(url).status_code == 403


def test_instructor_changes_roles_and_removes_people(client, course_people, app_session):
    student_id = course_people["student"].id
    ta_id = course_people["ta"].id
    instructor_id = course_people["instructor"].id
    login(client, "instructor@example.edu")
    page = client.get("/staff/CS101/").get_data(as_text=True)
    assert f"/instructor/CS101/roster/{student_id}/remove" in page
    response = post_form(client, "/staff/CS101/", f"/instructor/CS101/roster/{student_id}/role",
                         {"role": "ta"}, follow_redirects=True)
    assert "student1@example.edu is invited to be ta in CS101: the role is theirs once they " \
        "accept" in response.get_data(as_text=True)
    assert _roles(app_session)["student1@example.edu"] == "student"
    lowered = post_form(client, "/staff/CS101/", f"/instructor/CS101/roster/{ta_id}/role",
                        {"role": "student"}, follow_redirects=True)
    assert "ta@example.edu is now student in CS101" in lowered.get_data(as_text=True)
    bad = post_form(client, "/staff/CS101/", f"/instructor/CS101/roster/{student_id}/role",
                    {"role": "emperor"}, follow_redirects=True)
    assert "role: Not a valid choice" in bad.get_data(as_text=True)
    alone = post_form(client, "/staff/CS101/", f"/instructor/CS101/roster/{instructor_id}/remove",
                      {}, follow_redirects=True)
    assert "is the only instructor of CS101" in alone.get_data(as_text=True)
    removed = post_form(client, "/staff/CS101/", f"/instructor/CS101/roster/{student_id}/remove",
                        {}, follow_redirects=True)
    assert "student1@example.edu was removed from CS101" in removed.get_data(as_text=True)
    assert "student1@example.edu" not in _roles(app_session)
    gone = post_form(client, "/staff/CS101/", f"/instructor/CS101/roster/{student_id}/remove",
                     {}, follow_redirects=True)
    assert "is not enrolled in CS101" in gone.get_data(as_text=True)


def test_ta_cannot_change_roles(client, course_people, app_session):
    login(client, "ta@example.edu")
    page = client.get("/staff/CS101/").get_data(as_text=True)
    assert "/remove" not in page
    student_id = course_people["student"].id
    response = post_form(client, "/staff/CS101/", f"/instructor/CS101/roster/{student_id}/role",
                         {"role": "instructor"})
    assert response.status_code == 403
    assert _roles(app_session)["student1@example.edu"] == "student"


def test_a_broken_problem_bank_is_a_clear_503(app, client, course_people):
    def broken_bank():
        raise ValueError("problems/bad.toml: line 3: unknown name 'W9'")

    app.config["NABLA_PROBLEM_BANK"] = broken_bank
    login(client, "instructor@example.edu")
    response = client.get(NEW)
    assert response.status_code == 503
    page = html.unescape(response.get_data(as_text=True))
    assert "problems/bad.toml: line 3: unknown name 'W9'" in page
    assert "nabla problems check" in page


def test_the_real_bank_is_used_when_none_is_configured(app, client, course_people, app_session):
    from server.engine.bank import BANK_DIR, load_bank
    from server.services.bank import sync_folder

    app.config.pop("NABLA_PROBLEM_BANK")
    sync_folder(app_session, BANK_DIR)  # the database is the bank of record
    app_session.commit()
    login(client, "instructor@example.edu")
    page = client.get(NEW).get_data(as_text=True)
    for problem_id in load_bank():
        assert problem_id in page
