"""Grades equations and expression answers, and does a spec's work (``specs``: checks,
previews, a student's draws), in killable processes; knows nothing about the web or
the database.

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

from server.judge.pool import Judge, JudgeError, Zygote

__all__ = ["Judge", "JudgeError", "document_key", "exchange", "get_judge", "get_spec_judge",
           "grade", "prestart"]

_zygote: Zygote | None = None
_pools: dict[str, Judge] = {}  # "grading" and "spec": this process's pools
_instance_lock = threading.Lock()


def _pool(name: str) -> Judge:
    """This process's pool ``name``, made on first use from the zygote they share."""
    global _zygote
    judge = _pools.get(name)
    if judge is None:
        from server.config import judge_settings, spec_judge_settings

        settings = {"grading": judge_settings, "spec": spec_judge_settings}[name]
        with _instance_lock:
            judge = _pools.get(name)
            if judge is None:
                if _zygote is None:
                    _zygote = Zygote()
                    atexit.register(_zygote.close)  # after the pools (atexit runs LIFO)
                judge = _pools[name] = Judge(**settings(), zygote=_zygote)
                atexit.register(judge.close)
    return judge


def get_judge() -> Judge:
    """This process's grading pool, with the settings of ``server.config.judge_settings``."""
    return _pool("grading")


def get_spec_judge() -> Judge:
    """This process's pool for a spec's work (``server.config.spec_judge_settings``: its
    own processes, time and memory limits, at a lower priority), forked from the same
    zygote as the grading pool."""
    return _pool("spec")


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
    global _zygote, _instance_lock
    _instance_lock = threading.Lock()
    for judge in _pools.values():
        judge.forget()
    _pools.clear()
    if _zygote is not None:
        _zygote.forget()
    _zygote = None


os.register_at_fork(after_in_child=_after_fork_in_child)


def document_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def exchange(judge: Judge, message: dict, texts: dict[str, dict], *,
             timeout_s: float | None = None) -> dict:
    """``judge.call(message)``, sending the parts the judge process asks for: on
    ``{"status": "missing", "missing": [part, ...]}`` the message goes again with
    ``texts[part]`` in place of the part (keys only), in the same exchange and under
    the same deadline. Raises JudgeError, also for an answer that is not ``ok``."""
    rounds = 0

    def follow(reply: dict) -> dict | None:
        nonlocal rounds
        if reply.get("status") != "missing" or rounds >= len(texts):
            return None
        rounds += 1  # each round sends at least one more part: the count is bounded
        for part in reply.get("missing", []):
            if part in texts:
                message[part] = texts[part]
        return message

    reply = judge.call(message, follow=follow, timeout_s=timeout_s)
    if reply.get("status") != "ok":
        raise JudgeError("error", f"unexpected answer from the judge: {reply.get('status')!r}")
    return reply


def spec_parts(spec: Any) -> tuple[dict, dict]:
    """(the key part, the text part) that name a parsed spec in a message."""
    return {"key": spec.version}, {"key": spec.version, "text": spec.source, "name": spec.path}


def grade(judge: Judge, spec: Any, document_json: str, answer: str,
          hidden_seeds: Sequence[int] = (), *, task: str = "grade") -> dict:
    """``grade_answer(spec, instance, answer, hidden_seeds=...)`` in a judge process;
    returns ``GradeResult.to_json()``. Raises JudgeError (``timeout``, ``memory``, ...).
    With ``task="check"``: ``check_answer`` (parse and shapes only, no verdicts)."""
    key_part, text_part = spec_parts(spec)
    document = {"key": document_key(document_json)}
    message = {"task": task, "spec": key_part, "document": document, "answer": answer,
               "hidden_seeds": [int(s) for s in hidden_seeds]}
    reply = exchange(judge, message, {"spec": text_part,
                                      "document": {**document, "text": document_json}})
    if not isinstance(reply.get("result"), dict):
        raise JudgeError("error", "unexpected answer from the judge: no result")
    return reply["result"]
