"""The student flow through the web app, on the real problem bank: page, submit, feedback."""

from __future__ import annotations

import html
import io
import json

import numpy as np
import pytest

from server.models import Submission

from .flow import model_answer, stored, submission_key
from .helpers import csrf_token, login

pytestmark = pytest.mark.usefixtures("db_backend")


@pytest.fixture
def fake_bank(engine_bank):
    """The app and make_assignment use the real problem bank in this module."""
    return engine_bank


@pytest.fixture
def course(app_session, make_user, make_course, make_assignment):
    student = make_user(app_session, "student1@example.edu", "Student One")
    other = make_user(app_session, "student2@example.edu", "Student Two")
    ta = make_user(app_session, "ta@example.edu", "Tom TA")
    outsider = make_user(app_session, "outsider@example.edu", "Otto Outsider")
    course = make_course(app_session, "CS101", members={
        student: "student", other: "student", ta: "ta"})
    make_course(app_session, "OTHER", members={outsider: "student"})
    hw = make_assignment(app_session, course, "Homework 1", max_attempts=3,
                         problems=("mlp-relu", "mlp-relu-numpy", "rule-4a-generalized-chain"))
    one = make_assignment(app_session, course, "One shot", max_attempts=1, problems=("mlp-relu",))
    late = make_assignment(app_session, course, "Late", open_offset_h=-48, due_offset_h=-1,
                           late_offset_h=1, late_credit=50, problems=("mlp-relu",))
    closed = make_assignment(app_session, course, "Closed", open_offset_h=-48, due_offset_h=-2,
                             late_offset_h=-1, late_credit=50, problems=("mlp-relu",))
    upcoming = make_assignment(app_session, course, "Upcoming", open_offset_h=24,
                               due_offset_h=48, problems=("mlp-relu",))
    app_session.commit()
    return {"hw": hw.id, "one": one.id, "late": late.id, "closed": closed.id,
            "upcoming": upcoming.id}


def _page(assignment_id, problem_id):
    return f"/assignments/{assignment_id}/problems/{problem_id}"


def _submit(client, assignment_id, problem_id, answer, key=None, **kwargs):
    page = client.get(_page(assignment_id, problem_id)).get_data(as_text=True)
    data = {"answer": answer, "csrf_token": csrf_token(client, "/profile"),
            "submission_key": key or submission_key(page)}
    return client.post(_page(assignment_id, problem_id), data=data, **kwargs)


def _text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def test_equations_flow_page_submit_feedback_history(client, app_session, engine_bank, course):
    login(client, "student1@example.edu")
    page = client.get(_page(course["hw"], "mlp-relu"))
    assert page.status_code == 200
    text = _text(page)
    assert text.count("<math") == 8 and "z1 = W1 @ x" in text  # the forward program, as MathML
    assert "H1×N" in text and "dW1 (" in text and "0 used, 3 left" in text
    assert "values.json" in text and "values.npz" in text
    answer = model_answer(app_session, engine_bank, "student1@example.edu", "mlp-relu")

    response = _submit(client, course["hw"], "mlp-relu", answer)
    assert response.status_code == 302 and "/submissions/" in response.headers["Location"]
    feedback = _text(client.get(response.headers["Location"]))
    assert "Score <strong>100%</strong>" in feedback and "2 attempts left" in feedback
    assert feedback.count('class="line correct"') == 14

    wrong = answer.replace("dz6 * (z5 > 0).T", "dz6 * (z2 > 0).T")
    response = _submit(client, course["hw"], "mlp-relu", wrong)
    feedback = _text(client.get(response.headers["Location"]))
    assert 'class="line wrong"' in feedback and "the mask must come from z5" in feedback
    assert 'class="line carried"' in feedback and "carries the mistake from line" in feedback
    assert "1 attempt left" in feedback and "✗ incorrect" in feedback
    # Gradients in the order the problem asks for them.
    order = [feedback.index(f"<code>{g}</code>") for g in ("dx", "dW1", "db1", "dW2", "db3")]
    assert order == sorted(order)

    page = _text(client.get(_page(course["hw"], "mlp-relu")))
    assert "2 used, 1 left" in page and page.count("feedback</a>") == 2
    assert "dz6 * (z2 > 0).T" in page  # the last answer is back in the box
    assert [(s, a) for s, a, _ in stored(app_session)] == [("graded", 1), ("graded", 2)]


