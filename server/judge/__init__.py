"""Grades equations and expression answers in killable processes; knows nothing
about the web or the database.

    from server.judge import get_judge, grade, JudgeError
    result_json = grade(get_judge(), spec, document_json, answer, hidden_seeds)

No student code runs here (numpy answers go to ``server.sandbox``), but our
own parsers and evaluators run on what a student typed, and sympy or numpy
can be made to loop in C code or to allocate without bound. So grading runs
in a pool of judge processes forked from a zygote that already imported
numpy, sympy and the engine, each under a memory limit, and the server kills
one that misses its deadline and forks another. See docs/judge.md.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import threading
from collections.abc import Sequence
from typing import Any

from server.judge.pool import Judge, JudgeError

__all__ = ["Judge", "JudgeError", "document_key", "get_judge", "grade", "prestart"]

_instance: Judge | None = None
_instance_lock = threading.Lock()


def get_judge() -> Judge:
    """This process's judge, with the settings of ``server.config.judge_settings``."""
    global _instance
    if _instance is None:
        from server.config import judge_settings

        with _instance_lock:
            if _instance is None:
                _instance = Judge(**judge_settings())
                atexit.register(_instance.close)
    return _instance


def prestart() -> threading.Thread:
    """Start this process's judge in the background (the zygote's imports take a
    second or two), so that the first submission does not wait for them."""

    def start() -> None:
        try:
            get_judge().start()
        except JudgeError:
            pass  # the first submission will try again, and say why

    thread = threading.Thread(target=start, name="nabla-judge-start", daemon=True)
    thread.start()
    return thread


def _after_fork_in_child() -> None:
    global _instance, _instance_lock
    _instance_lock = threading.Lock()
    if _instance is not None:
        _instance.forget()
        _instance = None


os.register_at_fork(after_in_child=_after_fork_in_child)


def document_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def grade(judge: Judge, spec: Any, document_json: str, answer: str,
          hidden_seeds: Sequence[int] = (), *, task: str = "grade") -> dict:
    """``grade_answer(spec, instance, answer, hidden_seeds=...)`` in a judge process;
    returns ``GradeResult.to_json()``. Raises JudgeError (``timeout``, ``memory``, ...).
    With ``task="check"``: ``check_answer`` (parse and shapes only, no verdicts)."""
    message = {
        "task": task,
        "spec": {"key": spec.version},
        "document": {"key": document_key(document_json)},
        "answer": answer,
        "hidden_seeds": [int(s) for s in hidden_seeds],
    }
    sent_texts = False

    def follow(reply: dict) -> dict | None:
        nonlocal sent_texts
        if reply.get("status") != "missing" or sent_texts:
            return None
        sent_texts = True  # sent once: a second "missing" is an error below
        missing = reply.get("missing", [])
        if "spec" in missing:
            message["spec"] = {"key": spec.version, "text": spec.source, "name": spec.path}
        if "document" in missing:
            message["document"] = {"key": message["document"]["key"], "text": document_json}
        return message

    reply = judge.call(message, follow=follow)
    if reply.get("status") != "ok" or not isinstance(reply.get("result"), dict):
        raise JudgeError("error", f"unexpected answer from the judge: {reply.get('status')!r}")
    return reply["result"]
