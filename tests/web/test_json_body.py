"""A JSON body nested too deeply is a 400 with a message, not a 500 (RecursionError)."""

from __future__ import annotations

import pytest

from server.services import tokens

from .helpers import csrf_token

pytestmark = pytest.mark.usefixtures("db_backend")


@pytest.fixture
def course(app_session, make_user, make_course, make_assignment):
    student = make_user(app_session, "student1@example.edu", "Student One")
    course = make_course(app_session, "CS101", members={student: "student"})
    hw = make_assignment(app_session, course, "Homework 1", problems=("mlp-relu",))
    token = tokens.create_token(app_session, student, "tests")[1]
    app_session.commit()
    return {"hw": hw.id, "token": token}


@pytest.mark.parametrize("body", ["[" * 100_000, '{"answer": ' + "[" * 100_000,
                                  '{"a":' * 50_000 + "1" + "}" * 50_000])
def test_json_nested_too_deeply_is_a_400_on_the_api(client, course, body):
    response = client.post(f"/api/v1/assignments/{course['hw']}/problems/mlp-relu/submissions",
                           data=body, content_type="application/json",
                           headers={"Authorization": f"Bearer {course['token']}"})
    assert response.status_code == 400
    assert response.json == {"error": "body: the JSON is nested too deeply to be read; "
                                      'send a JSON object {"answer": "..."}'}


def test_json_nested_too_deeply_is_a_400_on_a_form(client, course):
    """Flask-WTF reads a JSON body as the form's data: the login form, CSRF token in a header."""
    token = csrf_token(client, "/login")
    response = client.post("/login", data="[" * 100_000, content_type="application/json",
                           headers={"X-CSRFToken": token})
    assert response.status_code == 400
    assert "nested too deeply" in response.get_data(as_text=True)
