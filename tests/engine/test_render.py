"""Forward programs rendered as native MathML with sympy."""

import xml.etree.ElementTree as ET

from server.engine.bank import load_bank
from server.engine.render import forward_mathml

BANK = load_bank()


def test_every_program_of_every_problem_renders_as_well_formed_mathml():
    for spec in BANK.values():
        for program in spec.programs.values():
            lines = forward_mathml(spec, program)
            steps = [ln for ln in lines if ln["kind"] == "step"]
            assert len(steps) == sum(1 for _ in program.steps())
            for ln in steps:
                root = ET.fromstring(ln["mathml"])
                assert root.tag.endswith("math")


def test_operand_order_and_loop_notation_are_kept():
    spec = BANK["scan-mlp"]
    lines = forward_mathml(spec, spec.program(()))
    assert lines[0]["kind"] == "loop" and lines[0]["source"].startswith("for t in range")
    z2 = next(ln for ln in lines if ln["source"].startswith("z2[t]"))
    # z1(t) + b1, in the order written
    assert z2["mathml"].index("<mi>z</mi><mi>1</mi>") < z2["mathml"].index("<mi>b</mi>")
    assert "<mi>(t)</mi>" in z2["mathml"]


def test_statement_html_escapes_and_marks_code():
    from server.engine.render import statement_html

    html = statement_html("Compute `dx` <b>now</b>.\n\nSecond `a < b` paragraph.")
    assert html == (
        "<p>Compute <code>dx</code> &lt;b&gt;now&lt;/b&gt;.</p>\n"
        "<p>Second <code>a &lt; b</code> paragraph.</p>"
    )