def test_numpy_flow(client, app_session, engine_bank, course):
    login(client, "student1@example.edu")
    assert client.get(_page(course["hw"], "mlp-relu-numpy")).status_code == 200
    answer = model_answer(app_session, engine_bank, "student1@example.edu", "mlp-relu-numpy")
    broken = answer.replace("def backward(", "def backward[")
    feedback = _text(client.get(
        _submit(client, course["hw"], "mlp-relu-numpy", broken).headers["Location"]))
    assert "Not a valid answer" in feedback and "3 attempts left" in feedback
    assert 'class="line wrong"' in feedback  # the syntax error is on its line
    feedback = _text(client.get(
        _submit(client, course["hw"], "mlp-relu-numpy", answer).headers["Location"]))
    assert "Score <strong>100%</strong>" in feedback and "2 attempts left" in feedback
    assert "✓ correct" in feedback
    assert [(s, a) for s, a, _ in stored(app_session)] == [("invalid", None), ("graded", 1)]


def test_expression_flow(client, app_session, engine_bank, course):
    pid = "rule-4a-generalized-chain"
    login(client, "student1@example.edu")
    page = _text(client.get(_page(course["hw"], pid)))
    assert "Your constants" in page and page.count("<math") == 3 and "dL/dx" in page
    answer = model_answer(app_session, engine_bank, "student1@example.edu", pid)
    feedback = _text(client.get(_submit(client, course["hw"], pid, answer).headers["Location"]))
    assert "Score <strong>100%</strong>" in feedback
    feedback = _text(client.get(_submit(client, course["hw"], pid, "x +").headers["Location"]))
    assert "Not a valid answer" in feedback


@pytest.mark.parametrize(
    ("answer", "status", "message"),
    [("   ", 400, "answer: is empty"),
     ("x" * 20_001, 413, "answer: is 20001 characters long; the limit is 20000"),
     ("dz7 = doutput\x00", 400, "answer: contains a NUL character")],
)
def test_bad_input_is_refused_with_a_reason_and_the_text_kept(client, app_session, course,
                                                             answer, status, message):
    login(client, "student1@example.edu")
    response = _submit(client, course["hw"], "mlp-relu", answer)
    assert response.status_code == status
    assert message in _text(response) and 'id="answer"' in _text(response)
    assert stored(app_session) == []


def test_a_double_click_stores_one_submission(client, app_session, course):
    login(client, "student1@example.edu")
    page = client.get(_page(course["hw"], "mlp-relu")).get_data(as_text=True)
    key = submission_key(page)
    first = _submit(client, course["hw"], "mlp-relu", "dz7 = doutput", key=key)
    second = _submit(client, course["hw"], "mlp-relu", "dz7 = doutput", key=key)
    assert first.headers["Location"] == second.headers["Location"]
    assert "already sent" in _text(client.get(second.headers["Location"]))
    assert [(s, a) for s, a, _ in stored(app_session)] == [("graded", 1)]
    assert submission_key(client.get(_page(course["hw"], "mlp-relu")).get_data(as_text=True)) != key


def test_no_attempts_left_is_refused_and_the_text_is_stored(client, app_session, course):
    login(client, "student1@example.edu")
    _submit(client, course["one"], "mlp-relu", "dz7 = doutput")
    response = _submit(client, course["one"], "mlp-relu", "dz7 = doutput\ndb3 = doutput",
                       follow_redirects=True)
    text = _text(response)
    assert "Not accepted: no attempts left" in text
    assert "dz7 = doutput\ndb3 = doutput" in text  # back in the box
    assert '<button type="submit" data-submit disabled>' in text
    assert [(s, a) for s, a, _ in stored(app_session)] == [("graded", 1), ("refused", None)]


