"""A spec's work in the judge: checks, previews, statistics and a student's draws run in
judge processes, answer as the engine does in-process, and are stopped at their time
and memory limits with what they were doing."""

from __future__ import annotations

import json
import os
import time

import pytest

from server.engine import authoring
from server.engine.bank import BANK_DIR, load_bank
from server.engine.instance import draw_hidden_instances, draw_instance
from server.engine.spec import parse_spec
from server.judge import Judge, JudgeError, get_spec_judge, specs
from tests.engine.test_budget import LOOP_AT_THE_LIMITS
from tests.spec_attacks import BIG_DIMS

BANK = load_bank()
MLP = (BANK_DIR / "mlp-relu.toml").read_text()


@pytest.fixture(scope="module")
def judge():
    j = Judge(size=2, timeout_s=30.0, memory_mb=512)
    yield j
    j.close()


def test_a_check_answers_what_the_engine_answers_in_process(judge):
    answer = specs.check_text(judge, MLP, name="mlp-relu.toml", seeds=3)
    assert answer["refused"] == []
    assert answer["meta"] == {"id": "mlp-relu", "title": BANK["mlp-relu"].title,
                              "answer": "equations", "version": BANK["mlp-relu"].version}
    bad = specs.check_text(judge, MLP.replace("z4 = W2 @ z3", "z4 = W9 @ z3"), seeds=3)
    expected = authoring.check_text(MLP.replace("z4 = W2 @ z3", "z4 = W9 @ z3"), seeds=3)
    assert bad["refused"] == [r.to_json() for r in expected.refused] != []
    over = specs.check_text(judge, BIG_DIMS)
    assert [r["line"] for r in over["refused"]] == [10, 11]


def test_a_students_draw_is_the_engines_draw_and_the_text_goes_once(judge):
    spec = BANK["mlp-relu"]
    sent = []
    real_call = judge.call

    def counting(message, **kwargs):
        sent.append("text" in message["spec"])
        return real_call(message, **kwargs)

    judge.call = counting
    try:
        answers = [specs.draw(judge, spec, seed) for seed in (5, 6)]
    finally:
        judge.call = real_call
    for seed, answer in zip((5, 6), answers):
        expected = json.loads(json.dumps(draw_instance(spec, seed).to_json()))
        assert answer["document"] == expected  # the same instance, stored alike
    # the first exchange asked for the text (a "missing" round), the processes kept it
    assert sent.count(False) == 2


def test_hidden_instances_are_the_engines(judge):
    spec = BANK["mlp-relu-numpy"]
    own = draw_instance(spec, 4)
    answer = specs.hidden(judge, spec, json.dumps(own.to_json()), [11, 12])
    expected = [json.loads(json.dumps(h.to_json())) for h in
                draw_hidden_instances(spec, own, [11, 12])]
    assert answer["documents"] == expected


def test_preview_and_statistics_of_a_draft(judge):
    from server.services.bank import text_hash

    answer = specs.preview(judge, text_hash(MLP), MLP, 7)
    assert answer["refused"] == [] and answer["meta"]["id"] == "mlp-relu"
    assert "reference" in answer["document"] and answer["solution"].startswith("1. dz7")
    stats = specs.statistics(judge, text_hash(MLP), MLP, 10)
    assert stats["statistics"]["seeds"] == 10 and stats["statistics"]["dims"]
    broken = MLP.replace("z2 = z1 + b1", "z2 = z1 + b9")
    refused = specs.preview(judge, text_hash(broken), broken, 7)["refused"]
    assert refused and "b9" in refused[0]["message"] and refused[0]["line"]


def test_work_past_its_deadline_is_killed_and_names_what_it_was_doing():
    fast = Judge(size=1, timeout_s=0.3, memory_mb=512)
    try:
        start = time.monotonic()
        with pytest.raises(JudgeError) as info:
            specs.check_text(fast, LOOP_AT_THE_LIMITS)  # ~1.5 s of honest work
        assert time.monotonic() - start < 5
        assert info.value.kind == "timeout" and fast.killed == 1
        assert info.value.stage and any(words in info.value.stage for words in (
            "drawing seed", "finite-difference check", "calibrating", "parsing",
            "grading the model solution")), info.value.stage
        assert fast.call({"task": "ping"})["status"] == "ok"  # the pool carries on
    finally:
        fast.close()


def test_work_beyond_its_memory_is_stopped_and_names_what_it_was_doing():
    small = Judge(size=1, timeout_s=60.0, memory_mb=64)
    try:
        with pytest.raises(JudgeError) as info:
            specs.check_text(small, LOOP_AT_THE_LIMITS)  # ~70 MB at its peak
        assert info.value.kind == "memory" and info.value.stage
        assert specs.check_text(small, MLP, seeds=1)["refused"] == []  # replaced
    finally:
        small.close()


def test_a_message_may_allow_itself_less_memory_than_the_process(judge):
    spec = parse_spec(LOOP_AT_THE_LIMITS)
    with pytest.raises(JudgeError) as info:
        specs.draw(judge, spec, 3, memory_mb=1)  # one MB more than the process holds
    assert info.value.kind == "memory" and "1 MB" in str(info.value)
    assert specs.draw(judge, spec, 3, memory_mb=256)["document"]["problem"] == "worst-loop"


def test_staff_work_runs_at_a_lower_priority_than_the_web_workers():
    judge = get_spec_judge()
    assert judge.nice == 10 and judge.timeout_s == 10 and judge.memory_mb == 512
    specs.check_text(judge, MLP, seeds=1)
    pids = judge.status()["idle"]
    assert pids and all(os.getpriority(os.PRIO_PROCESS, pid) == 10 for pid in pids)


def test_the_zygote_gets_openblas_tuning_and_nothing_else_of_the_server(monkeypatch):
    """OpenBLAS's kernel choice passes (the same bits as a draw in the server: without
    it, this machine's OPENBLAS_CORETYPE made references differ in their last bits);
    secrets and the rest of the server's environment do not."""
    from server.judge.pool import clean_environment

    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("NABLA_SECRET_KEY", "s" * 40)
    monkeypatch.setenv("NABLA_DATABASE_URL", "postgresql://secret@db/nabla")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "8")
    env = clean_environment()
    assert env["OPENBLAS_CORETYPE"] == "Haswell" and env["OPENBLAS_NUM_THREADS"] == "1"
    assert not any(name.startswith("NABLA_") for name in env)
    assert set(env) <= {"PATH", "LANG", "LC_ALL", "OMP_NUM_THREADS", "MKL_NUM_THREADS"} | {
        name for name in os.environ if name.startswith("OPENBLAS_")}
