"""429s through the app: the submission rate (form and API) and the login throttle,
with the counters in the database and in Redis."""

from __future__ import annotations

import html
import re

import pytest

from server.models import Submission
from server.services import tokens

from .flow import submission_key
from .helpers import csrf_token, login

pytestmark = pytest.mark.usefixtures("db_backend")

ATTACKER = {"REMOTE_ADDR": "127.0.0.2"}
CLASSMATE = {"REMOTE_ADDR": "127.0.0.3"}
INVALID = "dz7 = doutput +"  # does not parse: stored as invalid, costs no attempt


@pytest.fixture
def fake_bank(engine_bank):
    return engine_bank


@pytest.fixture
def app_settings():
    return {"NABLA_SUBMIT_RATE": "3/minute", "NABLA_CHECK_RATE": "2/minute",
            "NABLA_LOGIN_ADDRESS_RATE": "8/15minutes"}


@pytest.fixture
def course(app_session, make_user, make_course, make_assignment):
    student = make_user(app_session, "student1@example.edu", "Student One")
    other = make_user(app_session, "student2@example.edu", "Student Two")
    course = make_course(app_session, "CS101", members={student: "student", other: "student"})
    hw = make_assignment(app_session, course, "Homework 1", max_attempts=5,
                         problems=("mlp-relu",))
    token = tokens.create_token(app_session, student, "tests")[1]
    other_token = tokens.create_token(app_session, other, "tests")[1]
    app_session.commit()
    return {"hw": hw.id, "token": token, "other_token": other_token}


def _api(client, course, answer, token=None, action="submissions"):
    return client.post(f"/api/v1/assignments/{course['hw']}/problems/mlp-relu/{action}",
                       json={"answer": answer},
                       headers={"Authorization": f"Bearer {token or course['token']}"})


def _form(client, course, answer):
    page_url = f"/assignments/{course['hw']}/problems/mlp-relu"
    page = client.get(page_url).get_data(as_text=True)
    return client.post(page_url, data={"answer": answer, "submission_key": submission_key(page),
                                       "csrf_token": csrf_token(client, "/profile")})


def _stored(app_session):
    app_session.expire_all()
    count = app_session.query(Submission).count()
    app_session.rollback()
    return count


def test_submissions_over_the_rate_are_429_and_store_nothing(client, app_session, course,
                                                             counter_store):
    assert [_api(client, course, INVALID).status_code for _ in range(3)] == [422] * 3
    refused = _api(client, course, INVALID)
    assert refused.status_code == 429
    retry = int(refused.headers["Retry-After"])
    assert 1 <= retry <= 2 * 60  # the window, then while its weight carries over
    assert refused.json["error"].startswith(
        "Too many submissions: at most 3 per minute. Nothing was stored and no attempt was "
        "used; try again in ")
    assert _stored(app_session) == 3
    # Another student is counted apart.
    assert _api(client, course, INVALID, course["other_token"]).status_code == 422


def test_the_form_and_the_api_share_the_rate_and_the_page_keeps_the_text(
        client, app_session, course, counter_store):
    login(client, "student1@example.edu")
    assert _form(client, course, INVALID).status_code == 302
    assert [_api(client, course, INVALID).status_code for _ in range(2)] == [422, 422]
    answer = "dz7 = doutput\ndb3 = doutput  # <my work>"
    refused = _form(client, course, answer)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 2 * 60
    page = html.unescape(refused.get_data(as_text=True))
    assert "Too many submissions: at most 3 per minute" in page and "try again in" in page
    textarea = re.search(r"<textarea[^>]*>(.*?)</textarea>", page, re.S).group(1)
    assert textarea.strip() == answer
    assert _stored(app_session) == 3


@pytest.mark.parametrize("app_settings", [{"NABLA_SUBMIT_RATE": "off"}])
def test_the_rate_can_be_turned_off(client, course, app_settings):
    assert {_api(client, course, INVALID).status_code for _ in range(5)} == {422}


# --- the check rate: the Check button and POST .../check, a budget of their own ------------


def _check_api(client, course, answer, token=None):
    return _api(client, course, answer, token, action="check")


def _check_form(client, course, answer):
    page_url = f"/assignments/{course['hw']}/problems/mlp-relu"
    return client.post(page_url + "/check",
                       data={"answer": answer, "csrf_token": csrf_token(client, "/profile")})


def test_checks_over_their_rate_are_429_and_leave_the_submissions_alone(
        client, app_session, course, counter_store):
    assert [_check_api(client, course, INVALID).status_code for _ in range(2)] == [200, 200]
    refused = _check_api(client, course, INVALID)
    assert refused.status_code == 429 and refused.is_json
    assert 1 <= int(refused.headers["Retry-After"]) <= 2 * 60
    assert refused.json["error"].startswith(
        "Too many checks: at most 2 per minute. This answer was not checked (a check never "
        "stores anything or uses an attempt); try again in ")
    assert "valid" not in refused.json and "errors" not in refused.json
    # Submissions have their own budget (3 per minute here), untouched by the checks...
    assert [_api(client, course, INVALID).status_code for _ in range(3)] == [422] * 3
    assert _api(client, course, INVALID).status_code == 429
    assert _stored(app_session) == 3  # (checks never store)
    # ... and another student's checks are counted apart.
    assert _check_api(client, course, INVALID, course["other_token"]).status_code == 200


