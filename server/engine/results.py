"""Results are values: what grading returns, for every answer kind, and the one score.

A ``GradeResult`` is serialized with ``to_json`` for storage, ``nabla grade
--json`` and the API (the README documents the shape).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

VERDICTS = (
    "correct", "incorrect", "transposed", "wrong_layout", "wrong_shape", "sign",
    "missing_accumulation", "missing", "invalid",
)


@dataclass(frozen=True)
class LineResult:
    line: int
    target: str
    verdict: str
    rule_correct: bool | None
    message: str

    def to_json(self) -> dict:
        return {
            "line": self.line, "target": self.target, "verdict": self.verdict,
            "rule_correct": self.rule_correct, "message": self.message,
        }


@dataclass(frozen=True)
class GradientResult:
    verdict: str
    message: str = ""

    def to_json(self) -> dict:
        return {"verdict": self.verdict, "message": self.message}


@dataclass(frozen=True)
class GradeResult:
    valid: bool
    score: float
    errors: list[dict] = field(default_factory=list)  # {"line", "message"}
    equations: list[LineResult] = field(default_factory=list)
    gradients: dict[str, GradientResult] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "valid": self.valid,
            "score": self.score,
            "errors": list(self.errors),
            "equations": [e.to_json() for e in self.equations],
            "gradients": {k: v.to_json() for k, v in self.gradients.items()},
        }


def invalid(errors: list[dict]) -> GradeResult:
    return GradeResult(valid=False, score=0.0, errors=errors)


def weighted_score(gradients: Mapping[str, GradientResult], weights: Mapping[str, float]) -> float:
    """The score of every answer kind: the weighted share of the asked
    gradients (keys "d<var>") that are correct, with the spec's ``[weights]``
    per variable (default 1) on both the points earned and the total, so it
    is never above 1."""
    total = sum(weights.get(g[1:], 1.0) for g in gradients)
    earned = sum(weights.get(g[1:], 1.0) for g, v in gradients.items() if v.verdict == "correct")
    return round(min(earned / total, 1.0), 6) if total > 0 else 0.0
