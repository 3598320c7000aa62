"""A graded submission's verdicts in queryable form (the ``submission_verdicts`` table),
so that a class's mistakes are a GROUP BY (services.analytics), not a loop over
result JSON.

``record_verdicts`` is called where a result is recorded (services.grading's
record step, and a regrade's apply step): it replaces the submission's rows with
one per asked gradient when the submission is graded, and deletes them
otherwise. Migration 0008 fills the table from the stored results with
``verdict_rows``.

The first mistake of an equations answer is its first line judged wrong (not
one only carried wrong by an earlier line): its line number, the step of the
model solution that writes the same gradient (so that students who number
their lines differently are counted together), the target, and the line's text
normalised (numbering, comments and whitespace removed).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from server.models import Instance, ProblemVersion, Submission, SubmissionStatus
from server.models.verdict import SubmissionVerdict

MAX_TEXT = 200
_NUMBERING = re.compile(r"^\s*\d+\s*[.)]")
_INDEX = re.compile(r"[\[(].*$")


def normalise_line(text: str) -> str:
    """``"5.  dW2 = z3 @ dz4  # hm"`` → ``"dW2=z3@dz4"``."""
    text = _NUMBERING.sub("", text.split("#", 1)[0])
    return "".join(text.split())[:MAX_TEXT]


def bare_target(target: str) -> str:
    """``"dz1[2]"`` or ``"dX[:, 0:3]"`` → ``"dz1"``."""
    return _INDEX.sub("", target).strip()


def first_mistake(result: Mapping[str, Any], answer: str) -> dict[str, Any] | None:
    """The first wrong line of an equations result (line, target, text), or None."""
    wrong = [e for e in result.get("equations", [])
             if e.get("verdict") != "correct" and not e.get("rule_correct")]
    if not wrong:
        return None
    first = min(wrong, key=lambda e: int(e.get("line") or 0))
    line = int(first.get("line") or 0)
    lines = answer.split("\n")
    text = normalise_line(lines[line - 1]) if 1 <= line <= len(lines) else ""
    return {"line": line, "target": bare_target(str(first.get("target", "")))[:64],
            "text": text}


def verdict_rows(submission_id: int, user_id: int, assignment_problem_id: int,
                 result: Mapping[str, Any], answer: str,
                 steps: Mapping[str, int] | None) -> list[dict[str, Any]]:
    """The table's rows for one graded result (plain dicts, for insert())."""
    mistake = first_mistake(result, answer)
    common = {"submission_id": submission_id, "user_id": user_id,
              "assignment_problem_id": assignment_problem_id,
              "first_line": None, "first_step": None, "first_target": None,
              "first_text": None}
    if mistake is not None:
        common.update(first_line=mistake["line"], first_target=mistake["target"],
                      first_text=mistake["text"],
                      first_step=(steps or {}).get(mistake["target"]))
    return [{**common, "gradient": str(name)[:64], "position": position,
             "verdict": str((item or {}).get("verdict", "unknown"))[:32]}
            for position, (name, item) in enumerate(result.get("gradients", {}).items())]


# --- the model solution's step of each gradient ------------------------------------

_STEPS: dict[tuple[str, str], dict[str, int]] = {}
_STEPS_LOCK = threading.Lock()
_STEPS_SIZE = 256


def model_steps(spec_text: str, spec_hash: str, choices_json: str) -> dict[str, int]:
    """gradient name → the number of the model solution's first line writing it,
    for one version and one structural choice (cached per process). Empty when the
    stored spec no longer parses or is not an equations problem."""
    key = (spec_hash, choices_json)
    with _STEPS_LOCK:
        if key in _STEPS:
            return _STEPS[key]
    steps = _compute_steps(spec_text, choices_json)
    with _STEPS_LOCK:
        if len(_STEPS) >= _STEPS_SIZE:
            _STEPS.clear()
        _STEPS[key] = steps
    return steps


def _compute_steps(spec_text: str, choices_json: str) -> dict[str, int]:
    from server.engine.kinds import kind_of
    from server.engine.solution import model_lines
    from server.engine.spec import parse_spec

    try:
        spec = parse_spec(spec_text)
        if not kind_of(spec).numbered_steps:
            return {}
        choices = json.loads(choices_json or "{}")
        index = tuple(next((i for i, (label, _) in enumerate(options)
                            if label == choices.get(name)), 0)
                      for name, options in spec.choices.items())
        steps: dict[str, int] = {}
        for number, line in enumerate(model_lines(spec, spec.program(index)), 1):
            steps.setdefault(line.target, number)
        return steps
    except Exception:  # an old spec the engine no longer reads: no step numbers
        return {}


# --- writing -----------------------------------------------------------------------


def record_verdicts(session: Session, submission: Submission, *, first: bool = False) -> None:
    """Make the submission's rows match its status and result (flush only). ``first``:
    its first verdict, recorded as it leaves ``pending`` (no row has one before: a
    submission never returns to pending), so there are no rows to delete."""
    if not first:
        session.execute(delete(SubmissionVerdict).where(
            SubmissionVerdict.submission_id == submission.id))
    result = submission.result
    if submission.status != SubmissionStatus.GRADED or not isinstance(result, dict):
        return
    steps = None
    if first_mistake(result, submission.answer) is not None:
        row = session.execute(
            select(ProblemVersion.spec_text, ProblemVersion.spec_hash, Instance.choices_json)
            .join(Instance, Instance.problem_version_id == ProblemVersion.id)
            .where(Instance.id == submission.instance_id)).first()
        if row is not None:
            steps = model_steps(*row)
    rows = verdict_rows(submission.id, submission.user_id, submission.assignment_problem_id,
                        result, submission.answer, steps)
    if rows:  # the table's INSERT (executemany), not the ORM's bulk path: plain rows
        session.execute(insert(SubmissionVerdict.__table__), rows)
