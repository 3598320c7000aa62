"""Faults against a real `nabla serve` (issue 14 §3): a gunicorn worker killed with
SIGKILL in the middle of grading, and the sandbox worker killed the same way.
The submission ends graded or visibly failed, never lost and never counted as
two attempts; the next submission works."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from server.engine.problem import draw, model_answer
from server.services import tokens

from .live import Browser, LiveServer

pytestmark = pytest.mark.usefixtures("db_backend")

SLOW = ("    import time as _time\n"
        "    _start = _time.perf_counter()\n"
        "    while _time.perf_counter() - _start < 1.0:\n"
        "        pass\n")


@pytest.fixture
def fake_bank(engine_bank):
    return engine_bank


@pytest.fixture
def server(database_url, tmp_path):
    env = {"NABLA_DATABASE_URL": database_url, "NABLA_INSTANCE_PATH": str(tmp_path),
           "NABLA_SECRET_KEY": "faults-secret-" + "x" * 32, "NABLA_REDIS_URL": "",
           "NABLA_RECOVER_AFTER_S": "3", "NABLA_RECOVER_EVERY_S": "1",
           "NABLA_JOB_STALE_S": "10"}
    live = LiveServer(env, workers=1, threads=2)
    try:
        assert live.wait_until_up() == 200, live.output()
        yield live
    finally:
        live.stop()


@pytest.fixture
def student(session, make_user, make_course, make_assignment, engine_bank):
    user = make_user(session, "student1@example.edu", "Student One")
    course = make_course(session, "CS101", members={user: "student"})
    hw = make_assignment(session, course, max_attempts=3, problems=("mlp-relu-numpy",))
    token = tokens.create_token(session, user, "faults")[1]
    session.commit()
    spec = engine_bank["mlp-relu-numpy"]
    right = model_answer(spec, draw(spec, 0))
    slow = right.replace("    N = x.shape[0]\n", SLOW + "    N = x.shape[0]\n", 1)
    assert slow != right
    return {"token": token, "user": user.id, "right": right, "slow": slow,
            "path": f"/api/v1/assignments/{hw.id}/problems/mlp-relu-numpy/submissions"}


def post(server, student, answer):
    headers = {"Content-Type": "application/json",
               "Authorization": f"Bearer {student['token']}"}
    try:
        status, _, text = Browser(server.port).request(
            "POST", student["path"], json.dumps({"answer": answer}), headers)
    except OSError as exc:  # the worker died with the connection
        return 0, {"error": str(exc)}
    return status, json.loads(text)


def in_background(call):
    box = []
    thread = threading.Thread(target=lambda: box.append(call()))
    thread.start()
    return thread, box


def rows(session, student):
    from server.models import Submission

    session.expire_all()
    found = [SimpleNamespace(id=r.id, status=r.status, attempt=r.attempt)
             for r in session.query(Submission).filter_by(user_id=student["user"])]
    session.rollback()  # hold no lock (SQLite) while the server works
    return found


def wait_for(predicate, timeout=60.0, what="the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_a_worker_killed_mid_grade_leaves_a_submission_graded_once(server, student,
                                                                   session):
    thread, box = in_background(lambda: post(server, student, student["slow"]))
    wait_for(lambda: [r for r in rows(session, student) if r.status == "pending"],
             what="the answer to be stored")
    workers = children(server.process.pid)
    assert workers
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    thread.join(60)
    assert box and box[0][0] in (0, 500, 502), box  # the client got no verdict
    # The new worker's recovery finishes it (pending for more than 3 s).
    (row,) = wait_for(lambda: [r for r in rows(session, student)
                               if r.status != "pending"] or None,
                      what="the pending submission to be recovered")
    assert row.status in ("graded", "error")
    assert row.attempt == (1 if row.status == "graded" else None)
    assert len(rows(session, student)) == 1
    # A recovery job of the new worker's recorded it (it and nothing else).
    from server.models import Job
    from server.services.recovery import recovered_of

    recorded = [item for job in session.query(Job).filter_by(kind="recover")
                for item in recovered_of(job) if item.status != "skipped"]
    session.rollback()
    assert [(item.submission_id, item.status) for item in recorded] == [(row.id, row.status)]
    status, body = post(server, student, student["right"])
    assert status == 201 and body["score"] == 1.0, body
    numbers = sorted(r.attempt for r in rows(session, student) if r.attempt is not None)
    assert numbers == sorted(set(numbers)) and len(numbers) == 1 + (row.status == "graded")


def sandbox_workers(server) -> list[int]:
    return [pid for worker in children(server.process.pid) for pid in children(worker)
            if "server.sandbox.pool" in cmdline(pid)]


@pytest.mark.backends("sqlite")  # about the sandbox, not the database: one backend is enough
def test_a_sandbox_worker_killed_mid_job_costs_no_attempt(server, student, session):
    assert post(server, student, student["right"])[0] == 201  # the sandbox worker runs
    (sandbox,) = wait_for(lambda: sandbox_workers(server), what="the sandbox worker")
    thread, box = in_background(lambda: post(server, student, student["slow"]))
    wait_for(lambda: len(rows(session, student)) == 2, what="the answer to be stored")
    time.sleep(0.3)  # the job is in the sandbox
    os.kill(sandbox, signal.SIGKILL)
    thread.join(60)
    status, body = box[0]
    assert status == 503, body
    assert "costs no attempt" in body["error"] or "not counted" in body["error"], body
    killed = max(rows(session, student), key=lambda r: r.id)
    assert (killed.status, killed.attempt) == ("error", None)
    status, body = post(server, student, student["right"])  # a new sandbox worker
    assert status == 201 and body["score"] == 1.0, body
    assert sorted(r.attempt for r in rows(session, student) if r.attempt) == [1, 2]
    assert sandbox_workers(server) and sandbox_workers(server) != [sandbox]
