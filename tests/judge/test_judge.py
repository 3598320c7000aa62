"""The judge: grading in pre-forked processes with a wall-clock kill and a memory limit.

These tests start real zygotes and judge processes (tests/judge/tasks_for_tests.py
adds answers that misbehave on purpose) and kill them for real.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from server.engine.bank import load_bank
from server.engine.problem import draw, grade_answer, model_answer
from server.judge import Judge, JudgeError, document_key, grade

TEST_TASKS = "tests.judge.tasks_for_tests"
BANK = load_bank()


def _gone(pid: int, within_s: float = 5.0) -> bool:
    """True once ``pid`` no longer exists (the zygote reaps its judges)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return True
        time.sleep(0.02)
    return False


def _pid(judge: Judge) -> int:
    return judge.call({"task": "grade", "answer": "#test:pid"})["pid"]


def _settled(judge: Judge) -> set[int]:
    """The pids of the pool once every process is idle (replacements are forked in
    the background)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        idle = judge.status()["idle"]
        if len(idle) == judge.size:
            return set(idle)
        time.sleep(0.01)
    raise AssertionError(f"the pool did not fill up: {judge.status()}")


def _job(problem_id: str, seed: int = 3):
    spec = BANK[problem_id]
    inst = draw(spec, seed)
    return spec, inst, json.dumps(inst.to_json())


@pytest.fixture(scope="module")
def judge():
    j = Judge(size=2, timeout_s=1.0, memory_mb=256, tasks=TEST_TASKS)
    j.start()
    yield j
    j.close()


@pytest.mark.parametrize("problem_id", ["mlp-relu", "scan-mlp", "rule-4a-generalized-chain"])
def test_grades_exactly_as_the_engine_does_in_process(judge, problem_id):
    spec, inst, document = _job(problem_id)
    model = model_answer(spec, inst)
    first_line = model.splitlines()[0]
    for answer in (model, f"-({model})" if spec.answer_kind == "expression" else first_line):
        expected = grade_answer(spec, inst, answer, hidden_seeds=(11, 12)).to_json()
        assert grade(judge, spec, document, answer, (11, 12)) == expected


def test_spec_and_instance_texts_are_sent_once_per_process():
    spec, inst, document = _job("mlp-relu")
    with_keys_only = {"task": "grade", "spec": {"key": spec.version},
                      "document": {"key": document_key(document)}, "answer": "dx = x",
                      "hidden_seeds": []}
    j = Judge(size=1, timeout_s=5.0)
    try:
        assert j.call(with_keys_only) == {"status": "missing", "missing": ["spec", "document"]}
        grade(j, spec, document, "dx = x")  # sends the texts it asks for
        answer = j.call(with_keys_only)
        assert answer["status"] == "ok" and answer["result"]["valid"]
    finally:
        j.close()


@pytest.mark.parametrize("action", ["regex", "tower", "sleep"])
def test_a_stuck_judge_is_killed_at_the_deadline_and_replaced(judge, action):
    # "regex" and "tower" loop inside C code (re, mpmath/gmpy) without ever
    # returning to the interpreter: only killing the process stops them
    spec, inst, document = _job("mlp-relu")
    killed_before = judge.killed
    before = _settled(judge)
    with pytest.raises(JudgeError) as info:
        grade(judge, spec, document, f"#test:{action}")
    assert info.value.kind == "timeout" and "within 1 s" in str(info.value)
    assert judge.killed == killed_before + 1
    after = _settled(judge)  # a fresh process replaces the killed one
    (stuck,) = before - after
    assert _gone(stuck)
    assert grade(judge, spec, document, model_answer(spec, inst))["score"] == 1.0


def test_other_requests_keep_going_while_a_judge_is_stuck(judge):
    spec, inst, document = _job("mlp-relu")
    model = model_answer(spec, inst)
    outcome: list[str] = []

    def stuck() -> None:
        try:
            grade(judge, spec, document, "#test:tower")
        except JudgeError as exc:
            outcome.append(exc.kind)

    thread = threading.Thread(target=stuck)
    thread.start()
    scores = []
    while thread.is_alive():  # one process is stuck: the other one grades meanwhile
        scores.append(grade(judge, spec, document, model)["score"])
    thread.join()
    assert outcome == ["timeout"]
    assert len(scores) >= 5 and set(scores) == {1.0}


@pytest.fixture(scope="module")
def patient_judge():
    """The judge's limits but a deadline far above what the jobs need. Filling 192 MB
    before the 256 MB limit is hit took 1.06-1.78 s of wall time at load average 10
    (1 s deadline: a ``timeout`` instead of ``memory``, the flakiness this removes)."""
    j = Judge(size=2, timeout_s=30.0, memory_mb=256, tasks=TEST_TASKS)
    j.start()
    yield j
    j.close()


@pytest.mark.parametrize(("action", "kind", "words"), [
    ("allocate", "memory", "exceeded 256 MB"),  # MemoryError under RLIMIT_AS
    ("crash", "crashed", "died"),
    ("raise", "error", "RuntimeError: engine bug"),
])
def test_memory_a_crash_or_an_exception_is_an_error_and_the_pool_carries_on(
        patient_judge, action, kind, words):
    judge = patient_judge
    spec, inst, document = _job("mlp-relu")
    with pytest.raises(JudgeError) as info:
        grade(judge, spec, document, f"#test:{action}")
    assert info.value.kind == kind and words in str(info.value)
    assert grade(judge, spec, document, model_answer(spec, inst))["score"] == 1.0


def test_a_process_left_with_a_running_thread_is_replaced(judge):
    spec, _, document = _job("mlp-relu")
    before = _settled(judge)
    grade(judge, spec, document, "#test:thread")
    assert len(before - _settled(judge)) == 1


def test_no_free_process_within_the_limit_is_busy():
    j = Judge(size=1, timeout_s=1.0, tasks=TEST_TASKS)
    spec, _, document = _job("mlp-relu")
    try:
        j.start()
        thread = threading.Thread(target=lambda: pytest.raises(
            JudgeError, grade, j, spec, document, "#test:sleep"))
        thread.start()
        while j.status()["idle"]:
            time.sleep(0.01)
        with pytest.raises(JudgeError) as info:
            j.call({"task": "ping"}, timeout_s=0.2)
        assert info.value.kind == "busy"
        thread.join()
        assert j.call({"task": "ping"}) == {"status": "ok"}
    finally:
        j.close()


def test_a_dead_zygote_is_started_again():
    j = Judge(size=2, timeout_s=2.0, tasks=TEST_TASKS)
    try:
        j.start()
        pids = _settled(j)
        os.kill(j.status()["zygote_pid"], signal.SIGKILL)
        assert all(_gone(pid) for pid in pids)  # its judges die with it
        assert j.call({"task": "ping"}) == {"status": "ok"}
        assert j.status()["zygote_starts"] == 2
    finally:
        j.close()


def test_the_judge_gets_none_of_the_servers_environment(monkeypatch):
    monkeypatch.setenv("NABLA_SECRET_KEY", "s" * 40)
    monkeypatch.setenv("NABLA_DATABASE_URL", "postgresql://user:password@db/nabla")
    j = Judge(size=1, timeout_s=2.0, tasks=TEST_TASKS)
    try:
        pid = _pid(j)
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert not [v for v in environ if v.startswith(b"NABLA")]
        assert b"OPENBLAS_NUM_THREADS=1" in environ
    finally:
        j.close()


def test_judge_processes_end_with_the_server_process(tmp_path):
    # a server killed with SIGKILL runs no cleanup: the zygote sees its control
    # socket close, and its judges die with it (PR_SET_PDEATHSIG)
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parents[2])!r})
        from server.judge import Judge
        j = Judge(size=2, timeout_s=2.0, tasks={TEST_TASKS!r})
        pids = [j.call({{"task": "grade", "answer": "#test:pid"}})["pid"] for _ in range(2)]
        print(j.status()["zygote_pid"], *pids, flush=True)
        time.sleep(60)
    """)
    server = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        pids = [int(p) for p in server.stdout.readline().split()]
        assert len(pids) == 3 and all(Path(f"/proc/{pid}").exists() for pid in pids)
    finally:
        server.kill()
        server.wait()
        server.stdout.close()
    assert all(_gone(pid) for pid in pids)


