"""The login throttle and the submission rate against real `nabla serve` processes
(2 workers x 2 threads each), with clients on distinct loopback source addresses.

The counters live in the database (SQLite, PostgreSQL) or in Redis; either way
every worker of every app server sees the same counts.
"""

from __future__ import annotations

import re

import pytest

from server.services import tokens

from .live import Browser, LiveServer

pytestmark = pytest.mark.usefixtures("db_backend")

ATTACKER, CLASSMATE, STRANGER = "127.0.0.2", "127.0.0.3", "127.0.0.4"
PASSWORD = "correct horse battery"
INVALID = "dz7 = doutput +"  # does not parse: stored as invalid, costs no attempt


@pytest.fixture
def server_env(database_url, counter_store, tmp_path, request):
    env = {"NABLA_DATABASE_URL": database_url, "NABLA_INSTANCE_PATH": str(tmp_path),
           "NABLA_SECRET_KEY": "live-test-secret-" + "x" * 32, "NABLA_SUBMIT_RATE": "5/minute",
           "NABLA_PROXIES": "", "NABLA_TRUSTED_PROXIES": "", "NABLA_REDIS_URL": ""}
    if counter_store == "redis":
        env["NABLA_REDIS_URL"] = request.getfixturevalue("redis_url")
        env["NABLA_REDIS_PREFIX"] = request.getfixturevalue("redis_prefix")
    return env


@pytest.fixture
def servers(server_env):
    """Start servers with ``servers(n)``; all are stopped after the test."""
    started = []

    def start(count=1):
        new = [LiveServer(server_env) for _ in range(count)]
        started.extend(new)
        for server in new:
            assert server.wait_until_up() == 200
        return new

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def fake_bank(engine_bank):
    """The real specs: the servers read them from the database, where
    make_assignment records them."""
    return engine_bank


@pytest.fixture
def student(session, make_user, make_course, make_assignment):
    user = make_user(session, "student1@example.edu", "Student One", PASSWORD)
    course = make_course(session, "CS101", members={user: "student"})
    hw = make_assignment(session, course, "Homework 1", max_attempts=3, problems=("mlp-relu",))
    token = tokens.create_token(session, user, "live")[1]
    session.commit()
    return {"email": user.email, "token": token, "hw": hw.id}


def _message(page: str) -> str:
    match = re.search(r"(too many failed logins[^<]*|The email or the password is not right\.)",
                      page)
    # The minutes left depend on when each run happened to start: a run that
    # crosses a minute boundary says 10 where the other says 11.
    return re.sub(r"in \d+ minutes?", "in N minutes", match.group(1)) if match else page[:200]


def test_an_attacker_address_is_throttled_and_a_classmate_elsewhere_is_not(
        servers, student, counter_store):
    (server,) = servers()
    attacker = Browser(server.port, ATTACKER)
    answers = [attacker.login(student["email"], "a wrong guess") for _ in range(6)]
    assert [status for status, _, _ in answers] == [401] * 5 + [429]
    status, headers, page = answers[-1]
    assert int(headers["Retry-After"]) > 0
    assert "too many failed logins for this email from your address; try again in" in page
    # The right password from the attacker's address is refused too, for now...
    assert attacker.login(student["email"], PASSWORD)[0] == 429
    # ...but the student, at another address, logs in and sees the dashboard.
    classmate = Browser(server.port, CLASSMATE)
    status, headers, _ = classmate.login(student["email"], PASSWORD)
    assert status == 302 and headers["Location"] == "/"
    assert classmate.request("GET", "/")[0] == 200


def test_unknown_and_known_emails_behave_the_same(servers, student, counter_store):
    (server,) = servers()

    def answers(email, source):
        browser = Browser(server.port, source)
        out = []
        for _ in range(7):
            status, headers, page = browser.login(email, "a wrong guess")
            out.append((status, "Retry-After" in headers, _message(page)))
        return out

    known = answers(student["email"], ATTACKER)
    unknown = answers("nobody@example.edu", STRANGER)
    assert known == unknown
    assert [status for status, _, _ in known] == [401] * 5 + [429] * 2


def test_the_submission_rate_holds_across_two_app_servers(servers, student, session,
                                                          counter_store):
    from server.models import Submission

    first, second = servers(2)
    path = f"/api/v1/assignments/{student['hw']}/problems/mlp-relu/submissions"
    results = []
    for number in range(8):
        browser = Browser((first, second)[number % 2].port)
        results.append(browser.post_json(path, {"answer": INVALID}, student["token"]))
    assert [status for status, _, _ in results] == [422] * 5 + [429] * 3
    for _, headers, body in results[5:]:
        assert int(headers["Retry-After"]) > 0
        assert body["error"].startswith("Too many submissions: at most 5 per minute.")
    session.expire_all()
    assert session.query(Submission).count() == 5
