"""Issue 8 §2 through a real server: answers that cannot be evaluated in reasonable
time or memory do not stop `nabla serve` (2 workers x 2 threads), and each ends
with a clear verdict.

Before the judge, `exp(exp(exp(exp(exp(x)))))` never finished (sympy's evalf on a
number of 10**126 digits): four of them held every thread of the server, `GET
/login` stopped answering, and they stayed `pending` with their attempts used.
"""

from __future__ import annotations

import http.client
import json
import threading
import time

import pytest

from server.models import Submission
from server.services import tokens

from .flow import model_answer
from .live import LiveServer

pytestmark = pytest.mark.usefixtures("db_backend")

PROBLEM = "rule-4a-generalized-chain"
ANSWERS = [
    "exp(exp(exp(exp(exp(x)))))",  # issue 8, twice
    "exp(exp(exp(exp(exp(x)))))",
    "exp(exp(exp(exp(exp(exp(exp(exp(x))))))))",
    "x**x**x**x",
    "x**x**x**x**x**x**x**x",
    "exp(10**12*x)**100",
    "x**100*exp(100*exp(x))",
    "(((999999999999/999999999998)**100)**100)**100",  # exact: 10**8 digits
    "x**100**100",
]
CLEAR = {  # status -> what the body must say
    201: ("too large to evaluate", "undefined at", "differs from the derivative"),
    422: ("too many digits", "exponent must be at most", "unreasonably large"),
    503: ("took too long to grade",),
}


@pytest.fixture
def fake_bank(engine_bank):
    return engine_bank


def _request(port: int, method: str, path: str, *, token: str | None = None,
             body: dict | None = None, timeout: float = 30.0) -> tuple[int, dict | str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        connection.request(method, path, body=None if body is None else json.dumps(body),
                           headers=headers)
        response = connection.getresponse()
        data = response.read().decode()
        is_json = response.getheader("Content-Type", "").startswith("application/json")
        return response.status, json.loads(data) if is_json else data
    finally:
        connection.close()


@pytest.fixture
def server(database_url, tmp_path, session, make_user, make_course, make_assignment):
    """`nabla serve` with 2 workers x 2 threads, and one student (with a token) per answer."""
    students = [make_user(session, f"student{i}@example.edu", f"Student {i}")
                for i in range(len(ANSWERS) + 1)]
    course = make_course(session, members={s: "student" for s in students})
    hw = make_assignment(session, course, problems=(PROBLEM,), max_attempts=3)
    api_tokens = [tokens.create_token(session, s, "tests")[1] for s in students]
    session.commit()
    live = LiveServer({"NABLA_DATABASE_URL": database_url,
                         "NABLA_INSTANCE_PATH": str(tmp_path), "NABLA_JUDGE_TIMEOUT_S": "2",
                         "NABLA_SUBMIT_RATE": "1000/minute"}, workers=2, threads=2)
    port = live.port
    try:
        assert live.wait_until_up(60) == 200
        path = f"/api/v1/assignments/{hw.id}/problems/{PROBLEM}/submissions"
        # Warm up: each worker's judge has started (its zygote imports sympy, a second
        # or two on first start) and the students' instances are drawn. Invalid
        # answers cost no attempt.
        for _ in range(10):  # until a burst of them is answered promptly
            start = time.monotonic()
            warm = [threading.Thread(target=_request, args=(port, "POST", path),
                                     kwargs={"token": token, "body": {"answer": "x +"}})
                    for token in api_tokens]
            for thread in warm:
                thread.start()
            for thread in warm:
                thread.join()
            if time.monotonic() - start < 0.5:
                break
        yield {"port": port, "tokens": api_tokens, "path": path}
    finally:
        live.stop()


def test_answers_that_cannot_be_evaluated_do_not_stop_the_server(server, session, engine_bank):
    port, path = server["port"], server["path"]
    responses: dict[int, tuple[int, dict | str]] = {}

    def submit(index: int) -> None:
        try:
            responses[index] = _request(port, "POST", path, token=server["tokens"][index],
                                        body={"answer": ANSWERS[index]}, timeout=20)
        except OSError as exc:
            responses[index] = (0, f"no answer: {exc!r}")

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(len(ANSWERS))]
    for thread in threads:
        thread.start()
    login_latencies = []
    while any(thread.is_alive() for thread in threads) or len(login_latencies) < 3:
        start = time.monotonic()
        try:
            status, _ = _request(port, "GET", "/login", timeout=1.0)
        except OSError:
            status = 0
        login_latencies.append(time.monotonic() - start)
        assert status == 200, f"GET /login failed after {login_latencies[-1]:.2f} s"
        time.sleep(0.05)
    for thread in threads:
        thread.join()
    assert max(login_latencies) < 1.0

    for index, answer in enumerate(ANSWERS):
        status, body = responses[index]
        assert status in CLEAR, (answer, status, body)
        text = json.dumps(body)
        assert any(words in text for words in CLEAR[status]), (answer, status, text)
        submission = body.get("submission", body)
        assert submission["status"] in ("graded", "invalid", "error"), (answer, submission)
        if submission["status"] == "graded":
            assert submission["score"] == 0 and submission["attempts_left"] == 2
        else:  # an invalid answer or one that took too long costs no attempt
            assert submission["attempts_left"] == 3
    session.expire_all()
    statuses = [row.status for row in session.query(Submission)]
    assert "pending" not in statuses
    assert len([s for s in statuses if s != "invalid"]) <= len(ANSWERS)
    session.rollback()

    # the server is still whole: a correct answer is graded at once
    last = len(ANSWERS)
    status, _ = _request(port, "GET", path.rsplit("/", 1)[0], token=server["tokens"][last])
    assert status == 200  # draws the instance
    answer = model_answer(session, engine_bank, f"student{last}@example.edu", PROBLEM)
    status, body = _request(port, "POST", path, token=server["tokens"][last],
                            body={"answer": answer}, timeout=10)
    assert (status, body["status"], body["score"]) == (201, "graded", 1.0)
