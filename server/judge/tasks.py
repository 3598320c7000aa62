"""What a judge process does: grade an equations or expression answer with the engine,
and the work of a TA's spec (``server.judge.spec_tasks``: check, preview, draw
statistics, a student's draw, numpy answers' hidden instances).

A ``grade`` message names the spec and the instance document by key (the
spec's version hash, a hash of the document) and carries their texts only
when the process asked for them (``{"status": "missing", ...}``): each judge
process parses a spec and builds an instance once, and keeps the most recent
ones, so a resubmission sends only the answer.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

CACHED_SPECS = 64
CACHED_INSTANCES = 256

_specs: OrderedDict[str, Any] = OrderedDict()
_instances: OrderedDict[tuple[str, str], Any] = OrderedDict()


def preload() -> None:
    """Imported once in the zygote, so that every judge process starts warm."""
    import numpy  # noqa: F401
    import sympy

    from server.engine import authoring, expression, grade, problem, spec  # noqa: F401
    from server.judge import spec_tasks  # noqa: F401

    # sympy builds some tables on first use: pay for them once, in the zygote
    x = sympy.Symbol("x", real=True)
    sympy.diff(sympy.log(x**2) * sympy.tanh(3 * x) / (1 + sympy.exp(-x)), x)


def _remember(cache: OrderedDict, key: Any, value: Any, size: int) -> Any:
    cache[key] = value
    while len(cache) > size:
        cache.popitem(last=False)
    return value


def spec_of(part: dict, *, refusing: bool = False) -> Any:
    """The spec a message names (``{"key", "text"?, "name"?}``): this process's parsed
    copy, else parsed from the text (and kept). None when the key is unknown and no
    text came (the server sends it on ``missing``). ``refusing``: a text that does
    not parse raises ``SpecRefusedHere`` (a TA's draft) rather than SpecError."""
    from server.engine.spec import SpecError, parse_spec

    key = str(part["key"])
    spec = _specs.get(key)
    if spec is not None:
        _specs.move_to_end(key)
        return spec
    if "text" not in part:
        return None
    try:
        spec = parse_spec(part["text"], str(part.get("name", "<spec>")))
    except SpecError as exc:
        if not refusing:
            raise
        raise SpecRefusedHere(exc.to_json()) from None
    if spec.version != key:
        raise ValueError(f"spec text has version {spec.version}, not {key}")
    return remember_spec(spec)


def remember_spec(spec: Any) -> Any:
    return _remember(_specs, spec.version, spec, CACHED_SPECS)


class SpecRefusedHere(Exception):
    """A spec text that does not parse: answered as ``refused`` with its issues."""

    def __init__(self, issues: list[dict]) -> None:
        self.issues = issues
        super().__init__(issues)


def instance_of(spec: Any, spec_key: str, part: dict) -> Any:
    """The engine instance of a document part (``{"key", "text"?}``), or None."""
    from server.engine.problem import instance_from_document

    key = (spec_key, str(part["key"]))
    instance = _instances.get(key)
    if instance is None and "text" in part:
        instance = _remember(_instances, key,
                             instance_from_document(spec, json.loads(part["text"])),
                             CACHED_INSTANCES)
    elif instance is not None:
        _instances.move_to_end(key)
    return instance


def grade(message: dict) -> dict:
    """``grade_answer``, or with ``"task": "check"`` ``check_answer`` (validation only)."""
    from server.engine.problem import check_answer, grade_answer

    spec_part, document_part = message["spec"], message["document"]
    missing = []
    spec = spec_of(spec_part)
    if spec is None:
        missing.append("spec")
    instance = None if spec is None else instance_of(spec, str(spec_part["key"]), document_part)
    if instance is None:
        missing.append("document")
    if missing:
        return {"status": "missing", "missing": missing}
    if message.get("task") == "check":
        result = check_answer(spec, instance, message["answer"])
    else:
        result = grade_answer(spec, instance, message["answer"],
                              hidden_seeds=tuple(int(s) for s in message.get("hidden_seeds", ())))
    return {"status": "ok", "result": result.to_json()}


def handle(message: dict, report: Any = None) -> dict:
    """Answer one message. ``report(frame)`` sends a frame before the answer (the
    engine's progress stages: the server names the last one if it stops us)."""
    task = message.get("task")
    if task in ("grade", "check"):
        return grade(message)
    if task == "ping":
        return {"status": "ok"}
    from server.judge import spec_tasks

    if task in spec_tasks.TASKS:
        return spec_tasks.handle(message, report)
    return {"status": "error", "message": f"unknown task {task!r}"}