def test_late_credit_and_closed_assignments(client, app_session, engine_bank, course):
    login(client, "student1@example.edu")
    assert "late: submissions until" in _text(client.get(_page(course["late"], "mlp-relu")))
    answer = model_answer(app_session, engine_bank, "student1@example.edu", "mlp-relu")
    feedback = _text(client.get(_submit(client, course["late"], "mlp-relu", answer)
                                .headers["Location"]))
    assert "Score <strong>50%</strong>" in feedback and "(100% × 50% late credit)" in feedback
    response = _submit(client, course["closed"], "mlp-relu", "dz7 = doutput",
                       follow_redirects=True)
    assert "Not accepted: closed: the last submission time was" in _text(response)
    assert stored(app_session)[-1] == ("refused", None, "dz7 = doutput")


def test_values_downloads_hold_forward_values_and_the_given_gradient_only(
        client, app_session, course):
    login(client, "student1@example.edu")
    page = _text(client.get(_page(course["hw"], "mlp-relu")))
    response = client.get(_page(course["hw"], "mlp-relu") + "/values.json")
    assert response.status_code == 200
    assert "attachment" in response.headers["Content-Disposition"]
    document = json.loads(response.data)
    names = set(document["values"])
    assert names == {"x", "W1", "b1", "W2", "b2", "W3", "b3", "z1", "z2", "z3", "z4", "z5",
                     "z6", "z7", "output", "doutput"}
    assert "reference" not in response.get_data(as_text=True)
    assert "accumulation" not in response.get_data(as_text=True)
    assert document["given"] == "doutput" and "dW1" in document["ask"]
    npz = np.load(io.BytesIO(client.get(_page(course["hw"], "mlp-relu") + "/values.npz").data))
    assert set(npz.files) == names
    np.testing.assert_array_equal(npz["W1"], np.asarray(document["values"]["W1"]))
    assert f"{npz['W1'].shape[0]}×{npz['W1'].shape[1]}" in page


def test_problem_page_access(client, app_session, course):
    login(client, "outsider@example.edu")
    assert client.get(_page(course["hw"], "mlp-relu")).status_code == 404
    assert client.get(_page(course["hw"], "mlp-relu") + "/values.json").status_code == 404
    login(client, "student1@example.edu")
    assert client.get(_page(course["upcoming"], "mlp-relu")).status_code == 404
    assert client.get(_page(course["hw"], "no-such-problem")).status_code == 404
    assert client.get(_page(course["hw"] + 1000, "mlp-relu")).status_code == 404
    assert _submit_without_page(client, course["upcoming"]).status_code == 302
    assert stored(app_session)[-1][0] == "refused"  # early answers are kept, not graded


def _submit_without_page(client, assignment_id):
    data = {"answer": "dz7 = doutput", "csrf_token": csrf_token(client, "/profile"),
            "submission_key": "k" * 20}
    return client.post(_page(assignment_id, "mlp-relu"), data=data)


def test_a_student_cannot_see_another_students_submission(client, app_session, course):
    login(client, "student1@example.edu")
    location = _submit(client, course["hw"], "mlp-relu", "dz7 = doutput").headers["Location"]
    assert client.get(location).status_code == 200
    login(client, "student2@example.edu")
    denied = client.get(location)
    assert denied.status_code == 403 and "not yours" in _text(denied)
    assert client.get("/submissions/999999").status_code == 404


