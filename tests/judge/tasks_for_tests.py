"""A tasks module for tests of the judge: the real grader, plus answers that
misbehave on purpose. A grade message whose answer is ``#test:ACTION`` runs
ACTION instead of grading:

- ``sleep``: time.sleep for a minute (a wait the wall clock must cut);
- ``regex``: catastrophic backtracking in the re module, a C loop that never
  releases the GIL or looks at signals;
- ``tower``: the sympy/mpmath evaluation of exp(exp(exp(exp(exp(x))))) at a point,
  the loop of issue 8 (it never finishes);
- ``allocate``: allocate 64 MB at a time until memory runs out;
- ``crash``: the process kills itself with SIGSEGV;
- ``raise``: an exception, as an engine bug would;
- ``thread``: leave a thread running (the process must be replaced);
- ``pid``: answer with the judge process's pid.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time

from server.judge import tasks as real_tasks


def preload() -> None:
    real_tasks.preload()


def _tower() -> None:
    import sympy

    x = sympy.Symbol("x")
    expr = sympy.exp(sympy.exp(sympy.exp(sympy.exp(sympy.exp(x)))))
    expr.evalf(30, subs={x: sympy.Float("1.7", 30)})


def _allocate() -> None:
    blocks = []
    while True:
        blocks.append(bytearray(64 << 20))


ACTIONS = {
    "sleep": lambda: time.sleep(60),
    "regex": lambda: re.match(r"(a+)+$", "a" * 60 + "b"),
    "tower": _tower,
    "allocate": _allocate,
    "crash": lambda: os.kill(os.getpid(), signal.SIGSEGV),
    "raise": lambda: (_ for _ in ()).throw(RuntimeError("engine bug")),
    "thread": lambda: threading.Thread(target=time.sleep, args=(30,), daemon=True).start(),
}


def handle(message: dict, report=None) -> dict:
    answer = str(message.get("answer", ""))
    if message.get("task") == "grade" and answer.startswith("#test:"):
        action = answer[len("#test:"):]
        if action == "pid":
            return {"status": "pid", "pid": os.getpid()}
        ACTIONS[action]()
        return {"status": "ok", "result": {"valid": True, "score": 0.0, "errors": [],
                                           "equations": [], "gradients": {}}}
    return real_tasks.handle(message, report)
