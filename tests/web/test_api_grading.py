"""The JSON API's instance and submission endpoints, on the real problem bank."""

from __future__ import annotations

import collections

import pytest
from sqlalchemy import event

from server.db import get_engine
from server.services import tokens

from .flow import model_answer, stored

pytestmark = pytest.mark.usefixtures("db_backend")


@pytest.fixture
def fake_bank(engine_bank):
    """The app and make_assignment use the real problem bank in this module."""
    return engine_bank


@pytest.fixture
def api(app_session, make_user, make_course, make_assignment):
    student = make_user(app_session, "student1@example.edu", "Student One")
    other = make_user(app_session, "student2@example.edu", "Student Two")
    outsider = make_user(app_session, "outsider@example.edu", "Otto Outsider")
    course = make_course(app_session, "CS101", members={student: "student", other: "student"})
    make_course(app_session, "OTHER", members={outsider: "student"})
    hw = make_assignment(app_session, course, "Homework 1", max_attempts=2,
                         problems=("mlp-relu", "mlp-relu-numpy"))
    closed = make_assignment(app_session, course, "Closed", open_offset_h=-48, due_offset_h=-1,
                             problems=("mlp-relu",))
    tokens_by_email = {user.email: tokens.create_token(app_session, user, "tests")[1]
                       for user in (student, other, outsider)}
    app_session.commit()
    return {"hw": hw.id, "closed": closed.id, "tokens": tokens_by_email}


def _auth(api, email="student1@example.edu", **headers):
    return {"Authorization": f"Bearer {api['tokens'][email]}", **headers}


def _url(assignment_id, problem_id="mlp-relu", tail=""):
    return f"/api/v1/assignments/{assignment_id}/problems/{problem_id}{tail}"


def _post(client, api, answer, assignment_id=None, problem_id="mlp-relu", **kwargs):
    headers = _auth(api, **kwargs.pop("headers", {}))
    return client.post(_url(assignment_id or api["hw"], problem_id, "/submissions"),
                       json={"answer": answer}, headers=headers, **kwargs)


def test_my_instance_has_everything_but_the_reference(client, api):
    response = client.get(_url(api["hw"]), headers=_auth(api))
    assert response.status_code == 200
    body = response.json
    assert {"dims", "choices", "forward", "given", "ask", "values", "layout", "statement",
            "shapes", "attempts_left"} <= set(body)
    assert body["given"] == "doutput" and body["ask"][0] == "dx" and body["layout"] == "numerator"
    assert body["attempts_left"] == 2 and "z1 = W1 @ x" in body["forward"]
    assert set(body["values"]) == {"x", "W1", "b1", "W2", "b2", "W3", "b3", "z1", "z2", "z3",
                                   "z4", "z5", "z6", "z7", "output", "doutput"}
    text = response.get_data(as_text=True)
    assert "reference" not in text and "accumulation" not in text
    # Same instance on every visit, and another student's is another draw.
    assert client.get(_url(api["hw"]), headers=_auth(api)).json["values"] == body["values"]
    theirs = client.get(_url(api["hw"]), headers=_auth(api, "student2@example.edu")).json
    assert theirs["values"] != body["values"]


def test_submit_and_read_back(client, app_session, engine_bank, api):
    client.get(_url(api["hw"]), headers=_auth(api))  # draws the instance
    answer = model_answer(app_session, engine_bank, "student1@example.edu", "mlp-relu")
    response = _post(client, api, answer)
    assert response.status_code == 201
    body = response.json
    assert (body["status"], body["attempt"], body["late"], body["score"]) == (
        "graded", 1, False, 1.0)
    assert body["valid"] is True and body["errors"] == [] and body["attempts_left"] == 1
    assert len(body["equations"]) == 14 and body["gradients"]["dW1"]["verdict"] == "correct"
    assert response.headers["Location"] == f"/api/v1/submissions/{body['id']}"
    again = client.get(response.headers["Location"], headers=_auth(api))
    assert again.status_code == 200 and again.json == body
    _post(client, api, "dz7 = = 1")
    listed = client.get(_url(api["hw"], tail="/submissions"), headers=_auth(api)).json
    assert [(s["status"], s["attempt"]) for s in listed["submissions"]] == [
        ("invalid", None), ("graded", 1)]
    theirs = client.get(_url(api["hw"], tail="/submissions"),
                        headers=_auth(api, "student2@example.edu")).json
    assert theirs == {"submissions": []}