def test_bad_settings_are_refused():
    for kwargs in ({"size": 0}, {"timeout_s": 0}, {"memory_mb": 10}):
        with pytest.raises(ValueError):
            Judge(**kwargs)


def test_the_judge_knows_nothing_of_the_web_or_the_database():
    from tests.engine.test_purity import FORBIDDEN_ROOTS, imports_of

    allowed = ("server.engine", "server.judge", "server.config")
    bad = []
    for path in sorted((Path(__file__).parents[2] / "server" / "judge").glob("*.py")):
        for line, name in imports_of(path):
            root = name.split(".")[0]
            if root in FORBIDDEN_ROOTS or root == "server" and not name.startswith(allowed):
                bad.append(f"{path.name}:{line} imports {name}")
    assert bad == []


@pytest.mark.parametrize(("problem_id", "answer"), [
    ("mlp-relu", "dz7 = doutput\ndW3 = dz7 @ z6"),
    ("mlp-relu", "dx = dz1 @ W1"),
    ("rule-4a-generalized-chain", "dL/dx = 3*x"),
])
def test_check_in_the_judge_is_the_engines_check(judge, problem_id, answer):
    from server.engine.problem import check_answer

    spec, inst, document = _job(problem_id)
    expected = check_answer(spec, inst, answer).to_json()
    assert expected["errors"] and not expected["equations"] and not expected["gradients"]
    assert grade(judge, spec, document, answer, task="check") == expected
