"""The answer kinds, by the name a spec gives in ``answer = "..."``.

Adding a kind: one module here (a subclass of ``AnswerKind``), one line in
``KINDS``, one template partial (docs/design.md, "How to add an answer kind").
"""

from __future__ import annotations

from typing import Any

from server.engine.kinds.base import AnswerKind, Drawn
from server.engine.kinds.equations import EquationsKind
from server.engine.kinds.expression import ExpressionKind
from server.engine.kinds.numpy import NumpyKind

KINDS: dict[str, AnswerKind] = {
    "equations": EquationsKind(),
    "numpy": NumpyKind(),
    "expression": ExpressionKind(),
}


def kind_of(spec: Any) -> AnswerKind:
    """The answer kind of ``spec`` (anything with an ``answer_kind`` name)."""
    return KINDS[spec.answer_kind]


__all__ = ["KINDS", "AnswerKind", "Drawn", "kind_of"]