def test_attempts_left_of_a_past_submission_is_as_of_that_submission(client, api):
    """As the submission's page says it, whatever came later (max_attempts=2 here)."""
    key = {"headers": {"Idempotency-Key": "first-try-1"}}
    first = _post(client, api, "dz7 = doutput", **key)
    assert (first.status_code, first.json["attempt"], first.json["attempts_left"]) == (201, 1, 1)
    assert _post(client, api, "dz7 = = 1").json["submission"]["attempts_left"] == 1
    last = _post(client, api, "dz7 = doutput\ndb3 = doutput")
    assert (last.json["attempt"], last.json["attempts_left"]) == (2, 0)
    one = client.get(f"/api/v1/submissions/{first.json['id']}", headers=_auth(api)).json
    assert one["attempts_left"] == 1  # not 0, the count now
    listed = client.get(_url(api["hw"], tail="/submissions"), headers=_auth(api)).json
    assert [(s["status"], s["attempt"], s["attempts_left"]) for s in listed["submissions"]] == [
        ("graded", 2, 0), ("invalid", None, 1), ("graded", 1, 1)]
    again = _post(client, api, "dz7 = doutput", **key)  # a retry: the first one, as of then
    assert (again.status_code, again.json["id"], again.json["attempts_left"]) == (
        200, first.json["id"], 1)
    assert client.get(_url(api["hw"]), headers=_auth(api)).json["attempts_left"] == 0  # now


def test_numpy_submission(client, app_session, engine_bank, api):
    client.get(_url(api["hw"], "mlp-relu-numpy"), headers=_auth(api))
    answer = model_answer(app_session, engine_bank, "student1@example.edu", "mlp-relu-numpy")
    response = _post(client, api, answer, problem_id="mlp-relu-numpy")
    assert response.status_code == 201 and response.json["score"] == 1.0


def test_invalid_answer_is_422_stored_and_free(client, app_session, api):
    response = _post(client, api, "dz7 = = doutput")
    assert response.status_code == 422
    assert response.json["error"].startswith("not a valid answer: it costs no attempt: line 1:")
    submission = response.json["submission"]
    assert (submission["status"], submission["attempt"], submission["attempts_left"]) == (
        "invalid", None, 2)
    assert stored(app_session) == [("invalid", None, "dz7 = = doutput")]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"data": "answer=dz7", "content_type": "application/x-www-form-urlencoded"}, "body:"),
        ({"data": "{not json", "content_type": "application/json"}, "body:"),
        ({"json": ["dz7 = doutput"]}, "body:"),
        ({"json": {}}, "answer: is required"),
        ({"json": {"answer": 42}}, "answer: must be a string, got int"),
        ({"json": {"answer": "dz7 = doutput", "seed": 1}}, "body: unknown field(s) seed"),
        ({"json": {"answer": "  "}}, "answer: is empty"),
        ({"json": {"answer": "dz7 = doutput\u0000"}}, "answer: contains a NUL character"),
        ({"data": '{"answer": "dz7 = doutput \\ud800"}', "content_type": "application/json"},
         "answer: contains a character that is not valid Unicode"),
    ],
)
def test_bad_bodies_are_400_naming_the_field(client, app_session, api, kwargs, message):
    response = client.post(_url(api["hw"], tail="/submissions"), headers=_auth(api), **kwargs)
    assert response.status_code == 400 and response.is_json
    assert message in response.json["error"]
    assert stored(app_session) == []


