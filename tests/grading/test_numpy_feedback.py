"""What a numpy grade says, and what it must not (issue 8 §1 and §4, issue 9 §4).

Each instance runs in its own child; a hidden check's feedback names the
check, a builtin exception type and a line of the student's file, nothing
else from the run; a runtime error is shown once; the outcome class is the
server's decision.
"""

from __future__ import annotations

import functools
import json
import re
import warnings

import numpy as np
import numpy_attacks as attacks
import pytest

from server import sandbox
from server.engine.bank import load_bank
from server.engine.instance import draw_hidden_instances, draw_instance
from server.engine.kinds.numpy import grade_numpy as engine_grade_numpy
from server.engine.problem import model_answer

# The engine's numpy grader, with the sandbox passed in (as services and the CLI do).
grade_numpy = functools.partial(engine_grade_numpy, run_job=sandbox.run_job,
                                check_source=sandbox.check_source)

SPEC = load_bank()["mlp-relu-numpy"]
SEEDS = (101, 202)
ASKED = ["dx", "dW1", "db1", "dW2", "db2", "dW3", "db3"]


@pytest.fixture(scope="module")
def inst():
    return draw_instance(SPEC, 11)


@pytest.fixture(scope="module")
def hidden(inst):
    return draw_hidden_instances(SPEC, inst, SEEDS)


def with_hidden_branch(inst, body: str, *, prelude: str = "") -> str:
    return attacks.with_hidden_branch(model_answer(SPEC, inst), inst.values, body,
                                      prelude=prelude)


def shown(result) -> str:
    """Everything a reader of the stored result sees, except the score."""
    return json.dumps({k: v for k, v in result.to_json().items() if k != "score"})


def messages(result) -> list[str]:
    return ([e["message"] for e in result.errors]
            + [g.message for g in result.gradients.values()])


def assert_no_values(result, hidden) -> None:
    text = shown(result)
    assert not re.search(r"\d\.\d", text), text  # no number with decimals at all
    for h in hidden:
        assert repr(h.values["W1"].tolist()) not in text


def grade(inst, source, **kw):
    return grade_numpy(SPEC, inst, source, hidden_seeds=SEEDS, **kw)


# ------------------------------------------------------------------ one child per instance

def test_each_instance_runs_in_its_own_job_with_its_own_inputs_only(inst, hidden):
    seen = []

    def recording(source, calls, **kwargs):
        from server.sandbox import run_job

        seen.append([call["W1"].shape for call in calls])
        return run_job(source, calls, **kwargs)

    result = grade(inst, model_answer(SPEC, inst), run_job=recording)
    assert result.score == 1.0
    assert sorted(seen) == sorted([[i.values["W1"].shape] for i in [inst, *hidden]])


def test_frame_walking_and_gc_find_no_other_instance(inst, hidden):
    """The runner's frames and every object of the child hold the own instance only
    (the attack of issue 8: ``header``/``arrays`` held all three instances)."""
    result = grade(inst, attacks.HARVEST)
    # The own instance's error is shown whole to its owner: what the harvest found.
    found = attacks.harvested(messages(result))
    assert any("FOUND[" in m for m in messages(result)), result.to_json()
    for h in hidden:
        for key in attacks.arrays_of(h.values):
            assert key not in found, f"a hidden input was reachable from backward(): {key}"


def test_control_the_harvest_finds_what_its_callers_hold():
    namespace: dict = {}
    exec(attacks.HARVEST, namespace)  # noqa: S102 - our own test source, no sandbox needed
    other = np.array([[0.123, 4.5]])

    def runner(arrays):
        return namespace["harvest"]([])

    with warnings.catch_warnings():  # it touches every object of this (test) process
        warnings.simplefilter("ignore")
        found = runner({"other": other})
    assert [[1, 2], [0.123, 4.5]] in found


# ------------------------------------------------------------------ hidden checks say little

