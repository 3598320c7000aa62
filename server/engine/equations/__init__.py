"""Backward-equations answers: a strict parser and a float64 evaluator.

``nodes`` (limits, public types, the tree), ``checker`` (text to a checked
program), ``runner`` (running it); this package exports the public names.

A student's answer is a small, strict subset of Python and numpy (docs/design.md, section 5).
The text never reaches ``eval`` or ``exec``: each line is parsed with :mod:`ast`,
checked against an allowlist and converted into a small tree of our own, which
is then evaluated here with numpy.

Values are 2-D float64 arrays (numbers are scalars).  Element-wise operators are
strict: both sides have the same shape, or one side is a scalar or 1×1; numpy
broadcasting of mismatched shapes is a runtime error that names the line and both
shapes.  Integer indices keep arrays 2-D (``x[0]`` is the first row as a 1×n
array); a single index or slice selects rows.

Columns in errors are 0-based offsets into the line with tabs expanded to 4 spaces.
"""

from server.engine.equations.checker import parse_equations
from server.engine.equations.nodes import (
    FUNCTIONS,
    MAX_DEPTH,
    MAX_ELEMENTS,
    MAX_LINES,
    MAX_STEPS,
    MAX_TEXT_CHARS,
    MAX_WORK,
    AnswerContext,
    AnswerFormatError,
    AnswerRuntimeError,
    AssignEvent,
    EquationProgram,
    FormatError,
)
from server.engine.equations.runner import (
    PreparedValues,
    evaluate_rhs,
    prepare_values,
    run_equations,
)

__all__ = [
    "FUNCTIONS", "MAX_DEPTH", "MAX_ELEMENTS", "MAX_LINES", "MAX_STEPS", "MAX_TEXT_CHARS",
    "MAX_WORK", "AnswerContext", "AnswerFormatError", "AnswerRuntimeError", "AssignEvent",
    "EquationProgram", "FormatError", "PreparedValues", "evaluate_rhs", "parse_equations",
    "prepare_values", "run_equations",
]
