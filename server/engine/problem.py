"""One entry point per task, whatever the problem's answer kind (``spec.kind`` does it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.engine.spec import ProblemSpec


def draw(spec: ProblemSpec, seed: int, *, verify: str = "full") -> Any:
    """The instance of ``spec`` for ``seed`` (``verify``: see ``AnswerKind.draw``)."""
    return spec.kind.draw(spec, seed, verify=verify)


def instance_from_document(spec: ProblemSpec, document: Mapping) -> Any:
    """The engine instance of a stored instance document (``to_json`` with the reference)."""
    return spec.kind.from_json(spec, document)


def model_answer(spec: ProblemSpec, inst: Any) -> str:
    """The model answer, in the problem's answer language."""
    return spec.kind.model_answer(spec, inst)


def grade_answer(spec: ProblemSpec, inst: Any, text: str, *,
                 hidden_seeds: Sequence[int] | None = None, **sandbox: Any):
    """Grade an answer (``sandbox``: ``run_job`` and ``check_source`` for the kinds
    that run student code). ``hidden_seeds``: see ``AnswerKind.grade``."""
    return spec.kind.grade(spec, inst, text, hidden_seeds=hidden_seeds, **sandbox)


def check_answer(spec: ProblemSpec, inst: Any, text: str, **sandbox: Any):
    """Validation without grading (``AnswerKind.check``): parse the answer and, where
    the kind can without running student code, check every line's shape on ``inst``.
    A GradeResult with ``errors`` only (no verdicts, no score)."""
    return spec.kind.check(spec, inst, text, **sandbox)
