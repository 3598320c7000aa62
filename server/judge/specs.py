"""The server's side of a spec's work in the judge (server/judge/spec_tasks.py runs it):
one function per task, plain data in and out. Raises JudgeError (``timeout``,
``memory`` with the stage the work was in, ...); a spec the engine refuses is
not an error here but a list of ``{"line", "message"}`` in the answer.

    from server.judge import get_spec_judge, specs
    answer = specs.check_text(get_spec_judge(), text, name="mlp.toml")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from server.judge import Judge, document_key, exchange, spec_parts


def check_text(judge: Judge, text: str, *, name: str = "<spec>", seeds: int | None = None,
               report: bool = False, draw_limit_s: float | None = None,
               parse_limit_s: float | None = None) -> dict[str, Any]:
    """``authoring.check_text`` in a judge process: ``{"refused", "meta", "report",
    "seconds"}`` (``refused`` empty: the text may become a version)."""
    message: dict[str, Any] = {"task": "spec.check", "text": text, "name": name,
                               "report": report, "draw_limit_s": draw_limit_s,
                               "parse_limit_s": parse_limit_s}
    if seeds is not None:
        message["seeds"] = seeds
    return exchange(judge, message, {})["result"]


def _spec_message(task: str, key: str, text: str, name: str, **fields: Any
                  ) -> tuple[dict, dict]:
    return ({"task": task, "spec": {"key": key}, **fields},
            {"spec": {"key": key, "text": text, "name": name}})


def preview(judge: Judge, key: str, text: str, seed: int, *, name: str = "<spec>",
            parse_limit_s: float | None = None) -> dict[str, Any]:
    """Seed ``seed`` of the spec ``text`` (its version ``key``): ``{"document", "solution",
    "meta", "refused"}`` (refused, too, if parsing the text took over ``parse_limit_s``)."""
    message, texts = _spec_message("spec.preview", key, text, name, seed=seed,
                                   parse_limit_s=parse_limit_s)
    return exchange(judge, message, texts)


def statistics(judge: Judge, key: str, text: str, seeds: int, *, name: str = "<spec>",
               parse_limit_s: float | None = None) -> dict[str, Any]:
    """``{"statistics": DrawStatistics.to_json() | None, "refused"}``."""
    message, texts = _spec_message("spec.statistics", key, text, name, seeds=seeds,
                                   parse_limit_s=parse_limit_s)
    return exchange(judge, message, texts)


def draw(judge: Judge, spec: Any, seed: int, *, timeout_s: float | None = None,
         memory_mb: int | None = None) -> dict[str, Any]:
    """A student's instance of ``spec`` for ``seed``: ``{"document"}`` (references
    included), or ``{"refused"}``; under the given limits."""
    key_part, text_part = spec_parts(spec)
    message = {"task": "draw", "spec": key_part, "seed": seed, "memory_mb": memory_mb}
    return exchange(judge, message, {"spec": text_part}, timeout_s=timeout_s)


def hidden(judge: Judge, spec: Any, document_json: str, seeds: Sequence[int], *,
           timeout_s: float | None = None, memory_mb: int | None = None) -> dict[str, Any]:
    """The hidden instances of a numpy answer: ``{"documents"}`` (one per seed, in
    order, references included), or ``{"refused"}``."""
    key_part, text_part = spec_parts(spec)
    document = {"key": document_key(document_json)}
    message = {"task": "hidden", "spec": key_part, "document": document,
               "seeds": [int(s) for s in seeds], "memory_mb": memory_mb}
    texts = {"spec": text_part, "document": {**document, "text": document_json}}
    return exchange(judge, message, texts, timeout_s=timeout_s)


