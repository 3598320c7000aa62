"""Numpy backward() answers graded through the sandbox, on the stored and hidden instances."""

import functools

import numpy as np
import pytest

from server import sandbox
from server.engine.bank import load_bank
from server.engine.instance import draw_hidden_instances, draw_instance, legacy_hidden_seeds
from server.engine.kinds.numpy import grade_numpy as engine_grade_numpy
from server.engine.problem import model_answer

# The engine's numpy grader, with the sandbox passed in (as services and the CLI do).
grade_numpy = functools.partial(engine_grade_numpy, run_job=sandbox.run_job,
                                check_source=sandbox.check_source)

SPEC = load_bank()["mlp-relu-numpy"]


@pytest.fixture(scope="module")
def inst():
    return draw_instance(SPEC, 11)


def test_model_answer_scores_one_on_several_seeds():
    for seed in range(5):
        inst = draw_instance(SPEC, seed)
        result = grade_numpy(SPEC, inst, model_answer(SPEC, inst))
        assert result.valid and result.score == 1.0, result.to_json()


def test_hidden_instances_have_the_same_structure_and_other_dims(inst):
    hidden = draw_hidden_instances(SPEC, inst, legacy_hidden_seeds(inst))
    assert len(hidden) == 2
    for h in hidden:
        assert h.choice_index == inst.choice_index and h.dims != inst.dims


def test_hard_coded_answer_fails_on_hidden_instances(inst):
    literal = {k: np.array2string(v, separator=",", precision=17, threshold=10**6)
               for k, v in inst.reference.items()}
    body = ", ".join(
        f'"{g}": np.array({literal[g]})' for g in ("dx", "dW1", "db1", "dW2", "db2", "dW3", "db3")
    )
    source = f"import numpy as np\n\ndef backward(**kw):\n    return {{{body}}}\n"
    result = grade_numpy(SPEC, inst, source)
    assert result.valid and result.score == 0.0
    for g in result.gradients.values():
        assert g.verdict != "correct" and "hidden check 1 of 2" in g.message


def test_transposed_weight_gradient(inst):
    source = model_answer(SPEC, inst).replace("dW3 = z6 @ dz7", "dW3 = (z6 @ dz7).T")
    result = grade_numpy(SPEC, inst, source)
    assert result.gradients["dW3"].verdict == "transposed"
    assert result.score == pytest.approx(6 / 7, abs=1e-6)


def test_missing_gradient_and_runtime_error(inst):
    source = model_answer(SPEC, inst).replace('"dx": dx, ', "")
    assert grade_numpy(SPEC, inst, source).gradients["dx"].verdict == "missing"
    boom = "def backward(**kw):\n    return {'dx': kw['nope']}\n"
    result = grade_numpy(SPEC, inst, boom)
    assert result.gradients["dx"].verdict == "runtime_error"
    assert (
        "KeyError" in result.errors[0]["message"]
    )  # shown once (tests/grading/test_numpy_feedback.py)
    assert "/work/" not in result.errors[0]["message"]


def test_syntax_error_is_invalid_with_its_line(inst):
    result = grade_numpy(SPEC, inst, "import numpy as np\n\ndef backward(**kw)\n    return {}\n")
    assert not result.valid and result.errors[0]["line"] == 3


def test_infinite_loop_is_a_time_limit(inst):
    result = grade_numpy(SPEC, inst, "def backward(**kw):\n    while True:\n        pass\n")
    assert result.valid and result.score == 0
    assert {g.verdict for g in result.gradients.values()} == {"time_limit"}


@pytest.mark.parametrize(
    "problem", [s.id for s in load_bank().values() if s.answer_kind != "expression"]
)
def test_model_numpy_answer_of_every_array_problem_scores_one(problem):
    """The derived backward() (dims read off shapes, no in-place aliasing) for
    every network in the bank, as if it were a numpy problem."""
    import dataclasses

    spec = dataclasses.replace(load_bank()[problem], answer_kind="numpy")
    for seed in (0, 1):
        inst = draw_instance(spec, seed)
        result = grade_numpy(spec, inst, model_answer(spec, inst))
        assert result.score == 1.0, result.to_json()


def test_weights_count_in_the_total_through_the_sandbox(inst):
    from server.engine.spec import parse_spec

    weighted = parse_spec(SPEC.source + "\n[weights]\nW1 = 3\n", "mlp-relu-numpy-weighted.toml")
    assert grade_numpy(weighted, inst, model_answer(weighted, inst)).score == 1.0
    wrong = model_answer(weighted, inst).replace("dW1 = x @ dz1", "dW1 = -(x @ dz1)")
    result = grade_numpy(weighted, inst, wrong)
    assert result.gradients["dW1"].verdict == "sign"
    assert result.score == pytest.approx(6 / 9, abs=1e-6)
