"""Ordinary jobs: results, statuses, messages, output capture, result validation."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CORRECT, REPO_ROOT, call_args, expected

from server.sandbox import run_job


def test_correct_answer_multiple_calls(sandbox):
    calls = [call_args(seed, n=2 + seed, d=3 + seed) for seed in range(3)]
    r = run_job(CORRECT, calls)
    assert r.status == "ok", r
    assert len(r.calls) == 3
    for call, res in zip(calls, r.calls):
        assert res.status == "ok"
        exp = expected(call)
        assert set(res.outputs) == set(exp)
        for k in exp:
            assert res.outputs[k].dtype == np.float64
            assert res.outputs[k].shape == exp[k].shape
            np.testing.assert_allclose(res.outputs[k], exp[k], rtol=1e-12)
    assert r.elapsed_ms > 0


def test_sequence_and_scalar_arguments_and_other_dtypes(sandbox):
    src = '''
import numpy as np
def step(xs, scale):
    assert isinstance(xs, list) and all(isinstance(v, np.ndarray) for v in xs)
    return {"total": sum(xs) * scale, "count": len(xs), "flag": np.array([True, False]),
            "f32": np.ones(2, dtype=np.float32), "ints": [1, 2, 3]}
'''
    xs = [np.full((2, 2), float(t)) for t in range(4)]
    r = run_job(src, [{"xs": xs, "scale": 0.5}], function="step")
    assert r.status == "ok", r
    out = r.calls[0].outputs
    np.testing.assert_array_equal(out["total"], np.full((2, 2), 3.0))
    assert out["count"].shape == () and out["count"] == 4.0
    np.testing.assert_array_equal(out["flag"], [1.0, 0.0])
    assert all(v.dtype == np.float64 for v in out.values())
    np.testing.assert_array_equal(out["ints"], [1.0, 2.0, 3.0])


def test_inputs_are_private_copies_per_call(sandbox):
    src = '''
def backward(x, W, dy):
    x *= 0          # mutate the argument in place
    return {"s": x.sum() + W.sum()}
'''
    call = call_args()
    before = call["x"].copy()
    r = run_job(src, [call, call])
    assert [c.status for c in r.calls] == ["ok", "ok"]
    np.testing.assert_allclose(r.calls[1].outputs["s"], call["W"].sum())
    np.testing.assert_array_equal(call["x"], before)  # the caller's array is untouched


def test_syntax_error_is_invalid_with_line_number(sandbox):
    r = run_job("import numpy as np\n\ndef backward(x:\n    return {}\n", [call_args()])
    assert r.status == "invalid"
    assert r.message.startswith("line 3:"), r.message
    assert "SyntaxError" in r.message
    assert r.calls == []


def test_missing_function_is_invalid_and_a_non_function_a_runtime_error(sandbox):
    r = run_job("def forward(x):\n    return {}\n", [call_args()])
    assert r.status == "invalid"
    assert "backward" in r.message
    # The name is bound at module level, so the module ran: a runtime error.
    r = run_job("backward = 3\n", [call_args()])
    assert r.status == "runtime_error"
    assert (r.error_type, r.line) == ("TypeError", None)
    assert "'backward' is not a function (its type is int)" in r.message


def test_import_time_error_is_runtime_error_with_student_traceback(sandbox):
    src = ("import numpy as np\n\nx = 1\ny = np.zeros(3) @ np.zeros(4)\n"
           "def backward(**kw):\n    return {}\n")
    r = run_job(src, [call_args()])
    assert r.status == "runtime_error"
    assert "ValueError" in r.message
    assert (r.error_type, r.line) == ("ValueError", 4)
    assert 'File "answer.py", line 4' in r.traceback
    assert str(REPO_ROOT) not in r.traceback + r.message
    assert "site-packages" not in r.traceback
    assert "numpy/" not in r.traceback  # numpy's own frames are removed


def test_runtime_error_in_one_call_does_not_stop_the_others(sandbox):
    src = '''
def helper(x):
    return x[10]

def backward(x, W, dy):
    if x.shape[0] == 2:
        return {"v": helper(x)}
    return {"v": x.sum()}
'''
    r = run_job(src, [call_args(n=3), call_args(n=2), call_args(n=4)])
    assert r.status == "ok"
    assert [c.status for c in r.calls] == ["ok", "runtime_error", "ok"]
    bad = r.calls[1]
    assert "IndexError" in bad.message
    assert "line 3, in helper" in bad.traceback and "line 7, in backward" in bad.traceback
    assert "worker" not in bad.traceback and str(REPO_ROOT) not in bad.traceback


def test_stdout_and_stderr_are_captured_and_truncated(sandbox):
    src = '''
import sys
def backward(x, W, dy):
    print("hello from the answer")
    print("warn", file=sys.stderr)
    sys.stdout.write("y" * 50_000)
    return {"s": x.sum()}
'''
    r = run_job(src, [call_args()])
    assert r.status == "ok"
    assert r.stdout.startswith("hello from the answer\n")
    assert r.stderr == "warn\n"
    assert len(r.stdout) < 10_200
    assert "output truncated: 40022 more characters" in r.stdout


@pytest.mark.parametrize(
    "ret, reason",
    [
        ("[x]", "must return a dict"),
        ("{1: x}", "keys must be"),
        ("{'a': np.array([object(), 1], dtype=object)}", "dtype object"),
        ("{'a': x + 1j}", "complex"),
        ("{'a': 'text'}", "str"),
        ("{'a': np.zeros(1_000_001)}", "1000001 elements"),
        ("{f'g{i}': x for i in range(65)}", "65 arrays"),
        ("{'a': np.array(['a', 'b'])}", "dtype <U1"),
        ("{'a': np.datetime64('2020-01-01')}", "expected real numbers"),
        ("{'a': {'nested': x}}", "dict, expected a numpy array"),
        ("{'a': np.matrix(x)}", "subclass"),
    ],
)
def test_results_that_are_not_real_arrays_are_invalid_result(sandbox, ret, reason):
    src = f"import numpy as np\ndef backward(x, W, dy):\n    return {ret}\n"
    r = run_job(src, [call_args()])
    assert r.status == "ok", r
    assert r.calls[0].status == "invalid_result"
    assert r.calls[0].outputs == {}
    assert reason in r.calls[0].message


def test_limits_are_parameters(sandbox):
    src = "import numpy as np\ndef backward(x, W, dy):\n    return {'a': x, 'b': W}\n"
    r = run_job(src, [call_args()], max_output_arrays=1)
    assert r.calls[0].status == "invalid_result"
    r = run_job(src, [call_args()], max_array_elements=12)
    assert r.calls[0].status == "invalid_result"  # W has 20 elements
    r = run_job(src, [call_args()], max_array_elements=20)
    assert r.calls[0].status == "ok"


def test_bad_caller_input_raises_with_a_clear_message():
    with pytest.raises(TypeError, match=r"calls\[0\]\['x'\]"):
        run_job(CORRECT, [{"x": "not an array"}])
    with pytest.raises(TypeError, match="real numeric"):
        run_job(CORRECT, [{"x": np.array([1j])}])
    with pytest.raises(ValueError, match="function must be an identifier"):
        run_job(CORRECT, [], function="os.system")
    with pytest.raises(ValueError, match="time_limit_s"):
        run_job(CORRECT, [], time_limit_s=0)


def test_each_job_gets_a_fresh_process(sandbox):
    poison = '''
import numpy as np
np.dot = lambda a, b: 0
def backward(x, W, dy):
    return {"p": np.dot(x, W)}
'''
    r = run_job(poison, [call_args()])
    assert r.calls[0].outputs["p"].shape == ()
    # breaking the builtins breaks only this answer's own process
    r = run_job("import builtins\nbuiltins.len = None\ndef backward(**kw):\n    return {}\n",
                [call_args()])
    assert r.status == "runtime_error"
    clean = (
        "import numpy as np\ndef backward(x, W, dy):\n    return {'p': np.dot(x, W), 'n': len(x)}\n"
    )
    r = run_job(clean, [call_args()])
    np.testing.assert_allclose(r.calls[0].outputs["p"], call_args()["x"] @ call_args()["W"])
    assert r.calls[0].outputs["n"] == 3


def test_modules_not_preloaded_fail_cleanly(sandbox):
    r = run_job("import numpy.testing\ndef backward(**kw):\n    return {}\n", [call_args()])
    assert r.status == "runtime_error"
    assert "numpy.testing" in r.message or "No module" in r.message, r


def test_available_modules(sandbox):
    src = '''
import math, itertools, functools, collections, random, re
import numpy as np
from numpy import linalg, fft
def backward(x, W, dy):
    return {"a": np.array(math.sqrt(4.0)), "n": np.linalg.norm(x), "f": np.fft.fft(x[0]).real,
            "r": np.random.default_rng(0).random(2)}
'''
    r = run_job(src, [call_args()])
    assert r.status == "ok", r
    assert r.calls[0].status == "ok", r.calls[0]


def test_the_child_runs_the_code_the_server_compiled(monkeypatch):
    """The server compiles the module once (check_source's compile) and sends the
    code object with the job; the child does not compile the source again. (Shown
    by handing it the code of another source: the child runs that code, while
    tracebacks still quote the source sent.)"""
    import marshal

    from server.sandbox import client

    other = compile("import numpy as np\n"
                    "def backward(x, W, dy):\n    return {'v': np.ones(1) * 7}\n",
                    "answer.py", "exec")
    monkeypatch.setattr(client, "compiled_source", lambda source, fn: marshal.dumps(other))
    r = run_job(CORRECT, [call_args()])
    assert r.status == "ok" and r.calls[0].outputs["v"].tolist() == [7.0], r


def test_threading_still_knows_its_main_thread_in_a_child():
    """The worker skips threading's after-fork handler for its children (it has one
    thread and holds no lock when it forks): threading's view stays whole."""
    src = ("import threading\ndef backward(x, W, dy):\n"
           "    t = threading.current_thread()\n"
           "    print(t is threading.main_thread(), threading.active_count(), t.name)\n"
           "    with threading.Lock():\n        pass\n    return {}\n")
    r = run_job(src, [call_args()])
    assert r.status == "ok" and r.stdout == "True 1 MainThread\n", r