def test_exception_text_on_a_hidden_check_shows_no_value(inst, hidden):
    source = with_hidden_branch(inst, "print('LEAK', kw['W1'].tolist())\n"
                                      "raise ValueError(repr(kw['W1'].tolist()))")
    result = grade(inst, source)
    assert "LEAK" not in shown(result)
    assert_no_values(result, hidden)
    assert result.valid and result.score == 0.0
    line = attacks.line_of(source, "raise ValueError")
    assert result.errors == [{
        "line": line,
        "message": f"hidden check 1 of 2 (other dims and values): backward() raised "
                   f"ValueError at line {line}"}]
    for g in ASKED:
        assert result.gradients[g].verdict == "runtime_error"
        assert result.gradients[g].message == (
            f"not computed on hidden check 1 of 2: the run failed (see the error at line {line})")


def test_a_made_up_exception_type_is_not_named(inst, hidden):
    source = with_hidden_branch(
        inst, "raise type('E_' + str(int(kw['W1'][0, 0] * 100)), (Exception,), {})()")
    result = grade(inst, source)
    assert "E_" not in shown(result)
    assert_no_values(result, hidden)
    (error,) = result.errors
    assert "backward() raised an exception at line" in error["message"]


def test_a_line_outside_the_file_is_not_given(inst, hidden):
    body = ("exec(compile('\\n' * int(abs(kw['W1'][0, 0]) * 1000 + 900) + 'raise KeyError',"
            " 'answer.py', 'exec'))")
    result = grade(inst, with_hidden_branch(inst, body))
    assert not re.search(r"line \d{3}", shown(result))
    (error,) = result.errors
    assert error["line"] == 0
    assert error["message"].endswith("backward() raised KeyError")


def test_a_wrong_shape_on_a_hidden_check_does_not_echo_the_returned_shape(inst, hidden):
    body = ("out = model_backward(**kw)\n"
            "out['dW1'] = np.zeros((int(abs(kw['W1'][0, 0]) * 1000) + 1000, 1))\n"
            "return out")
    result = grade(inst, with_hidden_branch(inst, body))
    g = result.gradients["dW1"]
    assert g.verdict == "wrong_shape"
    assert g.message.startswith("on hidden check 1 of 2 (other dims and values): dW1 has the "
                                "wrong shape: in numerator layout")
    assert not re.search(r"\d{3}", shown(result))
    assert result.score == pytest.approx(6 / 7, abs=1e-6)


def test_a_process_that_ends_itself_on_a_hidden_check_says_so_without_its_status(inst, hidden):
    result = grade(inst, with_hidden_branch(inst, "os._exit(int(abs(kw['W1'][0, 0]) * 100))",
                                            prelude="import os"))
    assert "status" not in shown(result)
    assert result.valid and result.score == 0.0
    (error,) = result.errors
    assert error == {"line": 0, "message": "hidden check 1 of 2 (other dims and values): the "
                                           "answer's process stopped before returning a result"}
    assert {g.verdict for g in result.gradients.values()} == {"runtime_error"}


def test_a_bad_result_on_a_hidden_check_is_described_generically(inst, hidden):
    body = "return {'dx': np.array([str(kw['W1'].tolist())])}"
    result = grade(inst, with_hidden_branch(inst, body))
    assert_no_values(result, hidden)
    (error,) = result.errors
    assert error["message"] == ("hidden check 1 of 2 (other dims and values): backward() did "
                                "not return a dict of real-valued arrays")
    assert {g.verdict for g in result.gradients.values()} == {"invalid_result"}


# ------------------------------------------------------------------ forged frames

@pytest.mark.parametrize("everywhere", [True, False])
def test_a_forged_invalid_frame_is_graded_and_its_message_not_shown(inst, everywhere):
    if everywhere:
        source = attacks.forge_everywhere()
    else:
        source = with_hidden_branch(inst, "forge_done('FORGED ' + repr(kw))",
                                    prelude=attacks.FORGE)
    result = grade(inst, source)
    assert "FORGED" not in shown(result)
    assert result.valid and result.score == 0.0  # an attempt, never "invalid"


# ------------------------------------------------------------------ shown once

def test_an_own_runtime_error_is_shown_once_with_its_traceback(inst):
    source = "def backward(**kw):\n    return {'dx': kw['nope']}\n"
    result = grade(inst, source)
    (error,) = result.errors
    assert error["line"] == 2
    assert 'File "answer.py", line 2, in backward' in error["message"]
    assert "KeyError: 'nope'" in error["message"] and "/work/" not in error["message"]
    for g in ASKED:
        assert result.gradients[g].verdict == "runtime_error"
        assert (
            result.gradients[g].message == "not computed: the run failed (see the error at line 2)"
        )


