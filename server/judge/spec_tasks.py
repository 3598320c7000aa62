"""The work of a spec, in a judge process (server/judge/tasks.py hands these over).

A TA's spec is untrusted input (docs/judge.md, "A spec's work"): parsing it, drawing
from it, verifying its references by finite differences and grading its model
solution all happen here, under the judge's wall-clock and memory limits, never
in a web worker. Each message names what it works on; the answers are plain
JSON (never pickle):

``spec.check``       ``{"text", "name", "seeds", "report", "draw_limit_s", "parse_limit_s"}``
                     -> ``{"result": CheckResult.to_json()}`` (refusals at their lines)
``spec.preview``     ``{"spec", "seed"}`` -> ``{"document", "solution", "meta"}`` or ``refused``
``spec.statistics``  ``{"spec", "seeds"}`` -> ``{"statistics"}`` or ``refused``
``draw``             ``{"spec", "seed"}`` -> ``{"document"}`` (a student's instance) or ``refused``
``hidden``           ``{"spec", "document", "seeds"}`` -> ``{"documents"}`` (a numpy
                     answer's hidden instances)

``spec`` is ``{"key", "text"?, "name"?}`` as for grading: a process that has not
parsed that version answers ``missing`` and gets the text. While it works, the
process sends ``{"progress": stage}`` frames (``server.engine.progress``), so
that a task stopped at its deadline is reported with what it was doing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

TASKS = ("spec.check", "spec.preview", "spec.statistics", "draw", "hidden")


def handle(message: dict, report: Callable[[dict], None] | None) -> dict:
    from server.engine import progress

    if report is None:
        return _dispatch(message)
    with progress.listening(lambda stage: report({"progress": stage})):
        return _dispatch(message)


def _dispatch(message: dict) -> dict:
    from server.engine import authoring
    from server.engine.instance import InstanceError
    from server.judge.tasks import SpecRefusedHere, instance_of, remember_spec, spec_of

    task = message["task"]
    if task == "spec.check":
        result = authoring.check_text(
            str(message["text"]), str(message.get("name", "<spec>")),
            seeds=int(message.get("seeds", authoring.CHECK_SEEDS)),
            report=bool(message.get("report")),
            draw_limit_s=_optional_float(message.get("draw_limit_s")),
            parse_limit_s=_optional_float(message.get("parse_limit_s")))
        if result.spec is not None and not result.refused:
            remember_spec(result.spec)  # the preview or the save that follows finds it
        return {"status": "ok", "result": result.to_json()}
    started = time.perf_counter()
    try:
        spec = spec_of(message["spec"], refusing=True)
    except SpecRefusedHere as exc:
        return {"status": "ok", "refused": exc.issues}
    if spec is None:
        return {"status": "missing", "missing": ["spec"]}
    parsed = time.perf_counter() - started  # ~0 when this process had parsed it before
    limit = _optional_float(message.get("parse_limit_s"))
    if limit is not None and parsed > limit:
        return {"status": "ok", "refused": [{"line": None, "message": (
            f"parsing this spec took {parsed:.1f} s; the limit is {limit:g} s (every server "
            "parses a spec to show it): use fewer choices or lines")}]}
    if task == "spec.preview":
        document, solution, refused = authoring.preview_document(spec, int(message["seed"]))
        return {"status": "ok", "document": document, "solution": solution,
                "meta": authoring.meta(spec), "refused": [r.to_json() for r in refused]}
    if task == "spec.statistics":
        stats, refused = authoring.draw_statistics(
            spec, int(message.get("seeds", authoring.STATISTICS_SEEDS)))
        return {"status": "ok", "statistics": None if stats is None else stats.to_json(),
                "refused": [r.to_json() for r in refused]}
    try:
        if task == "draw":
            return {"status": "ok",
                    "document": authoring.student_document(spec, int(message["seed"]))}
        instance = instance_of(spec, str(message["spec"]["key"]), message["document"])
        if instance is None:
            return {"status": "missing", "missing": ["document"]}
        return {"status": "ok", "documents": authoring.hidden_documents(
            spec, instance, [int(s) for s in message["seeds"]])}
    except InstanceError as exc:
        return {"status": "ok", "refused": [{"line": None, "message": str(exc)}]}


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
