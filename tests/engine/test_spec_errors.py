"""Bad specs are refused with the line and the reason."""

import re
from pathlib import Path

import pytest

from server.engine.spec import SpecError, parse_spec

BANK = Path(__file__).resolve().parents[2] / "problems"
BASE = (BANK / "mlp-relu.toml").read_text()


def line_of(text: str, needle: str) -> int:
    for number, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return number
    raise AssertionError(needle)


def refuse(text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_spec(text, "bad.toml")
    return info.value


def edited(old: str, new: str, text: str = BASE) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


CASES = [
    # (kind, old, new, words expected in the message, line needle or None)
    ("unknown name", "z4 = W2 @ z3", "z4 = W9 @ z3", ["unknown name 'W9'"], "z4 = W9"),
    (
        "used before definition",
        "z2 = z1 + b1",
        "z2 = z8 + b1\nz8 = z1 + b1",
        ["z8 is used before its definition"],
        "z2 = z8",
    ),
    (
        "shape mismatch",
        'W2 = { shape = ["H2", "H1"]',
        'W2 = { shape = ["H2", "N"]',
        ["shape mismatch", "W2 is H2×N", "z3 is H1×1"],
        "z4 = W2 @ z3",
    ),
    (
        "mismatch for some dims only",
        'b1 = { shape = ["H1", 1]',
        'b1 = { shape = ["H2", 1]',
        ["shape mismatch", "z1 is H1×1", "b1 is H2×1"],
        "z2 = z1 + b1",
    ),
    ("empty dims range", "H2 = [3, 6]", "H2 = [6, 3]", ["empty range"], "H2 = [6, 3]"),
    (
        "unknown op",
        "z3 = relu(z2)",
        "z3 = rleu(z2)",
        ["unknown operation 'rleu'", "did you mean 'relu'"],
        "z3 = rleu",
    ),
    (
        "unknown operator",
        "z3 = relu(z2)",
        "z3 = z2 ** 2",
        ["unknown operation '**'"],
        "z3 = z2 ** 2",
    ),
    (
        "compound relation",
        "z1 = W1 @ x\nz2 = z1 + b1",
        "z2 = W1 @ x + b1",
        ["compound relation", "z2_1 = W1 @ x", "z2 = z2_1 + b1"],
        "z2 = W1 @ x + b1",
    ),
    (
        "ask names a missing intermediate",
        'ask = ["x",',
        'ask = ["z9", "x",',
        ["ask names 'z9'", "never defines"],
        "ask = ",
    ),
    (
        "duplicate definition",
        "z5 = z4 + b2",
        "z5 = z4 + b2\nz5 = z4 - b2",
        ["duplicate definition", "z5"],
        "z5 = z4 - b2",
    ),
    (
        "redefining a declared variable",
        "z5 = z4 + b2",
        "b2 = z4 + b2",
        ["duplicate definition", "b2"],
        "b2 = z4 + b2",
    ),
    (
        "unknown top-level key",
        'layout = "numerator"',
        'layuot = "numerator"',
        ["unknown key 'layuot'", "did you mean 'layout'"],
        "layuot",
    ),
    (
        "unknown variable key",
        'x  = { shape = ["N", 1],    role = "input" }',
        'x  = { shap = ["N", 1], shape = ["N", 1], role = "input" }',
        ["unknown key 'shap'"],
        "x  = { shap",
    ),
    ("bad role", 'role = "input" }', 'role = "inptu" }', ["role must be one of"], 'role = "inptu"'),
    (
        "given not computed",
        'given = "output"',
        'given = "outptu"',
        ["given names 'outptu'", "never defined"],
        "given = ",
    ),
    (
        "ask does not influence given",
        "output = z7 + b3",
        "output = z7 + b3\nextra = W1 @ x",
        None,
        None,
    ),
    ("malformed TOML", 'title = "Backprop', 'title = "Backprop\n', ["malformed TOML"], None),
    (
        "unknown dim in a shape",
        'x  = { shape = ["N", 1]',
        'x  = { shape = ["M", 1]',
        ["unknown name 'M'"],
        'x  = { shape = ["M"',
    ),
    ("forward syntax error", "z3 = relu(z2)", "z3 = relu(z2", ["syntax error"], None),
    ("copy is not a step", "z6 = relu(z5)", "z6 = z5", ["copies a value"], "z6 = z5"),
]


@pytest.mark.parametrize("kind, old, new, words, needle", CASES, ids=[c[0] for c in CASES])
def test_bad_spec_is_refused_with_line_and_reason(kind, old, new, words, needle):
    text = edited(old, new)
    if kind == "ask does not influence given":
        text = edited('ask = ["x",', 'ask = ["extra", "x",', text)
        words, needle = ["ask names 'extra'", "does not influence 'output'"], "ask = "
    error = refuse(text)
    rendered = str(error)
    for w in words:
        assert w in rendered, rendered
    if needle is not None:
        assert f"bad.toml:{line_of(text, needle)}:" in rendered, rendered
    else:
        assert re.search(r"bad\.toml:\d+:", rendered), rendered


def test_at_least_twelve_kinds_of_bad_spec_are_covered():
    assert len({c[0] for c in CASES}) >= 12


def test_slice_past_the_end_and_empty_loop_are_refused():
    scan = (BANK / "scan-mlp.toml").read_text()
    error = refuse(edited("    x[t] = X[t:t+N]\n", "    x[t] = X[t:t+N+1]\n", scan))
    assert "can run past the end of X" in str(error)
    error = refuse(edited("range(T - N + 1)", "range(T - N - 6)", scan))
    assert "can be empty" in str(error)
    assert f"bad.toml:{line_of(scan, 'for t in range')}:" in str(error)


def test_every_error_is_reported_not_only_the_first():
    text = edited(
        "H2 = [3, 6]", "H2 = [6, 3]", edited('layout = "numerator"', 'layuot = "numerator"')
    )
    assert len(refuse(text).issues) == 2


def test_compound_line_inside_a_loop_suggests_indexed_steps():
    scan = (BANK / "scan-mlp.toml").read_text()
    text = edited("z1[t] = W1 @ x[t]\n    z2[t] = z1[t] + b1", "z2[t] = relu(W1 @ x[t])", scan)
    msg = str(refuse(text))
    assert "z2_1[t] = W1 @ x[t]" in msg and "z2[t] = relu(z2_1[t])" in msg


def test_a_name_that_clashes_with_a_gradient_name_is_refused():
    text = edited("z2 = z1 + b1\nz3 = relu(z2)", "dz1 = z1 + b1\nz3 = relu(dz1)")
    assert "'z1' and 'dz1' clash" in str(refuse(text))