def test_an_error_while_loading_is_shown_once(inst):
    source = (
        "import numpy as np\nW = np.zeros(3) @ np.zeros(4)\ndef backward(**kw):\n    return {}\n"
    )
    result = grade(inst, source)
    (error,) = result.errors
    assert error["line"] == 2 and "ValueError" in error["message"]
    assert {g.verdict for g in result.gradients.values()} == {"runtime_error"}


def test_only_the_check_that_decided_a_verdict_is_shown(inst, hidden):
    # Wrong on the own instance for dx: that is the verdict; the hidden error decides the rest.
    body = "raise IndexError"
    source = with_hidden_branch(inst, body).replace(
        "    return model_backward(**kw)\n",
        "    out = model_backward(**kw)\n    out['dx'] = -out['dx']\n    return out\n")
    result = grade(inst, source)
    assert result.gradients["dx"].verdict == "sign"
    assert [e["message"].split(":")[0] for e in result.errors] == [
        "hidden check 1 of 2 (other dims and values)"]


def test_time_limit_is_shown_once(inst):
    result = grade(inst, "def backward(**kw):\n    while True:\n        pass\n")
    assert result.valid and result.score == 0
    assert result.errors == [{"line": 0, "message": "time limit: backward() ran longer than 2 s"}]
    assert {g.verdict for g in result.gradients.values()} == {"time_limit"}


# ------------------------------------------------------------------ layout, extra keys

def test_an_answer_in_the_other_layout_is_named_once(inst):
    source = with_hidden_branch(inst, "pass").replace(
        "    return model_backward(**kw)\n",
        "    return {k: v.T for k, v in model_backward(**kw).items()}\n")
    result = grade(inst, source)
    assert result.score == 0.0
    assert {g.verdict for g in result.gradients.values()} == {"wrong_layout"}
    assert {g.message for g in result.gradients.values()} == {
        "this answer uses denominator layout; the problem uses numerator layout"}


def test_one_transposed_gradient_is_not_another_layout(inst):
    source = model_answer(SPEC, inst).replace("dW3 = z6 @ dz7", "dW3 = (z6 @ dz7).T")
    result = grade(inst, source)
    assert result.gradients["dW3"].verdict == "transposed"


def test_keys_that_were_not_asked_for_are_ignored(inst):
    source = model_answer(SPEC, inst).replace(
        'return {"dx": dx,', 'return {"note": "a string", "dz1": dz1, 3: None, "dx": dx,')
    result = grade(inst, source)
    assert result.score == 1.0, result.to_json()


# ------------------------------------------------------------------ who decides

def test_invalid_is_decided_before_anything_runs(inst):
    def must_not_run(*args, **kwargs):
        raise AssertionError("an invalid answer reached the sandbox")

    result = grade(inst, "import numpy as np\n\ndef backward(**kw)\n    return {}\n",
                   run_job=must_not_run)
    assert not result.valid and result.errors[0]["line"] == 3
    result = grade(inst, "def helper(**kw):\n    def backward():\n        pass\n",
                   run_job=must_not_run)
    assert not result.valid and "no function named 'backward'" in result.errors[0]["message"]


def test_a_name_that_is_not_a_function_costs_an_attempt(inst):
    result = grade(inst, "backward = 3\n")
    assert result.valid and result.score == 0.0
    assert "not a function" in result.errors[0]["message"]


def test_a_sandbox_failure_is_not_the_students(inst):
    from server.sandbox import JobResult

    def failing(source, calls, **kwargs):
        from server.sandbox import run_job

        if calls[0]["W1"].shape != inst.values["W1"].shape:
            return JobResult(status="error", message="no sandboxed child became available")
        return run_job(source, calls, **kwargs)

    result = grade(inst, model_answer(SPEC, inst), run_job=failing)
    assert not result.valid and "not counted against you" in result.errors[0]["message"]


def test_sequential_and_concurrent_children_agree(inst):
    source = model_answer(SPEC, inst).replace("dW3 = z6 @ dz7", "dW3 = (z6 @ dz7).T")
    assert grade(inst, source).to_json() == grade(inst, source, concurrent=False).to_json()
