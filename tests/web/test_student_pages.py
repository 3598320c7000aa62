"""Issue 11: Check (page and API), the assignment page and the problems' order, values in
forward order, attempts left as of a submission, the staff dashboards, filters and the
per-student page (real problem bank)."""

from __future__ import annotations

import html

import pytest

from server.services import tokens

from .flow import model_answer, stored, submission_key
from .helpers import csrf_token, login, post_form

pytestmark = pytest.mark.usefixtures("db_backend")

SHAPE_ERROR = "dz7 = doutput\ndW3 = dz7 @ z6\n"  # @ with the inner dimensions disagreeing


@pytest.fixture
def fake_bank(engine_bank):
    """The app and make_assignment use the real problem bank in this module."""
    return engine_bank


@pytest.fixture
def course(app_session, make_user, make_course, make_assignment):
    student = make_user(app_session, "student1@example.edu", "Student One")
    other = make_user(app_session, "student2@example.edu", "Student Two")
    ta = make_user(app_session, "ta@example.edu", "Tom TA")
    teacher = make_user(app_session, "teacher@example.edu", "Ida Instructor")
    outsider = make_user(app_session, "outsider@example.edu", "Otto Outsider")
    course = make_course(app_session, "CS101", members={
        student: "student", other: "student", ta: "ta", teacher: "instructor"})
    make_course(app_session, "OTHER", members={outsider: "student"})
    hw = make_assignment(app_session, course, "Homework 1", max_attempts=3,
                         problems=("mlp-relu", "rule-4a-generalized-chain", "mlp-relu-numpy"))
    _, token = tokens.create_token(app_session, student, "tests")
    app_session.commit()
    return {"hw": hw.id, "token": token, "student": student.id, "other": other.id,
            "outsider": outsider.id}


def _page(assignment_id, problem_id):
    return f"/assignments/{assignment_id}/problems/{problem_id}"


def _text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def _submit(client, assignment_id, problem_id, answer):
    page = client.get(_page(assignment_id, problem_id)).get_data(as_text=True)
    return client.post(_page(assignment_id, problem_id), data={
        "answer": answer, "csrf_token": csrf_token(client, "/profile"),
        "submission_key": submission_key(page)})


def _check_api(client, course, problem_id, body):
    return client.post(f"/api/v1/assignments/{course['hw']}/problems/{problem_id}/check",
                       json=body, headers={"Authorization": f"Bearer {course['token']}"})


# --- Check ---------------------------------------------------------------------------


def test_api_check_reports_a_shape_error_at_its_line_and_stores_nothing(client, app_session,
                                                                          course):
    response = _check_api(client, course, "mlp-relu", {"answer": SHAPE_ERROR})
    assert response.status_code == 200, response.json
    body = response.json
    assert body["valid"] is False and body["stored"] is False
    (error,) = body["errors"]
    assert error["line"] == 2 and "inner dimensions" in error["message"]
    assert "^" in error["message"]  # the caret under the operator, as feedback shows it
    assert stored(app_session) == []  # nothing stored, no attempt used


def test_api_check_of_a_right_answer_is_valid_and_grades_nothing(client, app_session,
                                                                  engine_bank, course):
    login(client, "student1@example.edu")
    client.get(_page(course["hw"], "mlp-relu"))  # draws the instance
    answer = model_answer(app_session, engine_bank, "student1@example.edu", "mlp-relu")
    body = _check_api(client, course, "mlp-relu", {"answer": answer}).json
    assert body == {"valid": True, "errors": [], "stored": False, "answer_type": "equations"}
    # every line that fails to run is named: a gradient read before it is assigned, a shape
    body = _check_api(client, course, "mlp-relu",
                      {"answer": "dx = dz1 @ W1\ndz7 = doutput\ndW3 = dz7 @ z6"}).json
    assert [e["line"] for e in body["errors"]] == [1, 3]
    assert "read before any line assigns it" in body["errors"][0]["message"]
    body = _check_api(client, course, "mlp-relu", {"answer": "dW3 = z6 @ dz7 +"}).json
    assert "syntax error" in body["errors"][0]["message"]
    assert stored(app_session) == []


def test_api_check_expression_and_numpy(client, app_session, course):
    body = _check_api(client, course, "rule-4a-generalized-chain",
                      {"answer": "dL/dx = 3*x"}).json
    assert body["valid"] is False
    assert "write only the right-hand side" in body["errors"][0]["message"]
    assert _check_api(client, course, "rule-4a-generalized-chain",
                      {"answer": "3*x**2"}).json["valid"] is True
    body = _check_api(client, course, "mlp-relu-numpy",
                      {"answer": "def backward(**kw):\n    return {\n"}).json
    assert body["valid"] is False and body["errors"][0]["line"] == 2
    body = _check_api(client, course, "mlp-relu-numpy",
                      {"answer": "import numpy as np\n\ndef backward(**kw):\n    return {}\n"}).json
    assert body["valid"] is True
    assert stored(app_session) == []


