"""Fuzzing the inputs a course or a student controls (issue 14 §5): specs (well-formed
and malformed), equation answers and expression answers graded end to end by the
engine, and sandbox result frames as the server reads them. No exception escapes:
every input gets a result, or a clear error that names a line.

A few hundred examples each in CI; ``NABLA_FUZZ=long`` runs many thousands.
(tests/engine/test_answer_fuzz.py fuzzes the answer parsers alone,
tests/sandbox/test_sandbox_units.py the array decoder.)
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.engine.bank import load_bank
from server.engine.problem import draw, grade_answer, model_answer
from server.engine.spec import SpecError, parse_spec
from server.sandbox import wire

LONG = os.environ.get("NABLA_FUZZ") == "long"
FUZZ = settings(max_examples=5000 if LONG else 200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SLOW_FUZZ = settings(FUZZ, max_examples=2000 if LONG else 60)

BANK_DIR = Path(__file__).resolve().parents[1] / "problems"
SPEC_TEXTS = {path.stem: path.read_text() for path in sorted(BANK_DIR.glob("*.toml"))}
BANK = load_bank()
EQUATIONS = BANK["mlp-relu"]
EXPRESSION = BANK["rule-4a-generalized-chain"]
EQ_INST = draw(EQUATIONS, 3)
EX_INST = draw(EXPRESSION, 3)
EQ_MODEL = model_answer(EQUATIONS, EQ_INST)
EX_MODEL = model_answer(EXPRESSION, EX_INST)

TOKENS = ["@", "*", "+", "-", "/", ".T", "(", ")", "[", "]", "=", "+=", ",", ":", "0", "1",
          "2.5", "1e308", "-1e-308", "x", "W1", "z1", "z2", "dz1", "dz2", "doutput", "dx",
          "dW1", "relu", "exp", "log", "sum", "np.", "**", "9**9**9", "#", "\n", " ",
          "for", "in", "range", "(z5 > 0)", "\t", "\x00", "é", "∇", "..."]


def mutate(text: str, data) -> str:
    """Delete, duplicate, swap or replace a few lines and characters of ``text``."""
    lines = text.splitlines()
    for _ in range(data.draw(st.integers(1, 4))):
        if not lines:
            break
        i = data.draw(st.integers(0, len(lines) - 1))
        action = data.draw(st.sampled_from(["drop", "dup", "swap", "edit", "insert"]))
        if action == "drop":
            del lines[i]
        elif action == "dup":
            lines.insert(i, lines[i])
        elif action == "swap":
            j = data.draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif action == "edit" and lines[i]:
            k = data.draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:k] + data.draw(st.sampled_from(TOKENS + ['"', "'", "{", "}",
                                                                         "[", "]", "=", "0"]))\
                + lines[i][k + data.draw(st.integers(0, 3)):]
        else:
            lines.insert(i, data.draw(st.text(max_size=40)))
    return "\n".join(lines)


def assert_issues_name_lines(error: SpecError, text: str) -> None:
    assert error.issues, "a SpecError without issues"
    count = text.count("\n") + 1
    for issue in error.issues:
        assert issue.message.strip()
        assert issue.line is None or 1 <= issue.line <= count + 1, (issue, count)


@FUZZ
@given(data=st.data(), name=st.sampled_from(sorted(SPEC_TEXTS)))
def test_a_mutated_spec_parses_or_is_refused_with_lines(data, name):
    text = mutate(SPEC_TEXTS[name], data)
    try:
        parse_spec(text, "fuzz.toml")
    except SpecError as error:
        assert_issues_name_lines(error, text)


@FUZZ
@given(name=st.sampled_from(sorted(SPEC_TEXTS)), low=st.integers(1, 4), span=st.integers(0, 3))
def test_well_formed_specs_with_other_dims_parse(name, low, span):
    """Every dims range of a bank spec replaced by another non-empty one: a spec."""
    import re

    text = re.sub(r"^(\s*[A-Z][A-Za-z0-9_]* = )\[\d+, \d+\]",
                  lambda m: f"{m.group(1)}[{low}, {low + span}]", SPEC_TEXTS[name], flags=re.M)
    try:
        parse_spec(text, "fuzz.toml")
    except SpecError as error:  # a dims constraint of the problem may refuse small dims
        assert_issues_name_lines(error, text)


def assert_result(result, text: str) -> None:
    assert 0.0 <= result.score <= 1.0 and not math.isnan(result.score)
    # Lines as the engine counts them (str.splitlines: \x1c-\x1e, \x85, \u2028 also end
    # a line there, as server/engine/answer.py numbers lines).
    count = len(text.splitlines()) + 1
    for error in result.errors:
        assert str(error["message"]).strip()
        assert isinstance(error["line"], int) and 0 <= error["line"] <= count, error
    json.dumps(result.to_json())  # storable


@SLOW_FUZZ
@given(data=st.data())
def test_mutated_equation_answers_get_a_result(data):
    text = mutate(EQ_MODEL, data)
    assert_result(grade_answer(EQUATIONS, EQ_INST, text, hidden_seeds=(7,)), text)


@FUZZ
@given(tokens=st.lists(st.sampled_from(TOKENS), max_size=30))
def test_token_soup_equation_answers_get_a_result(tokens):
    text = "1. dx = " + " ".join(tokens)
    assert_result(grade_answer(EQUATIONS, EQ_INST, text, hidden_seeds=()), text)


@FUZZ
@given(data=st.data())
def test_expression_answers_get_a_result(data):
    choice = data.draw(st.sampled_from(["mutated", "soup"]))
    if choice == "mutated":
        k = data.draw(st.integers(0, len(EX_MODEL)))
        text = EX_MODEL[:k] + data.draw(st.sampled_from(TOKENS)) + EX_MODEL[k:]
    else:
        text = " ".join(data.draw(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=20)))
    assert_result(grade_answer(EXPRESSION, EX_INST, text, hidden_seeds=(7,)), text)


# --- sandbox result frames -------------------------------------------------------------


def frame(header: dict, payload: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return wire.FRAME_HEAD.pack(wire.RESULT_MAGIC, len(raw), len(payload)) + raw + payload


def read_frames(stream: bytes, budget: int = 1 << 16) -> list[dict]:
    """What the client does with the bytes a child sends: heads, headers, arrays."""
    out, pos = [], 0
    while pos < len(stream):
        head = stream[pos:pos + wire.FRAME_HEAD.size]
        if len(head) < wire.FRAME_HEAD.size:
            raise wire.WireError("truncated frame head")
        header_len, payload_len = wire.parse_frame_head(head, budget)
        pos += wire.FRAME_HEAD.size
        header = wire.parse_frame_header(stream[pos:pos + header_len])
        pos += header_len
        payload = stream[pos:pos + payload_len]
        pos += payload_len
        budget -= payload_len
        if header["k"] == "call" and header.get("s") == "ok":
            arrays = wire.decode_arrays(header.get("a"), payload, max_arrays=8,
                                        max_elements=1000, max_bytes=1 << 14)
            assert all(a.dtype == np.float64 for a in arrays.values())
        out.append(header)
    return out


GOOD = frame({"k": "call", "i": 0, "s": "ok", "a": [["dx", "<f8", [2, 3]]]},
             np.arange(6.0).tobytes()) + frame({"k": "done", "s": "ok"}, b"")
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(),
                      st.text(max_size=10))
json_values = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=4),
                           max_leaves=12)


@FUZZ
@given(data=st.data())
def test_result_frames_are_read_or_refused_with_a_wire_error(data):
    kind = data.draw(st.sampled_from(["flip", "cut", "header", "array"]))
    if kind == "flip":
        raw = bytearray(GOOD)
        for _ in range(data.draw(st.integers(1, 6))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
        stream = bytes(raw)
    elif kind == "cut":
        stream = GOOD[:data.draw(st.integers(0, len(GOOD)))]
    elif kind == "header":
        header = data.draw(st.dictionaries(st.sampled_from(["k", "i", "s", "a", "m", "tb"]),
                                           json_values, max_size=5))
        stream = frame(header, data.draw(st.binary(max_size=64)))
    else:
        name = data.draw(st.text(max_size=8))
        dtype = data.draw(st.sampled_from(["<f8", "<f4", "<i8", "|b1", "<c16", "O", "<U3"]))
        shape = data.draw(st.lists(st.integers(-2, 2**40), max_size=4))
        stream = frame({"k": "call", "i": 0, "s": "ok", "a": [[name, dtype, shape]]},
                       data.draw(st.binary(max_size=200)))
    try:
        read_frames(stream)
    except wire.WireError as error:
        assert str(error)


def test_a_gradient_assigned_twice_with_different_shapes_gets_a_verdict():
    """Found by the fuzzer: dz1 first assigned doutput's shape, then dz2's (the grader
    added the two to test for a missing +=, and numpy refused to broadcast)."""
    text = EQ_MODEL.replace("1. dz7 = doutput", "1. dz1 = doutput", 1)
    assert_result(grade_answer(EQUATIONS, EQ_INST, text, hidden_seeds=(7,)), text)
