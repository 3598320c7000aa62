"""Two `nabla serve` processes on one PostgreSQL database (counters in the database,
or in one Redis), clients alternating between them (issue 14 §2): attempt limits,
idempotency keys, the login throttle and the submission rate hold across both.
(Problem edits across two servers: test_bank_two_servers.py.)"""

from __future__ import annotations

import json
import threading

import pytest

from server.engine.problem import draw, model_answer
from server.services import tokens

from .live import Browser, LiveServer

pytestmark = [pytest.mark.backends("postgresql"), pytest.mark.usefixtures("db_backend")]

PASSWORD = "correct horse battery"
ATTACKER = "127.0.0.2"
RATE = 12  # submissions per minute


@pytest.fixture
def fake_bank(engine_bank):
    return engine_bank  # the servers read the real specs from the database


@pytest.fixture
def pair(database_url, counter_store, tmp_path, request):
    env = {"NABLA_DATABASE_URL": database_url, "NABLA_INSTANCE_PATH": str(tmp_path),
           "NABLA_SECRET_KEY": "two-servers-secret-" + "x" * 32,
           "NABLA_SUBMIT_RATE": f"{RATE}/minute", "NABLA_PROXIES": "",
           "NABLA_TRUSTED_PROXIES": "", "NABLA_REDIS_URL": ""}
    if counter_store == "redis":
        env["NABLA_REDIS_URL"] = request.getfixturevalue("redis_url")
        env["NABLA_REDIS_PREFIX"] = request.getfixturevalue("redis_prefix")
    servers = [LiveServer(env, workers=1, threads=4) for _ in range(2)]
    try:
        for server in servers:
            assert server.wait_until_up() == 200, server.output()
        yield [server.port for server in servers]
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def student(session, make_user, make_course, make_assignment, engine_bank):
    user = make_user(session, "student1@example.edu", "Student One", PASSWORD)
    course = make_course(session, "CS101", members={user: "student"})
    hw = make_assignment(session, course, "Homework 1", max_attempts=3, problems=("mlp-relu",))
    token = tokens.create_token(session, user, "live")[1]
    session.commit()
    spec = engine_bank["mlp-relu"]
    return {"email": user.email, "token": token, "user": user.id,
            "path": f"/api/v1/assignments/{hw.id}/problems/mlp-relu/submissions",
            "answer": model_answer(spec, draw(spec, 0))}


def post(port, student, answer, key=None):
    headers = {"Content-Type": "application/json",
               "Authorization": f"Bearer {student['token']}"}
    if key:
        headers["Idempotency-Key"] = key
    status, _, text = Browser(port).request("POST", student["path"],
                                            json.dumps({"answer": answer}), headers)
    body = json.loads(text)
    return status, body.get("submission", body)


def concurrently(calls):
    results = [None] * len(calls)

    def run(index, call):
        results[index] = call()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_limits_throttle_and_sessions_hold_across_two_app_servers(pair, student, session,
                                                                   counter_store):
    """One pair of servers per counter store (starting them is most of the time)."""
    attempts_keys_and_rate(pair, student, session)
    login_throttle(pair, student)
    logout_through_one_server_ends_the_session_on_the_other(pair, student)


def attempts_keys_and_rate(pair, student, session):
    from server.models import Submission

    def stored():
        session.expire_all()
        return session.query(Submission).filter_by(user_id=student["user"]).all()

    # One key sent four times at once, two to each server: one submission, one attempt.
    same = concurrently([lambda p=port: post(p, student, student["answer"], "the-same-key-0001")
                         for port in pair * 2])
    assert len(stored()) == 1, same
    assert {body.get("id") for _, body in same} == {stored()[0].id}, same
    statuses = [status for status, _ in same]  # the first 201, the repeats 200
    assert statuses.count(201) == 1 and set(statuses) == {200, 201}
    # Six different keys at once across both: 2 attempts were left, the others refused.
    rush = concurrently([
        lambda p=port, k=k: post(p, student, student["answer"], f"rush-key-{k:04d}")
        for k, port in enumerate(pair * 3)])
    assert sorted(status for status, _ in rush).count(201) == 2
    assert {status for status, _ in rush} <= {201, 409}
    attempts = sorted(s.attempt for s in stored() if s.attempt is not None)
    assert attempts == [1, 2, 3]
    # The rate (12 a minute) counted all ten, on either server: two more (stored,
    # refused: no attempts left), then 429 (nothing stored).
    more = [post(pair[n % 2], student, "dz7 = doutput +") for n in range(4)]
    assert [status for status, _ in more] == [409, 409, 429, 429]
    assert len(stored()) == 1 + 6 + 2
    assert all(s.status != "pending" for s in stored())


def login_throttle(pair, student):
    answers = [Browser(pair[n % 2], ATTACKER).login(student["email"], "a wrong guess")[0]
               for n in range(7)]
    assert answers == [401] * 5 + [429] * 2
    assert Browser(pair[1], ATTACKER).login(student["email"], PASSWORD)[0] == 429
    assert Browser(pair[0]).login(student["email"], PASSWORD)[0] == 302  # from elsewhere
    assert Browser(pair[1]).login(student["email"], PASSWORD)[0] == 302


def logout_through_one_server_ends_the_session_on_the_other(pair, student):
    from .helpers import csrf_token_in

    one = Browser(pair[0])
    assert one.login(student["email"], PASSWORD)[0] == 302
    captured = dict(one.cookies)
    other = Browser(pair[1])
    other.cookies = dict(captured)
    status, _, page = other.request("GET", "/profile")
    assert status == 200
    form = f"csrf_token={csrf_token_in(page)}"
    status, headers, _ = other.request("POST", "/logout", form,
                                       {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 302
    one.cookies = captured
    status, headers, _ = one.request("GET", "/profile")
    assert status == 302 and headers["Location"].startswith("/login")
