"""Input a database cannot store (NUL characters, ids out of range) is a clear 4xx, never a 500."""

import io

import pytest

from server.services import tokens

from .helpers import csrf_token, login, post_form

pytestmark = pytest.mark.usefixtures("db_backend")


@pytest.fixture
def people(app_session, make_user, make_course, make_assignment):
    student = make_user(app_session, "student1@example.edu", "Student One")
    instructor = make_user(app_session, "instructor@example.edu", "Ines Instructor")
    course = make_course(app_session, members={student: "student", instructor: "instructor"})
    make_assignment(app_session, course)
    _, token = tokens.create_token(app_session, student, "tests")
    app_session.commit()
    return {"token": token}


def test_nul_in_a_login_form_is_400_naming_the_field(client, people):
    response = client.post("/login", data={"email": "a\x00@example.edu", "password": "x",
                                           "csrf_token": csrf_token(client, "/login")})
    assert response.status_code == 400 and "email: contains a NUL character" in response.text


def test_nul_in_other_forms_and_urls(client, people):
    login(client, "instructor@example.edu")
    response = post_form(client, "/profile", "/profile/tokens", {"name": "note\x00book"})
    assert response.status_code == 400 and "name: contains a NUL character" in response.text
    response = post_form(client, "/instructor/CS101/roster/import",
                         "/instructor/CS101/roster/import",
                         {"csv_file": (io.BytesIO(b"x\x00@example.edu,X,student\n"), "r.csv")},
                         content_type="multipart/form-data")
    assert response.status_code == 400 and "csv_file: contains a NUL character" in response.text
    assert client.get("/staff/CS\x00101/").status_code == 404
    assert client.get("/assignments/1/problems/mlp\x00relu").status_code == 404
    assert client.get("/staff/CS101/?status=\x00").status_code == 400


def test_nul_in_api_urls_is_404_json(client, people):
    headers = {"Authorization": f"Bearer {people['token']}"}
    response = client.get("/api/v1/assignments/1/problems/%00", headers=headers)
    assert response.status_code == 404 and response.is_json
