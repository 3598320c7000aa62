"""Small helpers shared by the parsers of untrusted text."""

from __future__ import annotations

import ast


def depth_exceeds(node: ast.AST, limit: int) -> bool:
    """True if the syntax tree under ``node`` is nested deeper than ``limit``
    (iterative, so a hostile tree cannot exhaust the Python stack)."""
    stack = [(node, 1)]
    while stack:
        n, d = stack.pop()
        if d > limit:
            return True
        stack.extend((c, d + 1) for c in ast.iter_child_nodes(n))
    return False
