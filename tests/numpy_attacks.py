"""Hostile numpy answers of issue 8 §1, shared by tests/grading and tests/web.

Each builds the source a hostile student would submit; the tests check what
the grade (in-process, or through ``nabla serve``) lets out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np


def own_shapes(values: Mapping[str, object]) -> tuple:
    return tuple(np.shape(values[k]) for k in sorted(values))


def with_hidden_branch(model: str, own_values: Mapping[str, object], body: str, *,
                       prelude: str = "") -> str:
    """The model answer ``model``, except that on any instance other than the one
    with ``own_values`` (a hidden check: other shapes), ``body`` runs first, with
    the arguments in ``kw``."""
    indented = "\n".join("        " + line for line in body.strip("\n").splitlines())
    renamed = model.replace("def backward(", "def model_backward(")
    return (f"{renamed}\n{prelude}\nOWN = {own_shapes(own_values)!r}\n\n"
            "def backward(**kw):\n"
            "    if tuple(np.shape(kw[k]) for k in sorted(kw)) != OWN:\n"
            f"{indented}\n"
            "    return model_backward(**kw)\n")


def line_of(source: str, text: str) -> int:
    return next(n for n, line in enumerate(source.splitlines(), 1) if text in line)


# Walks the runner's frames upward from backward() and every object the garbage
# collector knows, collecting float arrays (and byte buffers read as float64)
# that are not its own arguments; raises them as its own instance's error.
HARVEST = """
import gc, sys
import numpy as np

def harvest(own):
    found, seen = [], set()

    def visit(value, depth=0):
        if id(value) in seen or depth > 3:
            return
        seen.add(id(value))
        if type(value) is np.ndarray and value.dtype.kind == "f" and value.size:
            if not any(value.shape == o.shape and np.array_equal(value, o) for o in own):
                key = [list(value.shape), [round(float(v), 4) for v in value.ravel()[:3]]]
                if key not in found:
                    found.append(key)
        elif isinstance(value, dict):
            for item in list(value.values()):
                visit(item, depth + 1)
        elif isinstance(value, list | tuple):
            for item in list(value):
                visit(item, depth + 1)
        elif isinstance(value, bytes | bytearray) and len(value) % 8 == 0 and len(value) > 8:
            visit(np.frombuffer(bytes(value), dtype="<f8"), depth + 1)

    frame = sys._getframe(1)
    while frame is not None:
        visit(dict(frame.f_locals))
        frame = frame.f_back
    for obj in gc.get_objects():
        visit(obj, 2)
    return found


def backward(**kw):
    found = harvest([v for v in kw.values() if type(v) is np.ndarray])
    raise ValueError("FOUND" + repr(found) + "END")
"""


_ENTRY = re.compile(r"\[\[(\d+(?:, \d+)*)\], \[(-?[\d.e+-]+(?:, -?[\d.e+-]+)*)\]\]")


def harvested(texts: list[str]) -> set[tuple[tuple[int, ...], tuple[float, ...]]]:
    """(shape, first values) of every array a HARVEST answer reported in ``texts``
    (also from a report cut short by the message limit)."""
    found: set = set()
    for text in texts:
        for report in text.split("FOUND[")[1:]:
            found |= {(tuple(int(d) for d in shape.split(", ")),
                       tuple(float(v) for v in values.split(", ")))
                      for shape, values in _ENTRY.findall(report)}
    return found


def arrays_of(values: Mapping[str, object]) -> set[tuple[tuple[int, ...], tuple[float, ...]]]:
    """The same (shape, first values) keys for an instance's inputs."""
    return {(value.shape, tuple(round(float(v), 4) for v in value.ravel()[:3]))
            for value in values.values() if isinstance(value, np.ndarray)}


# Sends the sandbox's own final frame claiming "invalid" (through the runner's
# send() if a frame holds it, and straight to the job socket), then exits: the
# free, unlimited run of issue 8.
FORGE = """
import json, os, struct, sys

def forge_done(message):
    done = {"k": "done", "s": "invalid", "m": message, "tb": ""}
    frame = sys._getframe(1)
    while frame is not None:
        if callable(frame.f_locals.get("send")):
            try:
                frame.f_locals["send"](done)
            except BaseException:
                pass
            break
        frame = frame.f_back
    head = json.dumps(done).encode()
    os.write(3, struct.pack("<4sIQ", b"NBR1", len(head), 0) + head)
    os._exit(0)
"""


def forge_everywhere() -> str:
    return f"{FORGE}\ndef backward(**kw):\n    forge_done('FORGED ' + repr(kw))\n"


def lookup_table(tables: list[tuple[np.ndarray, Mapping[str, np.ndarray]]]) -> str:
    """An answer that computes nothing: the gradients of each known ``x``, looked up."""
    rows = ",\n".join(f"    {tuple(np.round(x.ravel(), 6).tolist())!r}: "
                      f"{ {g: v.tolist() for g, v in grads.items()}!r}" for x, grads in tables)
    return ("import numpy as np\n\nTABLE = {\n" + rows + "\n}\n\n"
            "def backward(x, **kw):\n"
            "    row = TABLE.get(tuple(np.round(x.ravel(), 6).tolist()), {})\n"
            "    return {g: np.array(v) for g, v in row.items()}\n")
