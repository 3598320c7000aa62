"""What a student (or the staff) is told about a submission: the API's summary and the
feedback page's annotated lines, from the stored result JSON. No database work."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from server.models import Submission, SubmissionStatus
from server.services.grading import INTERNAL_ERROR


def submission_summary(submission: Submission, attempts_left: int | None) -> dict[str, Any]:
    """A submission as the API returns it (and the feedback page shows it).

    The grading fields have the shape of ``nabla grade --json`` (``valid``,
    ``errors``, ``equations``, ``gradients``); ``score`` is the credited score
    (late credit applied), ``raw_score`` the grader's.
    """
    result = submission.result or {}
    message = {
        SubmissionStatus.PENDING: "stored; being graded",
        SubmissionStatus.GRADED: "graded",
        SubmissionStatus.INVALID: "not a valid answer: it costs no attempt",
        SubmissionStatus.ERROR: result.get("error", INTERNAL_ERROR),
        SubmissionStatus.REFUSED: result.get("refused", "refused"),
    }.get(SubmissionStatus(submission.status), submission.status)
    ap = submission.assignment_problem
    return {
        "id": submission.id,
        "assignment": ap.assignment_id,
        "problem": ap.problem_id,
        "status": submission.status,
        "message": message,
        "attempt": submission.attempt,
        "attempts_left": attempts_left,
        "late": submission.late,
        "score": submission.score,
        "raw_score": result.get("score") if submission.status == SubmissionStatus.GRADED else None,
        "credit": result.get("credit"),
        "created_at": submission.created_at.isoformat(),
        "graded_at": None if submission.graded_at is None else submission.graded_at.isoformat(),
        "answer": submission.answer,
        "valid": result.get("valid"),
        "errors": result.get("errors", []),
        "equations": result.get("equations", []),
        "gradients": result.get("gradients", {}),
    }


VERDICT_MARKS = {"correct": "✓", "carried": "✗", "wrong": "✗"}


def annotated_lines(answer: str, result: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Every line of an answer with its verdict: ``correct``, ``wrong``, ``carried``
    (right rule, value wrong because of an earlier line) or None (nothing to judge),
    and the messages for it (deduplicated; loop bodies are judged once per step)."""
    result = result or {}
    by_line: dict[int, list[dict[str, Any]]] = {}
    for item in result.get("equations", []):
        by_line.setdefault(int(item.get("line", 0)), []).append(item)
    errors: dict[int, list[str]] = {}
    for error in result.get("errors", []):
        errors.setdefault(int(error.get("line", 0)), []).append(error.get("message", ""))
    lines = []
    for number, text in enumerate(answer.split("\n"), 1):
        items = by_line.get(number, [])
        messages: list[str] = []
        verdict = None
        if errors.get(number):
            verdict = "wrong"
            messages.extend(errors[number])
        elif items:
            wrong = [i for i in items if i.get("verdict") != "correct"]
            if not wrong:
                verdict = "correct"
            elif all(i.get("rule_correct") for i in wrong):
                verdict = "carried"
            else:
                verdict = "wrong"
            # A loop body is judged once per step: one message, with its targets.
            targets: dict[str, list[str]] = {}
            for item in wrong:
                message = item.get("message") or item.get("verdict", "")
                names = targets.setdefault(message, [])
                if str(item.get("target", "")) not in names:
                    names.append(str(item.get("target", "")))
            for message, names in targets.items():
                labelled = len({str(i.get("target", "")) for i in items}) > 1
                messages.append(f"{', '.join(names)}: {message}" if labelled else message)
        lines.append({"number": number, "text": text, "verdict": verdict,
                      "mark": VERDICT_MARKS.get(verdict or "", ""), "messages": messages})
    return lines


def general_errors(result: Mapping[str, Any] | None, answer: str = "") -> list[str]:
    """Messages not tied to a line of the answer (line 0, or past its end)."""
    count = len(answer.split("\n"))
    return [e.get("message", "") for e in (result or {}).get("errors", [])
            if not 1 <= int(e.get("line", 0)) <= count]
