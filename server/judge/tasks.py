"""What a judge process does: grade an equations or expression answer with the engine.

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

    from server.engine import expression, grade, problem, spec  # noqa: F401

    # sympy builds some tables on first use: pay for them once, in the zygote
    x = sympy.Symbol("x", real=True)
    sympy.diff(sympy.log(x**2) * sympy.tanh(3 * x) / (1 + sympy.exp(-x)), x)


def _remember(cache: OrderedDict, key: Any, value: Any, size: int) -> Any:
    cache[key] = value
    while len(cache) > size:
        cache.popitem(last=False)
    return value


def grade(message: dict) -> dict:
    """``grade_answer``, or with ``"task": "check"`` ``check_answer`` (validation only)."""
    from server.engine.problem import check_answer, grade_answer, instance_from_document
    from server.engine.spec import parse_spec

    spec_part, document_part = message["spec"], message["document"]
    spec_key, document_key = str(spec_part["key"]), str(document_part["key"])
    missing = []
    spec = _specs.get(spec_key)
    if spec is None and "text" in spec_part:
        spec = parse_spec(spec_part["text"], str(spec_part.get("name", "<spec>")))
        if spec.version != spec_key:
            raise ValueError(f"spec text has version {spec.version}, not {spec_key}")
        _remember(_specs, spec_key, spec, CACHED_SPECS)
    if spec is None:
        missing.append("spec")
    instance = _instances.get((spec_key, document_key))
    if instance is None and "text" in document_part:
        if spec is not None:
            instance = _remember(_instances, (spec_key, document_key),
                                 instance_from_document(spec, json.loads(document_part["text"])),
                                 CACHED_INSTANCES)
    if instance is None:
        missing.append("document")
    if missing:
        return {"status": "missing", "missing": missing}
    _specs.move_to_end(spec_key)
    _instances.move_to_end((spec_key, document_key))
    if message.get("task") == "check":
        result = check_answer(spec, instance, message["answer"])
    else:
        result = grade_answer(spec, instance, message["answer"],
                              hidden_seeds=tuple(int(s) for s in message.get("hidden_seeds", ())))
    return {"status": "ok", "result": result.to_json()}


def handle(message: dict) -> dict:
    task = message.get("task")
    if task in ("grade", "check"):
        return grade(message)
    if task == "ping":
        return {"status": "ok"}
    return {"status": "error", "message": f"unknown task {task!r}"}
