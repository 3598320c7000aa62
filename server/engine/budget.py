"""The budget of a spec: how much work a spec may ask of the server, checked before
anything is drawn.

A TA's spec is untrusted input: its dims decide the size of every array, its
loops the number of steps, its choices the number of programs compiled and
calibrated, its constants the size of the numbers an expression reaches. Every
limit here is checked on the text, the TOML or the compiled programs, with the
largest dims the ranges allow, before the first value is drawn; each refusal
names the line and the limit. The limits are generous for a course problem
(the bank's largest uses a tenth of each; docs/authoring.md lists them) and
keep the costliest accepted spec within seconds and a few hundred megabytes of
the judge's work. What the budget cannot see (a costly expression) is stopped
by the judge's time and memory limits (docs/judge.md).

Pure: stdlib only (and the engine's own types).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from server.engine.dimexpr import Lin, max_over
from server.engine.program import Loop, Program, SpecIssue

MAX_SPEC_CHARS = 100_000
MAX_TOML_DEPTH = 16  # arrays and inline tables nested in one another
MAX_FORWARD_LINES = 200
MAX_DIM = 32  # the largest value of any dim
MAX_CONSTANT = 100  # |value| of an expression problem's constant (it may be an exponent)
MAX_CHOICE_COMBINATIONS = 256
MAX_COMPILED_LINES = 5_000  # choice combinations × forward lines: what parsing compiles
MAX_VARIABLE_ENTRIES = 1_024  # entries of one value (32×32), with the largest dims
MAX_TOTAL_ENTRIES = 4_096  # entries of every value of a draw, each step's counted
MAX_STEPS = 200  # forward steps once loops are unrolled, with the largest dims
MAX_EXPRESSION_NODES = 2_000  # an expression problem's given value, definitions substituted

LineOf = Callable[..., int | None]


@dataclass(frozen=True)
class Cost:
    """What the costliest structure of a spec asks for, with the largest dims."""

    steps: int
    total_entries: int
    largest: tuple[str, int] | None  # (value, entries) of the largest value


def check_text(text: str) -> list[SpecIssue]:
    """The text itself: its length and how deeply its TOML nests (tomllib recurses
    once per level, so 49,000 nested ``[`` would exhaust Python's stack)."""
    if len(text) > MAX_SPEC_CHARS:
        return [SpecIssue(None, f"the spec is {len(text)} characters long; the limit is "
                                f"{MAX_SPEC_CHARS}")]
    line = toml_too_deep(text, MAX_TOML_DEPTH)
    if line is not None:
        return [SpecIssue(line, f"arrays or inline tables nest more than {MAX_TOML_DEPTH} "
                                "levels deep here; a spec needs two or three")]
    return []


def toml_too_deep(text: str, limit: int) -> int | None:
    """The line where ``[`` and ``{`` (outside strings and comments) first nest deeper
    than ``limit``, or None. A scan of the characters, stopped at the first excess:
    linear in the text, whatever it holds."""
    depth, line, i, n = 0, 1, 0, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
        elif c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif c in "\"'":
            i, line = _skip_string(text, i, line)
            continue
        elif c in "[{":
            depth += 1
            if depth > limit:
                return line
        elif c in "]}":
            depth = max(0, depth - 1)
        i += 1
    return None


def _skip_string(text: str, i: int, line: int) -> tuple[int, int]:
    """The index after the TOML string that starts at ``i``, and the line there."""
    quote = text[i]
    delimiter = quote * 3 if text.startswith(quote * 3, i) else quote
    escapes = quote == '"'
    j, n = i + len(delimiter), len(text)
    while j < n:
        if escapes and text[j] == "\\":
            line += text[j + 1:j + 2] == "\n"
            j += 2
            continue
        if text.startswith(delimiter, j):
            return j + len(delimiter), line
        if text[j] == "\n":
            if len(delimiter) == 1:
                return j, line  # an unterminated string: tomllib will say so
            line += 1
        j += 1
    return n, line


def check_table(data: Mapping, dims: Mapping[str, tuple[int, int]],
                constants: Mapping[str, tuple[int, int]],
                choices: Mapping[str, tuple], line_of: LineOf) -> list[SpecIssue]:
    """The TOML's fields, before any program is compiled: the forward program's
    length, each dim's and constant's range, the number of choice combinations
    and what compiling all of them would cost."""
    issues: list[SpecIssue] = []
    forward = data.get("forward")
    lines = forward.count("\n") + 1 if isinstance(forward, str) else 0
    if lines > MAX_FORWARD_LINES:
        issues.append(SpecIssue(line_of("forward"), f"the forward program has {lines} lines; "
                                                    f"the limit is {MAX_FORWARD_LINES}"))
    for name, (_, high) in dims.items():
        if high > MAX_DIM:
            issues.append(SpecIssue(line_of(name, "dims"), (
                f"dims {name} reaches {high}; the limit is {MAX_DIM} (every array of a draw, "
                "its finite-difference check and a student's page grow with the dims)")))
    for name, (low, high) in constants.items():
        if max(abs(low), abs(high)) > MAX_CONSTANT:
            issues.append(SpecIssue(line_of(name, "constants"), (
                f"constants {name} reaches {max(abs(low), abs(high))}; the limit is "
                f"±{MAX_CONSTANT} (a constant may be an exponent)")))
    combinations = 1
    for options in choices.values():
        combinations *= len(options)
    if combinations > MAX_CHOICE_COMBINATIONS:
        issues.append(SpecIssue(line_of("choose"), (
            f"[choose] gives {combinations} combinations of choices; the limit is "
            f"{MAX_CHOICE_COMBINATIONS} (each is a program to compile, check and calibrate)")))
    elif combinations * lines > MAX_COMPILED_LINES:
        issues.append(SpecIssue(line_of("choose"), (
            f"[choose] gives {combinations} combinations of a {lines}-line forward program "
            f"({combinations * lines} lines to compile); the limit is {MAX_COMPILED_LINES}")))
    return issues


def cost(program: Program, ranges: Mapping[str, tuple[int, int]]) -> Cost:
    """Steps and entries of ``program`` with the largest dims of ``ranges`` (an upper
    bound: each dim at its own largest value)."""
    def top(expr: Lin) -> int:
        return max(0, max_over(expr, ranges))

    steps, per_step = 0, 0
    for item in program.items:
        if isinstance(item, Loop):
            count = top(item.stop - item.start)
            steps += count * len(item.body)
            per_step = max(per_step, count)
        else:
            steps += 1
    total, largest = 0, None
    for name, (rows, cols) in program.shapes.items():
        entries = top(rows) * top(cols)
        total += entries * (per_step if name in program.indexed else 1)
        if largest is None or entries > largest[1]:
            largest = (name, entries)
    return Cost(steps, total, largest)


def check_programs(programs: Iterable[Program], ranges: Mapping[str, tuple[int, int]],
                   variable_line: Callable[[Program, str], int | None],
                   forward_line: int | None) -> list[SpecIssue]:
    """Every compiled program's cost against the limits (each limit reported once,
    for the costliest program)."""
    worst: dict[str, tuple[int, Program, Cost]] = {}
    for program in programs:
        c = cost(program, ranges)
        for limit, value in (("steps", c.steps), ("total", c.total_entries),
                             ("largest", c.largest[1] if c.largest else 0)):
            if limit not in worst or value > worst[limit][0]:
                worst[limit] = (value, program, c)
    issues = []
    largest_dims = ", ".join(f"{n} = {hi}" for n, (lo, hi) in ranges.items() if lo != hi)
    at = f" with the largest dims ({largest_dims})" if largest_dims else ""
    value, program, c = worst.get("largest", (0, None, None))
    if value > MAX_VARIABLE_ENTRIES and c is not None and c.largest is not None:
        name = c.largest[0]
        issues.append(SpecIssue(variable_line(program, name), (
            f"{name} has {value} entries{at}; the limit is {MAX_VARIABLE_ENTRIES} entries "
            "for one value")))
    value, program, c = worst.get("steps", (0, None, None))
    if value > MAX_STEPS:
        issues.append(SpecIssue(_loop_line(program) or forward_line, (
            f"the forward program runs {value} steps once its loops are unrolled{at}; the "
            f"limit is {MAX_STEPS}")))
    value, program, c = worst.get("total", (0, None, None))
    if value > MAX_TOTAL_ENTRIES and not issues:
        issues.append(SpecIssue(forward_line, (
            f"a draw holds {value} entries in all (every value, each loop step's "
            f"counted){at}; the limit is {MAX_TOTAL_ENTRIES} (each entry is verified by "
            "finite differences)")))
    return issues


def _loop_line(program: Program | None) -> int | None:
    if program is None:
        return None
    return next((item.line for item in program.items if isinstance(item, Loop)), None)


def defining_line(program: Program, name: str) -> int | None:
    """The spec line of the step that defines ``name`` (None for a declared variable)."""
    for step, _ in program.steps():
        if step.target == name:
            return step.line
    return None