def test_staff_see_every_submission_including_refused(client, app_session, course):
    login(client, "student1@example.edu")
    _submit(client, course["closed"], "mlp-relu", "dz7 = doutput  # too late")
    _submit(client, course["hw"], "mlp-relu", "dz7 = = 1")
    login(client, "ta@example.edu")
    overview = _text(client.get("/staff/CS101/"))
    assert "1 submissions" in overview and "1 refused" in overview and "1 invalid" in overview
    listing = _text(client.get(f"/staff/CS101/assignments/{course['closed']}/submissions"))
    assert "student1@example.edu" in listing and "refused" in listing and "closed:" in listing
    sub_id = app_session.query(Submission.id).order_by(Submission.id).first()[0]
    app_session.rollback()
    detail = _text(client.get(f"/staff/CS101/submissions/{sub_id}"))
    assert "dz7 = doutput  # too late" in detail and "Not accepted" in detail
    assert client.get(f"/staff/CS101/assignments/{course['hw']}/submissions?status=nope"
                      ).status_code == 400
    login(client, "student1@example.edu")
    assert client.get(f"/staff/CS101/submissions/{sub_id}").status_code == 403
    assert client.get(f"/staff/CS101/assignments/{course['hw']}/submissions").status_code == 403
    login(client, "outsider@example.edu")  # not in the course: it does not exist for them
    assert client.get(f"/staff/CS101/submissions/{sub_id}").status_code == 404
    assert client.get(f"/staff/OTHER/submissions/{sub_id}").status_code == 403


def test_a_broken_bank_does_not_stop_students_who_started(app, client, app_session, engine_bank,
                                                         course):
    login(client, "student1@example.edu")
    assert client.get(_page(course["hw"], "mlp-relu")).status_code == 200  # drawn
    answer = model_answer(app_session, engine_bank, "student1@example.edu", "mlp-relu")

    def broken_bank():
        raise ValueError("problems/mlp-relu.toml: line 3: unknown name 'W9'")

    app.config["NABLA_PROBLEM_BANK"] = broken_bank
    assert client.get(_page(course["hw"], "mlp-relu")).status_code == 200
    feedback = _text(client.get(_submit(client, course["hw"], "mlp-relu", answer)
                                .headers["Location"]))
    assert "Score <strong>100%</strong>" in feedback  # graded with the stored spec version
    response = client.get(_page(course["hw"], "mlp-relu-numpy"))  # never opened: not drawable
    assert response.status_code == 404 and "not available" in _text(response)


def test_the_answer_box_keeps_a_leading_blank_line(client, app_session, course):
    # HTML drops one newline right after <textarea>: the template adds one, so
    # the box shows the stored text exactly and line numbers match the feedback.
    login(client, "student1@example.edu")
    _submit(client, course["hw"], "mlp-relu", "\ndz7 = doutput")
    page = client.get(_page(course["hw"], "mlp-relu")).get_data(as_text=True)
    assert 'aria-describedby="answer-keys">\n\ndz7 = doutput</textarea>' in page


@pytest.mark.parametrize("path", ["/submissions/{big}", "/assignments/{big}/problems/mlp-relu",
                                  "/staff/CS101/submissions/{big}",
                                  "/staff/CS101/assignments/{big}/submissions"])
def test_ids_beyond_the_database_range_are_404_not_500(client, course, path):
    login(client, "ta@example.edu")
    assert client.get(path.format(big=2**31)).status_code == 404
    assert client.get(path.format(big=2**31 - 1)).status_code == 404  # in range, unknown


def test_pages_end_their_transaction_before_rendering(app, client, app_session, course):
    # On SQLite a transaction holds the write lock: a page must not keep it
    # while its template renders, nor open one from the template (a lazy load).
    from flask import before_render_template, template_rendered

    from server.db import get_session

    login(client, "student1@example.edu")
    location = _submit(client, course["hw"], "mlp-relu", "dz7 = doutput").headers["Location"]
    sub_id = location.rsplit("/", 1)[1]
    open_at = []

    def check(sender, template, context, **extra):
        mine = template.name.startswith(("student/problem", "student/submission", "staff/"))
        if mine and get_session().in_transaction():
            open_at.append(template.name)

    pages = {"student": [_page(course["hw"], "mlp-relu"), location],
             "ta": ["/staff/CS101/", f"/staff/CS101/assignments/{course['hw']}/submissions",
                    f"/staff/CS101/submissions/{sub_id}"]}
    with (
        before_render_template.connected_to(check, app),
        template_rendered.connected_to(check, app),
    ):
        for who, urls in pages.items():
            login(client, f"{who}1@example.edu" if who == "student" else "ta@example.edu")
            for url in urls:
                assert client.get(url).status_code == 200, url
    assert open_at == []
