"""Model backward programs, derived from the forward program.

One rule per line, from the last forward step to the first, in the answer
language of DESIGN.md section 5: ``=`` the first time a gradient is written,
``+=`` when a value is used more than once, and a loop mirroring each forward
loop (shared parameters and slices always accumulate with ``+=`` inside it).
"""

from __future__ import annotations

from server.engine.ops import rule_text
from server.engine.spec import Loop, ProblemSpec, Program, Step


def needs_gradient(spec: ProblemSpec, program: Program) -> set[str]:
    """Variables whose gradient the model program writes: the asked ones and
    every intermediate between an asked variable and the given one."""
    deps: dict[str, set[str]] = {}
    for step, _ in program.steps():
        deps.setdefault(step.target, set()).update(a.name for a in step.args if a.name)
    asked = set(program.ask)

    def depends_on_asked(name: str, seen: set[str]) -> bool:
        for d in deps.get(name, ()):
            if d in asked or (d not in seen and (seen.add(d) or depends_on_asked(d, seen))):
                return True
        return False

    out = set(asked)
    for name in program.intermediates:
        if name in program.influencing and name != spec.given and depends_on_asked(name, set()):
            out.add(name)
    return out


def model_solution(spec: ProblemSpec, program: Program, *, numbered: bool = True) -> str:
    need = needs_gradient(spec, program)
    lines: list[tuple[int, str]] = []  # (indent, text)
    assigned: set[str] = set()

    def emit_step(step: Step, loop_var: str | None, indent: int, in_loop_assigned: set[str] | None) -> None:
        z = _name(step.target, step.indexed, loop_var)
        dz = "d" + z
        names = [a.text(loop_var) for a in step.args]
        for i, a in enumerate(step.args):
            if a.name is None or a.name not in need:
                continue
            suffix, rhs = rule_text(step.op, i, dz, names, z, spec.layout, step.region_text)
            target = "d" + _name(a.name, a.indexed, loop_var)
            if suffix:
                op = "+="  # slices of a shared variable overlap across steps
                target = "d" + a.name + suffix
            elif in_loop_assigned is not None and not a.indexed:
                op = "+="  # shared across loop steps
            else:
                scope = in_loop_assigned if (in_loop_assigned is not None) else assigned
                op = "+=" if a.name in scope else "="
                scope.add(a.name)
            assigned.add(a.name)
            lines.append((indent, f"{target} {op} {rhs}"))

    for item in reversed(program.items):
        if isinstance(item, Loop):
            lines.append((0, item.header))
            per_step: set[str] = set()
            for step in reversed(item.body):
                emit_step(step, item.var, 4, per_step)
        else:
            emit_step(item, None, 0, None)

    out = []
    number = 0
    for indent, text in lines:
        if text.startswith("for "):
            out.append(" " * indent + text)
            continue
        number += 1
        out.append(" " * indent + (f"{number}. {text}" if numbered else text))
    return "\n".join(out)


def _name(name: str, indexed: bool, loop_var: str | None) -> str:
    return f"{name}[{loop_var}]" if indexed else name
