"""What the engine is doing right now, for whoever listens: the judge names it when a
spec's work is stopped at its deadline.

The engine calls ``stage("the finite-difference check of W (100×100), seed 3")``
before each costly part of checking a spec (parsing, each draw, its
finite-difference check, the mutant calibration, grading the model solution).
Nobody listens by default, and a stage then costs one lookup. A judge process
listens (``listening(send)``) and sends each stage to the server as it starts,
so that a process killed at its deadline is still known to have been in the
middle of that stage: "drawing and verifying this spec took more than 10 s:
the finite-difference check of W (100×100), seed 3". Pure: stdlib only.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

_listener: contextvars.ContextVar[Callable[[str], None] | None] = contextvars.ContextVar(
    "nabla_engine_progress", default=None)


def stage(text: str) -> None:
    """Say that the engine starts ``text`` (a phrase that completes "took too long: ...")."""
    listener = _listener.get()
    if listener is not None:
        listener(text)


@contextlib.contextmanager
def listening(listener: Callable[[str], None]) -> Iterator[None]:
    """Call ``listener(text)`` at every stage started inside the block (this thread)."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)
