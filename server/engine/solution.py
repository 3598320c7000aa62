"""Model backward programs, derived from the forward program.

One rule per line, from the last forward step to the first, in the answer
language of docs/design.md section 5: ``=`` the first time a gradient is written,
``+=`` when a value is used more than once, and a loop mirroring each forward
loop (shared parameters and slices always accumulate with ``+=`` inside it).

``model_lines`` gives the program as data (which step and operand each line
comes from), which is what the mutant generator (engine.mutants) edits;
``model_solution`` renders it as text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from server.engine.dimexpr import Lin
from server.engine.ops import rule_text
from server.engine.program import Loop, Program, Step

if TYPE_CHECKING:
    from server.engine.spec import ProblemSpec


@dataclass(frozen=True)
class ModelLine:
    """One line of the model backward program."""

    loop: Loop | None  # the loop the line is in
    target: str  # the gradient written, e.g. "dz5" (no step index, no slice)
    indexed: bool  # the target has one value per loop step (dz5[t])
    suffix: str  # written after the target: "", "[t]" or a slice "[:, t:t + N]"
    # a slice target's region in the gradient's own (layout) shape: ((row lo, hi), (col lo, hi))
    region: tuple[tuple[Lin, Lin], tuple[Lin, Lin]] | None
    op: str  # "=" or "+="
    rhs: str
    step: Step  # the forward step whose rule this is
    arg: int  # which operand of that step the gradient flows into

    @property
    def statement(self) -> str:
        return f"{self.target}{self.suffix} {self.op} {self.rhs}"


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


def model_lines(spec: ProblemSpec, program: Program) -> list[ModelLine]:
    need = needs_gradient(spec, program)
    numerator = spec.layout == "numerator"
    lines: list[ModelLine] = []
    assigned: set[str] = set()

    def emit_step(step: Step, loop: Loop | None, in_loop_assigned: set[str] | None) -> None:
        loop_var = loop.var if loop else None
        z = _name(step.target, step.indexed, loop_var)
        dz = "d" + z
        names = [a.text(loop_var) for a in step.args]
        for i, a in enumerate(step.args):
            if a.name is None or a.name not in need:
                continue
            suffix, rhs = rule_text(step.op, i, dz, names, z, spec.layout, step.region_text)
            region = None
            if suffix:
                op = "+="  # slices of a shared variable overlap across steps
                region = step.region[::-1] if numerator else step.region
            else:
                suffix = f"[{loop_var}]" if a.indexed else ""
                if in_loop_assigned is not None and not a.indexed:
                    op = "+="  # shared across loop steps
                else:
                    scope = in_loop_assigned if (in_loop_assigned is not None) else assigned
                    op = "+=" if a.name in scope else "="
                    scope.add(a.name)
            assigned.add(a.name)
            lines.append(ModelLine(loop, "d" + a.name, a.indexed, suffix, region, op, rhs, step, i))

    for item in reversed(program.items):
        if isinstance(item, Loop):
            per_step: set[str] = set()
            for step in reversed(item.body):
                emit_step(step, item, per_step)
        else:
            emit_step(item, None, None)
    return lines


def render_lines(lines: Sequence[ModelLine], *, numbered: bool = True) -> str:
    """The text of a backward program: loop headers, numbered statements."""
    out = []
    loop = None
    for number, line in enumerate(lines, 1):
        if line.loop is not None and line.loop is not loop:
            out.append(line.loop.header)
        loop = line.loop
        indent = "    " if line.loop is not None else ""
        out.append(indent + (f"{number}. {line.statement}" if numbered else line.statement))
    return "\n".join(out)


def model_solution(spec: ProblemSpec, program: Program, *, numbered: bool = True) -> str:
    return render_lines(model_lines(spec, program), numbered=numbered)


def _name(name: str, indexed: bool, loop_var: str | None) -> str:
    return f"{name}[{loop_var}]" if indexed else name