def test_the_check_button_and_the_api_share_the_rate_and_the_page_keeps_the_text(
        client, app_session, course, counter_store):
    login(client, "student1@example.edu")
    answer = "dz7 = doutput\ndb3 = doutput  # <my work>"
    first = _check_form(client, course, answer)
    assert first.status_code == 200 and 'id="check-result"' in first.get_data(as_text=True)
    assert _check_api(client, course, INVALID).status_code == 200
    refused = _check_form(client, course, answer)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 2 * 60
    page = html.unescape(refused.get_data(as_text=True))
    assert "Too many checks: at most 2 per minute. This answer was not checked" in page
    assert 'id="check-result"' not in page  # no check ran
    textarea = re.search(r"<textarea[^>]*>(.*?)</textarea>", page, re.S).group(1)
    assert textarea.strip() == answer
    # Submitting still works: the check rate is not the submission rate.
    assert _form(client, course, answer).status_code == 302
    assert _stored(app_session) == 1


@pytest.mark.parametrize("app_settings", [{"NABLA_CHECK_RATE": "off"}])
def test_the_check_rate_can_be_turned_off(client, course, app_settings):
    assert {_check_api(client, course, INVALID).status_code for _ in range(5)} == {200}


# --- the login throttle -------------------------------------------------------------------


def _login(client, email, password, environ, **headers):
    token = csrf_token(client, "/login")
    return client.post("/login", data={"email": email, "password": password,
                                       "csrf_token": token},
                       environ_base=environ, headers=headers)


def test_wrong_passwords_lock_out_their_address_not_the_account(app, course, counter_store):
    attacker, student = app.test_client(), app.test_client()
    statuses = [_login(attacker, "student1@example.edu", "guess", ATTACKER).status_code
                for _ in range(6)]
    assert statuses == [401] * 5 + [429]
    locked = _login(attacker, "student1@example.edu", "correct horse battery", ATTACKER)
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
    assert "too many failed logins for this email from your address; try again in" in \
        locked.get_data(as_text=True)
    # The student, from another address, logs in.
    ok = _login(student, "student1@example.edu", "correct horse battery", CLASSMATE)
    assert ok.status_code == 302 and ok.headers["Location"] == "/"


def test_unknown_emails_get_the_same_answers_as_known_ones(app, course, counter_store):
    def answers(email, environ):
        client = app.test_client()
        out = []
        for _ in range(7):
            response = _login(client, email, "guess", environ)
            page = response.get_data(as_text=True)
            message = re.search(r'class="error">([^<]*)<', page) or \
                re.search(r"(too many[^<]*|The email or the password is not right\.)", page)
            out.append((response.status_code, message.group(1) if message else None))
        return out

    known = answers("student1@example.edu", ATTACKER)
    unknown = answers("nobody@example.edu", CLASSMATE)
    assert known == unknown and [status for status, _ in known] == [401] * 5 + [429] * 2


def test_an_address_guessing_many_emails_is_throttled(app, course, counter_store):
    attacker = app.test_client()
    statuses = [_login(attacker, f"user{n}@example.edu", "guess", ATTACKER).status_code
                for n in range(9)]
    assert statuses == [401] * 8 + [429]
    response = _login(attacker, "student2@example.edu", "correct horse battery", ATTACKER)
    assert response.status_code == 429
    assert "too many failed logins from your address" in response.get_data(as_text=True)
    ok = _login(app.test_client(), "student2@example.edu", "correct horse battery", CLASSMATE)
    assert ok.status_code == 302


def test_a_forged_x_forwarded_for_does_not_escape_the_throttle(app, course):
    """Without NABLA_PROXIES the socket's address counts, whatever the client claims."""
    attacker = app.test_client()
    statuses = [_login(attacker, "student1@example.edu", "guess", ATTACKER,
                       **{"X-Forwarded-For": f"198.51.100.{n}"}).status_code for n in range(6)]
    assert statuses == [401] * 5 + [429]


@pytest.mark.parametrize("app_settings", [{"NABLA_PROXIES": 1}])
def test_behind_a_trusted_proxy_the_forwarded_address_counts(app, course, app_settings):
    proxy = {"REMOTE_ADDR": "10.0.0.1"}
    attacker, student = app.test_client(), app.test_client()
    statuses = [_login(attacker, "student1@example.edu", "guess", proxy,
                       **{"X-Forwarded-For": "198.51.100.7"}).status_code for _ in range(6)]
    assert statuses == [401] * 5 + [429]
    ok = _login(student, "student1@example.edu", "correct horse battery", proxy,
                **{"X-Forwarded-For": "198.51.100.8"})
    assert ok.status_code == 302


@pytest.mark.parametrize("app_settings", [{"NABLA_REDIS_URL": "redis://127.0.0.1:1/0",
                                           "NABLA_SUBMIT_RATE": "3/minute"}])
def test_an_unreachable_redis_is_a_503_that_lets_nothing_through(client, app_session, course,
                                                                  app_settings):
    refused = _api(client, course, INVALID)
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "2"
    assert refused.json["error"].startswith("The server cannot reach its rate counters (Redis)")
    login = _login(client, "student1@example.edu", "correct horse battery", CLASSMATE)
    assert login.status_code == 503
    assert "cannot reach its rate counters" in html.unescape(login.get_data(as_text=True))
    assert _stored(app_session) == 0