@pytest.mark.parametrize(("problem", "body", "status", "words"), [
    ("mlp-relu", {}, 400, "answer: is required"),
    ("mlp-relu", {"answer": "dz7 = doutput", "x": 1}, 400, "unknown field"),
    ("mlp-relu", {"answer": "   "}, 400, "answer: is empty"),
    ("mlp-relu", {"answer": 3}, 400, "must be a string"),
    ("nope", {"answer": "dz7 = doutput"}, 404, "no problem 'nope'"),
])
def test_api_check_refuses_bad_requests_by_field(client, course, problem, body, status, words):
    response = _check_api(client, course, problem, body)
    assert response.status_code == status and words in response.json["error"]


def test_api_check_is_not_for_another_course(client, app_session, course):
    _, token = tokens.create_token(app_session, app_session.get(
        __import__("server.models", fromlist=["User"]).User, course["outsider"]), "t")
    app_session.commit()
    response = client.post(f"/api/v1/assignments/{course['hw']}/problems/mlp-relu/check",
                           json={"answer": "dz7 = doutput"},
                           headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 404


def test_the_check_button_shows_the_error_keeps_the_text_and_stores_nothing(client, app_session,
                                                                            course):
    login(client, "student1@example.edu")
    response = post_form(client, _page(course["hw"], "mlp-relu"),
                         _page(course["hw"], "mlp-relu") + "/check", {"answer": SHAPE_ERROR})
    assert response.status_code == 200
    text = _text(response)
    assert "Check: 1 problem" in text and "inner dimensions to agree" in text
    assert 'href="#answer-help"' in text and 'id="answer-help"' in text
    assert SHAPE_ERROR.rstrip("\n") in text  # the text is back in the box
    assert "0 used, 3 left" in text
    assert stored(app_session) == []
    again = client.get(_page(course["hw"], "mlp-relu") + "/check")  # a reload, a bookmark
    assert again.status_code == 302 and again.headers["Location"] == _page(course["hw"],
                                                                           "mlp-relu")


# --- order, the assignment page, values ------------------------------------------------


def test_the_instructor_orders_problems_and_students_see_that_order(client, app_session, course):
    login(client, "teacher@example.edu")
    edit = f"/instructor/CS101/assignments/{course['hw']}/edit"
    page = client.get(edit).get_data(as_text=True)
    assert 'aria-label="Weight of mlp-relu"' in page and 'aria-label="Order of mlp-relu"' in page
    form = {"title": "Homework 1", "open_at": "2020-01-01T00:00", "due_at": "2099-01-01T00:00",
            "late_credit": "0", "max_attempts": "3", "score_policy": "best"}
    # the rows are the assignment's three problems first; reverse their order
    for k, (pid, order) in enumerate([("mlp-relu", 3), ("rule-4a-generalized-chain", 2),
                                      ("mlp-relu-numpy", 1)]):
        form.update({f"problems-{k}-problem_id": pid, f"problems-{k}-include": "y",
                     f"problems-{k}-position": str(order), f"problems-{k}-weight": "1"})
    response = post_form(client, edit, edit, form)
    assert response.status_code == 302, _text(response)[-2000:]

    login(client, "student1@example.edu")
    page = _text(client.get(f"/assignments/{course['hw']}"))
    positions = [page.index(f'problems/{pid}"') for pid in
                 ("mlp-relu-numpy", "rule-4a-generalized-chain", "mlp-relu")]
    assert positions == sorted(positions)
    dashboard = _text(client.get("/"))
    assert f'href="/assignments/{course["hw"]}"' in dashboard
    positions = [dashboard.index(f"problems/{pid}\"") for pid in
                 ("mlp-relu-numpy", "rule-4a-generalized-chain", "mlp-relu")]
    assert positions == sorted(positions)
    # each problem links to the next one in that order, the last one to the assignment
    problem = _text(client.get(_page(course["hw"], "mlp-relu-numpy")))
    assert "Problem 1 of 3" in problem and "Next problem: Rule 4(a)" in problem
    last = _text(client.get(_page(course["hw"], "mlp-relu")))
    assert "Last problem of Homework 1" in last


def test_the_assignment_page_is_only_for_its_course(client, course):
    login(client, "outsider@example.edu")
    assert client.get(f"/assignments/{course['hw']}").status_code == 404


def test_values_are_listed_in_forward_order(client, course):
    login(client, "student1@example.edu")
    text = _text(client.get(_page(course["hw"], "mlp-relu")))
    values = text[text.index("Show the values"):]
    order = ["x", "W1", "b1", "W2", "b2", "W3", "b3", "z1", "z2", "z3", "z4", "z5", "z6", "z7",
             "output", "doutput"]
    positions = [values.index(f'<div class="value"><code>{name}</code>') for name in order]
    assert positions == sorted(positions)


def test_expression_page_one_line_input_and_constants_where_used(client, course):
    login(client, "student1@example.edu")
    text = _text(client.get(_page(course["hw"], "rule-4a-generalized-chain")))
    assert '<input type="text" id="answer" name="answer"' in text and "<textarea" not in text
    assert "already put into the definitions below" in text and "(in g1)" in text
    assert "&ExponentialE;" not in text and "ⅇ" not in text
    assert "<mi>g1</mi>" not in text  # g1 is g with subscript 1, in every line


# --- feedback ----------------------------------------------------------------------------


def test_attempts_left_on_a_past_submission_are_as_of_that_submission(client, app_session,
                                                                      course):
    login(client, "student1@example.edu")
    first = _submit(client, course["hw"], "mlp-relu", "dz7 = doutput").headers["Location"]
    _submit(client, course["hw"], "mlp-relu", "dz7 = doutput\ndb3 = doutput")
    text = _text(client.get(first))
    assert "2 attempts left after this submission" in text
    assert "outcome-zero" in text or "outcome-partial" in text


def test_a_numpy_runtime_error_is_said_once_above_the_gradients(client, course):
    login(client, "student1@example.edu")
    answer = "import numpy as np\n\ndef backward(**kw):\n    x = 1 / 0\n    return {}\n"
    response = _submit(client, course["hw"], "mlp-relu-numpy", answer)
    text = _text(client.get(response.headers["Location"]))
    assert 'Your code stopped with an error at <a href="#line-4">line 4</a>' in text
    assert text.count("ZeroDivisionError: division by zero") == 1
    assert text.count("not computed") == 1  # one row for every gradient
    assert text.index("stopped with an error") < text.index("Gradients")
    assert '<tr class="line wrong" id="line-4">' in text


# --- staff ----------------------------------------------------------------------------------


def test_staff_dashboard_shows_staff_views(client, course):
    login(client, "ta@example.edu")
    text = _text(client.get("/"))
    assert "Course staff page" in text
    assert f"/staff/CS101/assignments/{course['hw']}/submissions" in text
    assert "attempts ·" not in text  # no student table of their own attempts


def test_submissions_filter_by_student_and_problem(client, app_session, course):
    login(client, "student1@example.edu")
    _submit(client, course["hw"], "mlp-relu", "dz7 = doutput")
    _submit(client, course["hw"], "rule-4a-generalized-chain", "3*x")
    login(client, "student2@example.edu")
    _submit(client, course["hw"], "mlp-relu", "dz7 = doutput")
    login(client, "ta@example.edu")
    base = f"/staff/CS101/assignments/{course['hw']}/submissions"
    assert "3 submissions" in _text(client.get(base))
    text = _text(client.get(f"{base}?student={course['student']}"))
    assert "2 submissions of Student One" in text and "student2@example.edu</small>" not in text
    text = _text(client.get(f"{base}?student={course['student']}&problem=mlp-relu"))
    assert "1 submission of Student One to" in text
    text = _text(client.get(f"{base}?problem=mlp-relu&status=graded"))
    assert "2 submissions to <code>mlp-relu</code> with status graded" in text
    bad = client.get(f"{base}?student={course['outsider']}")
    assert bad.status_code == 400 and "student:" in _text(bad)
    bad = client.get(f"{base}?problem=nope")
    assert bad.status_code == 400 and "problem: 'nope'" in _text(bad)


def test_a_student_page_lists_all_their_submissions_in_the_course(client, course):
    login(client, "student1@example.edu")
    _submit(client, course["hw"], "mlp-relu", "dz7 = doutput")
    _submit(client, course["hw"], "rule-4a-generalized-chain", "3*x")
    login(client, "ta@example.edu")
    text = _text(client.get(f"/staff/CS101/students/{course['student']}"))
    assert "Student One" in text and "2 submissions in CS101" in text
    assert text.count("/staff/CS101/submissions/") == 2
    roster = _text(client.get("/staff/CS101/"))
    assert f'href="/staff/CS101/students/{course["student"]}"' in roster
    assert client.get(f"/staff/CS101/students/{course['outsider']}").status_code == 404
    login(client, "student2@example.edu")
    assert client.get(f"/staff/CS101/students/{course['student']}").status_code in (403, 404)


def test_favicon_and_skip_link(client, course):
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.mimetype == "image/svg+xml"
    icon.close()
    login(client, "student1@example.edu")
    text = _text(client.get("/"))
    assert '<a class="skip" href="#main">' in text and '<main id="main"' in text
    assert 'rel="icon"' in text