def test_too_large_is_413(client, app, app_session, api):
    response = _post(client, api, "x" * 20_001)
    assert response.status_code == 413 and "the limit is 20000" in response.json["error"]
    body = b'{"answer": "' + b"x" * app.config["MAX_CONTENT_LENGTH"] + b'"}'
    response = client.post(_url(api["hw"], tail="/submissions"), data=body,
                           content_type="application/json", headers=_auth(api))
    assert response.status_code == 413 and response.is_json and "error" in response.json
    assert stored(app_session) == []


def test_no_attempts_left_and_closed_are_409_and_stored(client, app_session, api):
    assert _post(client, api, "dz7 = doutput").status_code == 201
    assert _post(client, api, "db3 = doutput").status_code == 201
    refused = _post(client, api, "dz7 = doutput\ndb3 = doutput")
    assert refused.status_code == 409
    assert refused.json["error"].startswith("no attempts left")
    assert refused.json["submission"]["status"] == "refused"
    closed = _post(client, api, "dz7 = doutput", assignment_id=api["closed"])
    assert closed.status_code == 409 and closed.json["error"].startswith("closed:")
    assert [s for s, _, _ in stored(app_session)] == ["graded", "graded", "refused", "refused"]


def test_idempotency_key_makes_a_retry_safe(client, app_session, api):
    headers = {"Idempotency-Key": "retry-me-0001"}
    first = _post(client, api, "dz7 = doutput", headers=headers)
    second = _post(client, api, "dz7 = doutput", headers=headers)
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json["id"] == first.json["id"]
    assert len(stored(app_session)) == 1
    bad = _post(client, api, "dz7 = doutput", headers={"Idempotency-Key": "x"})
    assert bad.status_code == 400 and "submission_key" in bad.json["error"]


def test_tokens_and_ownership(client, app_session, api):
    submitted = _post(client, api, "dz7 = doutput").json
    mine = f"/api/v1/submissions/{submitted['id']}"
    for url, method in [(_url(api["hw"]), "get"), (_url(api["hw"], tail="/submissions"), "post"),
                        (mine, "get")]:
        response = getattr(client, method)(url, json={"answer": "dz7 = doutput"})
        assert response.status_code == 401 and "token" in response.json["error"]
    denied = client.get(mine, headers=_auth(api, "student2@example.edu"))
    assert denied.status_code == 403 and "not yours" in denied.json["error"]
    assert client.get("/api/v1/submissions/999999", headers=_auth(api)).status_code == 404
    # Another course's problem is unknown to me, for reading and for submitting.
    outsider = _auth(api, "outsider@example.edu")
    assert client.get(_url(api["hw"]), headers=outsider).status_code == 404
    response = client.post(_url(api["hw"], tail="/submissions"), headers=outsider,
                           json={"answer": "dz7 = doutput"})
    assert response.status_code == 404 and response.is_json
    assert client.get(_url(api["hw"], "nope"), headers=_auth(api)).status_code == 404
    assert len(stored(app_session)) == 1


def test_a_sandbox_failure_is_503_recorded_and_costs_no_attempt(client, app_session, api,
                                                                  monkeypatch):
    import server.sandbox
    from server.sandbox import JobResult

    monkeypatch.setattr(server.sandbox, "run_job",
                        lambda *a, **k: JobResult(status="error", message="worker gone"))
    response = _post(client, api, "def backward(**kw):\n    return {}\n",
                     problem_id="mlp-relu-numpy")
    assert response.status_code == 503 and "costs no attempt" in response.json["error"]
    assert response.json["submission"]["attempts_left"] == 2
    # Recorded despite the 5xx (the request teardown rolls back on server errors).
    assert stored(app_session) == [("error", None, "def backward(**kw):\n    return {}\n")]


def test_a_problem_that_cannot_be_drawn_is_503_naming_it(client, app_session, api, monkeypatch,
                                                         caplog):
    from server.judge import Judge

    # draws happen in the judge: one whose processes can draw nothing
    judge = Judge(size=1, timeout_s=30, tasks="tests.judge.tasks_broken_draws")
    monkeypatch.setattr("server.judge.get_judge", lambda: judge)
    monkeypatch.setattr("server.judge.get_spec_judge", lambda: judge)
    response = client.get(_url(api["hw"]), headers=_auth(api))
    assert response.status_code == 503 and "'mlp-relu' cannot be drawn" in response.json["error"]
    response = _post(client, api, "dz7 = doutput")
    assert response.status_code == 503 and stored(app_session) == []
    assert "no acceptable draw" in caplog.text  # the details go to the log, for staff
    judge.close()


