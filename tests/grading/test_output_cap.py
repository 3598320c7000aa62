"""A numpy job's output cap comes from the sizes of the asked gradients (issue 14 §3b):
a right answer fits, an answer returning far more is stopped with a clear message."""

from __future__ import annotations

import functools

import pytest

from server import sandbox
from server.engine.bank import load_bank
from server.engine.instance import draw_hidden_instances, draw_instance
from server.engine.kinds.numpy import OUTPUT_MARGIN, OUTPUT_SLACK_BYTES, output_cap
from server.engine.kinds.numpy import grade_numpy as engine_grade_numpy
from server.engine.problem import model_answer

# The engine's numpy grader, with the sandbox passed in (as services and the CLI do).
grade_numpy = functools.partial(engine_grade_numpy, check_source=sandbox.check_source)

SPEC = load_bank()["mlp-relu-numpy"]
SEEDS = (101, 202)


@pytest.fixture(scope="module")
def inst():
    return draw_instance(SPEC, 11)


def test_the_cap_is_the_asked_gradients_as_float64_with_a_margin(inst):
    asked = ["d" + a for a in inst.ask]
    elements = sum(inst.reference[g].size for g in asked)
    assert output_cap(inst, asked) == int(elements * 8 * OUTPUT_MARGIN) + OUTPUT_SLACK_BYTES
    assert output_cap(inst, asked) < 1 << 20  # far below the sandbox's 64 MB default


def test_every_job_gets_its_own_instances_cap(inst):
    caps = []

    def recording(source, calls, **kwargs):
        from server.sandbox import run_job

        caps.append((calls[0]["W1"].shape, kwargs["max_output_bytes"]))
        return run_job(source, calls, **kwargs)

    result = grade_numpy(SPEC, inst, model_answer(SPEC, inst), hidden_seeds=SEEDS,
                         run_job=recording)
    assert result.score == 1.0
    asked = ["d" + a for a in inst.ask]
    expected = [(i.values["W1"].shape, output_cap(i, asked))
                for i in [inst, *draw_hidden_instances(SPEC, inst, SEEDS)]]
    assert sorted(caps) == sorted(expected)


def test_an_answer_returning_too_much_is_stopped_with_a_clear_message(inst):
    source = model_answer(SPEC, inst).replace(
        "def backward(", "import numpy as _np\n\ndef _backward(", 1) + (
        "\n\ndef backward(**kw):\n"
        "    out = _backward(**kw)\n"
        "    out['dx'] = _np.zeros(100_000)\n"
        "    return out\n")
    result = grade_numpy(SPEC, inst, source, hidden_seeds=SEEDS, run_job=sandbox.run_job)
    assert result.score < 1.0
    text = " ".join(e["message"] for e in result.errors)
    assert f"exceed {output_cap(inst, ['d' + a for a in inst.ask])} bytes" in text, text
