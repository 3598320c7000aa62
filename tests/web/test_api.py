import pytest

from server.services import tokens

pytestmark = pytest.mark.usefixtures("db_backend")


@pytest.fixture
def api_setup(app_session, make_user, make_course, make_assignment):
    student = make_user(app_session, "student1@example.edu", "Student One")
    other = make_user(app_session, "student2@example.edu", "Student Two")
    course = make_course(app_session, members={student: "student"})
    make_assignment(app_session, course, "Homework 1", problems=("mlp-relu", "affine-np"),
                    max_attempts=3)
    _, token = tokens.create_token(app_session, student, "tests")
    _, other_token = tokens.create_token(app_session, other, "tests")
    app_session.commit()
    return {"token": token, "other_token": other_token}


def _auth(token):
    return {"Authorization": f"Bearer {token}"}


def test_assignments_lists_my_assignments(client, api_setup):
    response = client.get("/api/v1/assignments", headers=_auth(api_setup["token"]))
    assert response.status_code == 200
    (assignment,) = response.json["assignments"]
    assert assignment["course"] == "CS101" and assignment["title"] == "Homework 1"
    assert assignment["phase"] == "open" and assignment["max_attempts"] == 3
    assert assignment["due_at"].endswith("+00:00")
    assert [p["id"] for p in assignment["problems"]] == ["mlp-relu", "affine-np"]
    assert assignment["problems"][1]["answer_type"] == "numpy"
    assert assignment["problems"][0]["score"] is None


def test_another_student_sees_none_of_my_assignments(client, api_setup):
    response = client.get("/api/v1/assignments", headers=_auth(api_setup["other_token"]))
    assert response.status_code == 200 and response.json == {"assignments": []}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer"}, {"Authorization": "Basic abc"},
     {"Authorization": "Bearer nabla_not-a-real-token"}],
)
def test_missing_or_bad_token_is_401_json(client, api_setup, headers):
    response = client.get("/api/v1/assignments", headers=headers)
    assert response.status_code == 401
    assert response.is_json and "token" in response.json["error"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_session_cookie_does_not_authenticate_the_api(client, api_setup):
    from .helpers import login

    login(client, "student1@example.edu")
    assert client.get("/api/v1/assignments").status_code == 401


def test_unknown_api_route_is_404_json(client, api_setup):
    response = client.get("/api/v1/nothing-here", headers=_auth(api_setup["token"]))
    assert response.status_code == 404 and response.is_json and "error" in response.json


def test_api_post_needs_no_csrf_but_wrong_method_is_405_json(client, api_setup):
    response = client.post("/api/v1/assignments", headers=_auth(api_setup["token"]))
    assert response.status_code == 405 and response.is_json