@pytest.mark.parametrize(("path", "methods"), [
    ("/api/v1/submissions/{big}", {"GET"}),
    ("/api/v1/assignments/{big}/problems/mlp-relu", {"GET"}),
    ("/api/v1/assignments/{big}/problems/mlp-relu/submissions", {"GET", "POST"})])
def test_ids_beyond_the_database_range_are_404_for_every_method_the_path_has(
        client, api, path, methods):
    # A 405 only for a method the path has no rule for. (Werkzeug once answered 405 to a
    # GET of .../submissions with a huge id, as POST has a rule of the same path: the
    # fuzzer found it, an undocumented status; server/web/app.py, RowIdConverter.)
    url = path.format(big=10**20)
    for method in ("GET", "POST"):
        response = client.open(url, method=method, headers=_auth(api),
                               json={"answer": "dz7 = doutput"})
        assert response.status_code == (404 if method in methods else 405), method
        assert response.is_json
        if method in methods:
            assert response.json["error"] == f"id: {10**20} is beyond every id (at most 2147483647)"


def test_no_rule_has_a_string_where_another_has_an_int(app):
    """What RowIdConverter's 404 relies on: a number too large for ``<int:...>`` could
    match no other rule as a string."""
    def shape(rule):
        return [("int" if part.startswith("<int:") else "var") if part.startswith("<") else part
                for part in rule.strip("/").split("/")]

    rules = [shape(rule.rule) for rule in app.url_map.iter_rules()]
    for a in rules:
        for b in rules:
            if len(a) == len(b) and a != b:
                clash = [x == "int" and (y == "var" or y.isdigit()) for x, y in zip(a, b)]
                same = [x == y or clash_ for x, y, clash_ in zip(a, b, clash)]
                assert not (all(same) and any(clash)), (a, b)


# --- SQL statements per submission: a count, not a time ---------------------------------

# A graded submission, its instance drawn: the token with its user, the rate counter's
# one statement, the problem with its assignment, the instance, the extension and the
# attempts, the INSERT (no savepoint), the verdict's conditional UPDATE and the verdict
# rows' INSERT. bench/bench_submit_path.py prints the same counts (13 before this guard).
MAX_STATEMENTS = 6


def _statements(app, send):
    seen: collections.Counter[str] = collections.Counter()

    def on_execute(conn, cursor, statement, parameters, context, executemany):
        if " ".join(statement.split()).upper().startswith("DELETE FROM RATE_COUNTERS"):
            return  # the counters' sweep of expired windows: once a minute, not per request
        seen[statement.lstrip().split(None, 1)[0].upper()] += 1

    engine = get_engine(app)
    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        response = send()
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
    return response, seen


@pytest.mark.parametrize("problem_id", ["mlp-relu", "mlp-relu-numpy"])
def test_a_graded_submission_over_the_api_sends_at_most_six_sql_statements(
        app, client, app_session, engine_bank, api, problem_id):
    client.get(_url(api["hw"], problem_id), headers=_auth(api))  # draws the instance
    answer = model_answer(app_session, engine_bank, "student1@example.edu", problem_id)
    for attempt in (1, 2):  # the first submission, and one after it
        response, seen = _statements(app, lambda: _post(client, api, answer,
                                                        problem_id=problem_id))
        assert response.status_code == 201, response.json
        assert response.json["score"] == 1.0 and response.json["attempt"] == attempt
        assert response.json["attempts_left"] == 2 - attempt
        assert sum(seen.values()) <= MAX_STATEMENTS, dict(seen)
        assert not {"SAVEPOINT", "DELETE"} & set(seen), dict(seen)
