"""Who decides a job's outcome (issue 8 §1): the server, never the child.

Invalid answers are found in the server process before any child is leased;
whatever a child sends once it has the job is untrusted data: arrays, or an
error whose type name is shown only if it is a builtin exception's and whose
line only if it is a line of the source.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from conftest import call_args

from server.sandbox import Sandbox, check_source, exception_name, run_job, source_line, wire
from server.sandbox.source import module_level_names

ARGS = call_args()


def forge(header: dict, payload: bytes = b"") -> str:
    """Source lines that write one result frame straight to the job socket."""
    head = json.dumps(header).encode()
    frame = struct.pack("<4sIQ", b"NBR1", len(head), len(payload)) + head + payload
    return f"os.write(3, {frame!r})"


def answer(body: str) -> str:
    indented = "\n".join("    " + line for line in body.strip("\n").splitlines())
    return f"import os, sys\nimport numpy as np\n\ndef backward(x, W, dy):\n{indented}\n"


# ------------------------------------------------------------------ decided in the server

@pytest.mark.parametrize("source, line, words", [
    ("def backward(x:\n    return {}\n", 1, "SyntaxError"),
    ("import numpy\n\ndef backward(x):\n  return {}\n    x = 1\n", 5, "IndentationError"),
    ("def backward(x):\n    return {}\nreturn 3\n", 3, "'return' outside function"),
    ("def backward(x):\n    nonlocal y\n", 2, "nonlocal"),
    ("def forward(x):\n    return {}\n", None, "no function named 'backward'"),
    ("class A:\n    def backward(self):\n        return {}\n", None, "top level"),
    ("def outer():\n    def backward(x):\n        return {}\n", None, "top level"),
    ("f = lambda: [backward for backward in range(3)]\n", None, "no function named"),
    ("-" * 20000 + "1\n", None, "nested too deeply"),
    ("x = " + "(" * 300 + ")" * 300 + "\n", 1, "too many nested parentheses"),
    ("x = 'a\0b'\n", None, "null"),
])
def test_invalid_sources_are_named_in_the_server(source, line, words):
    problem = check_source(source, "backward")
    assert problem is not None
    assert problem.line == line
    assert words.lower() in problem.message.lower(), problem


@pytest.mark.parametrize("source", [
    "def backward(**kw):\n    return {}\n",
    "async def backward():\n    pass\n",
    "backward = lambda **kw: {}\n",
    "if True:\n    def backward(**kw):\n        return {}\n",
    "try:\n    import backward\nexcept ImportError:\n    backward = 3\n",
    "from math import *\n",
    "for backward in [print]:\n    pass\n",
    "(backward := print)\n",
    "import numpy as backward\n",
    "class backward:\n    pass\n",
])
def test_a_module_level_binding_is_enough_to_run(source):
    # Whether it is callable is known only once the module has run: a runtime error.
    assert check_source(source, "backward") is None


def test_module_level_names_skip_nested_scopes():
    tree = compile("import a.b\nfrom c import d as e\ndef f():\n    g = 1\n"
                   "class H:\n    i = 2\nj = [k for k in ()]\ntry:\n    pass\n"
                   "except Exception as m:\n    pass\n", "answer.py", "exec", 0x400)
    assert module_level_names(tree) == {"a", "e", "f", "H", "j", "m"}


def test_an_invalid_source_never_reaches_a_child():
    sb = Sandbox(pool_size=1)
    try:
        r = sb.run_job("def backward(x:\n    pass\n", [ARGS])
        assert (r.status, r.line) == ("invalid", 1)
        assert sb.worker_pid() is None  # no worker was even started
    finally:
        sb.close()


def test_exception_names_and_lines_are_allowlisted():
    for name in ("ValueError", "KeyError", "ZeroDivisionError", "MemoryError", "AxisError",
                 "LinAlgError", "StopIteration"):
        assert exception_name(name) == name
    for name in ("E_0_67", "Value Error", "", None, 3, "valueerror", "ValueError2"):
        assert exception_name(name) == ""
    source = "a\nb\nc\n"
    assert [source_line(n, source) for n in (1, 3, 4, 5, 0, -1, 2**70, True, "2", 2.0)] == \
        [1, 3, 4, None, None, None, None, None, None, None]


# ------------------------------------------------------------------ what a child may say

def test_a_call_error_keeps_a_builtin_type_and_the_line(sandbox):
    r = run_job(answer("y = x[0]\nraise ZeroDivisionError(repr(x.tolist()))"), [ARGS])
    call = r.calls[0]
    assert (r.status, call.status, call.error_type, call.line) == \
        ("ok", "runtime_error", "ZeroDivisionError", 6)
    assert repr(ARGS["x"].tolist()) in call.message  # untrusted text, for its own caller only


def test_a_made_up_exception_type_is_not_named(sandbox):
    r = run_job(answer("raise type('E_0_67', (Exception,), {})('hidden')"), [ARGS])
    assert r.calls[0].status == "runtime_error"
    assert (r.calls[0].error_type, r.calls[0].line) == ("", 5)


def test_a_line_outside_the_file_is_not_given(sandbox):
    body = "exec(compile('\\n' * 500 + 'raise ValueError(7)', 'answer.py', 'exec'))"
    r = run_job(answer(body), [ARGS])
    assert (r.calls[0].error_type, r.calls[0].line) == ("ValueError", None)


def test_a_forged_done_frame_claiming_invalid_costs_like_any_run(sandbox):
    body = forge({"k": "done", "s": "invalid", "m": "FORGED free attempt"}) + "\nos._exit(0)"
    r = run_job(answer(body), [ARGS])
    assert r.status == "ok"  # the run happened: graded (an attempt), never "invalid"
    assert r.calls[0].status == "invalid_result"
    assert "FORGED" not in r.message + r.calls[0].message


@pytest.mark.parametrize("status", ["error", "time_limit", "invalid", "ok", 7, None])
def test_a_child_cannot_claim_a_status_of_the_server(sandbox, status):
    body = forge({"k": "done", "s": status, "m": "FORGED"}) + "\nos._exit(0)"
    r = run_job(answer(body), [ARGS])
    assert r.status == "ok" and r.calls[0].status == "invalid_result", r
    assert "FORGED" not in r.message + r.calls[0].message


def test_forged_error_facts_are_checked(sandbox):
    frame = {"k": "call", "i": 0, "s": "runtime_error", "type": "E_0_67", "line": 10**9,
             "m": "m", "tb": ""}
    body = forge(frame) + "\n" + forge({"k": "done", "s": "ok"}) + "\nos._exit(0)"
    r = run_job(answer(body), [ARGS])
    assert (r.calls[0].status, r.calls[0].error_type, r.calls[0].line) == \
        ("runtime_error", "", None)
    body = forge({"k": "done", "s": "runtime_error", "type": ["ValueError"], "line": "3"})
    r = run_job(answer(body + "\nos._exit(0)"), [ARGS])
    assert (r.status, r.error_type, r.line) == ("runtime_error", "", None)


@pytest.mark.parametrize("body", ["os._exit(0)", "os.kill(os.getpid(), 9)",
                                  "import signal\nos.kill(os.getpid(), signal.SIGTERM)"])
def test_a_child_that_ends_itself_mid_call_is_a_runtime_error_not_ours(sandbox, body):
    r = run_job(answer(body), [ARGS])
    assert r.status == "runtime_error", r


def test_a_child_that_closes_its_socket_and_lives_on_is_a_time_limit_not_ours(sandbox):
    # The exit report comes only once the worker's deadline kill has happened,
    # later than the client used to wait for it (3 s).
    r = run_job(answer("os.close(3)\nimport time\ntime.sleep(100)"), [ARGS], time_limit_s=3.5)
    assert r.status == "time_limit", r


# ------------------------------------------------------------------ outputs

def test_names_not_asked_for_are_ignored_whatever_their_values(sandbox):
    body = "return {'dW': x.T @ dy, 'note': 'not an array', 'extra': object(), 7: 1}"
    r = run_job(answer(body), [ARGS], outputs=["dW", "dx"])
    assert r.calls[0].status == "ok", r
    assert list(r.calls[0].outputs) == ["dW"]
    r = run_job(answer(body), [ARGS])
    assert r.calls[0].status == "invalid_result"  # without ``outputs`` every name counts


def test_the_decoder_skips_names_not_asked_for():
    payload = np.arange(3.0).tobytes() + np.arange(2.0).tobytes()
    specs = [["dW", "<f8", [3]], ["junk", "<f8", [2]]]
    out = wire.decode_arrays(specs, payload, max_arrays=4, max_elements=10, names=["dW"])
    assert list(out) == ["dW"]
    with pytest.raises(wire.WireError, match="payload too short"):
        wire.decode_arrays(specs, payload[:-8], max_arrays=4, max_elements=10, names=["dW"])
