"""Problem specs: parse, validate and compile a TOML problem file.

A spec (docs/design.md section 3) names dims and their ranges, structural choices,
variables with shapes and roles, a forward program of one unary or binary
relation per line, what is given and what is asked. ``load_spec`` returns a
``ProblemSpec`` whose forward program has been compiled and shape-checked for
*every* combination of choices and every allowed dims draw, or raises a
``SpecError`` listing each problem with its file line and the reason.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from server.engine import budget, progress
from server.engine.dimexpr import DimExprError, Lin, min_over, parse_lin, shape_text
from server.engine.kinds import KINDS, AnswerKind
from server.engine.program import (
    Loop,
    Operand,
    Program,
    ProgramCompiler,
    SpecIssue,
    Step,
    VarDecl,
    did_you_mean,
    substitute_choices,
)

__all__ = ["Loop", "Operand", "Program", "ProblemSpec", "SpecError", "SpecIssue", "Step",
           "VarDecl", "load_spec", "parse_spec", "shape_text", "substitute_choices"]

LAYOUTS = ("numerator", "denominator")
ROLES = ("input", "param", "const")
CREDIT_KINDS = ("gradients", "rules")
TOP_KEYS = {
    "id", "title", "statement", "answer", "layout", "dims", "choose", "vars", "forward",
    "given", "ask", "rtol", "numpy_rtol", "weights", "credit", "decimals", "kink_margin",
    "constants", "domain",
}
VAR_KEYS = {"shape", "role", "range", "dist"}


class SpecError(Exception):
    """A spec that cannot be used; ``issues`` name each line and reason."""

    def __init__(self, path: str, issues: list[SpecIssue]):
        self.path = path
        self.issues = issues
        super().__init__("\n".join(i.render(path) for i in issues))

    def to_json(self) -> list[dict]:
        """The issues as ``[{"line", "message"}]`` (what the API and the editor show)."""
        return [{"line": i.line, "message": i.message} for i in self.issues]


@dataclass(frozen=True)
class ProblemSpec:
    id: str
    title: str
    statement: str
    answer_kind: str  # a name in KINDS (server/engine/kinds)
    layout: str
    dims: Mapping[str, tuple[int, int]]
    choices: Mapping[str, tuple[tuple[str, str], ...]]  # name -> ((label, text), ...)
    vars: Mapping[str, VarDecl]
    forward_template: str
    given: str
    ask: tuple[str, ...]
    rtol: float
    numpy_rtol: float
    weights: Mapping[str, float]
    credit: str
    decimals: int
    kink_margin: float
    path: str
    source: str
    version: str
    programs: Mapping[tuple[int, ...], Program] = field(repr=False, default_factory=dict)
    # expression problems (answer = "expression"): integer constants drawn per student
    constants: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    # expression problems: the interval answers are compared on (None: |x| in [0.3, 2]
    # on both sides of zero, where the function is defined); inside x > 0, x is positive
    domain: tuple[float, float] | None = None

    def program(self, choice_index: tuple[int, ...]) -> Program:
        return self.programs[choice_index]

    @property
    def kind(self) -> AnswerKind:
        """The answer kind: what draws, grades and shows this problem."""
        return KINDS[self.answer_kind]


# --------------------------------------------------------------------------- loading


def spec_version(text: str) -> str:
    """A spec text's version: its hash (equal text, equal version), known without
    parsing it."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def load_spec(path: str | Path) -> ProblemSpec:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(str(path), [SpecIssue(None, f"cannot read file: {exc}")]) from exc
    return parse_spec(text, str(path))


def parse_spec(text: str, path: str = "<spec>") -> ProblemSpec:
    """The spec of ``text``, or SpecError with every issue at its line. The budget
    (``server.engine.budget``) is checked first, on the text, then on the TOML's
    fields before any program is compiled, then on the compiled programs."""
    progress.stage("parsing the spec")
    issues = budget.check_text(text)
    if issues:
        raise SpecError(path, issues)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise SpecError(
            path, [SpecIssue(int(match.group(1)) if match else None, f"malformed TOML: {exc}")]
        ) from None
    except RecursionError:  # nesting the depth check did not see (it is conservative)
        raise SpecError(path, [SpecIssue(None, "the TOML nests too deeply")]) from None
    _hoist_top_level_keys(data)
    builder = SpecBuilder(data, text, path)
    spec = builder.build()
    if builder.issues:
        raise SpecError(path, builder.issues)
    assert spec is not None
    return spec


_SCALAR_TOP_KEYS = TOP_KEYS - {"dims", "choose", "vars", "weights", "constants"}


def _hoist_top_level_keys(data: dict) -> None:
    """TOML puts ``forward = ...`` written after ``[vars]`` inside that table.
    The design's example (docs/design.md section 3) is written that way, so
    top-level keys found in the last table are moved back up (a variable cannot
    be called ``forward``)."""
    for table in ("dims", "choose", "vars", "weights", "constants"):
        inner = data.get(table)
        if isinstance(inner, dict):
            for key in list(inner):
                if key in _SCALAR_TOP_KEYS and key not in data and not isinstance(inner[key], dict):
                    data[key] = inner.pop(key)


def key_line(text: str, key: str, table: str | None = None) -> int | None:
    """The 1-based line where ``key =`` is written (inside ``[table]`` if given)."""
    current = None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("[") and not stripped.startswith("[:"):
            current = stripped.strip("[]").strip()
            continue
        if current == table and re.match(rf"{re.escape(key)}\s*=", stripped):
            return number
    if table is None and key in _SCALAR_TOP_KEYS:  # hoisted out of a table
        for number, line in enumerate(text.splitlines(), 1):
            if re.match(rf"{re.escape(key)}\s*=", line.strip()):
                return number
    return None


class SpecBuilder:
    """Checks the fields of a parsed TOML spec; the answer kind checks its own parts."""

    def __init__(self, data: dict, text: str, path: str):
        self.data = data
        self.text = text
        self.path = path
        self.issues: list[SpecIssue] = []

    def err(self, line: int | None, message: str) -> None:
        self.issues.append(SpecIssue(line, message))

    def line_of(self, key: str, table: str | None = None) -> int | None:
        return key_line(self.text, key, table)

    # -- fields ---------------------------------------------------------------

    def build(self) -> ProblemSpec | None:
        d = self.data
        for key in d:
            if key not in TOP_KEYS:
                self.err(self.line_of(key), f"unknown key {key!r}{did_you_mean(key, TOP_KEYS)}")
        for key in ("id", "title", "forward", "given", "ask"):
            if key not in d:
                self.err(None, f"missing required key {key!r}")
        pid = self._string("id", "")
        if pid and not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,63}", pid):
            self.err(self.line_of("id"), f"id {pid!r} must be lowercase letters, digits and dashes")
        answer = self._enum("answer", tuple(KINDS), "equations")
        kind = KINDS[answer]
        layout = self._enum("layout", LAYOUTS, "numerator")
        credit = self._enum("credit", CREDIT_KINDS, "gradients")
        rtol = self._number("rtol", 1e-6)
        numpy_rtol = self._number("numpy_rtol", 1e-5)
        decimals = int(self._number("decimals", 2))
        if not 0 <= decimals <= 6:
            self.err(self.line_of("decimals"), "decimals must be between 0 and 6")
        kink_margin = self._number("kink_margin", 0.01)
        dims = self._ranges("dims")
        constants = self._ranges("constants")
        choices = self._choices()
        domain = kind.check_domain(self)
        if self.issues:  # later checks would only repeat these (an unusable dim, ...)
            return None
        self.issues.extend(budget.check_table(d, dims, constants, choices, self.line_of))
        if self.issues:  # nothing is compiled beyond the budget
            return None
        variables = kind.check_variables(self, dims, constants)
        if self.issues:
            return None
        given = d["given"]
        ask = d["ask"]
        if not isinstance(given, str):
            self.err(self.line_of("given"), "given must be the name of one variable")
            return None
        if not (isinstance(ask, list) and ask and all(isinstance(a, str) for a in ask)):
            self.err(self.line_of("ask"), "ask must be a non-empty list of variable names")
            return None
        if len(set(ask)) != len(ask):
            self.err(self.line_of("ask"), "ask lists a variable twice")
        weights = self._weights(ask)
        forward_template = d["forward"]
        if not isinstance(forward_template, str):
            self.err(self.line_of("forward"), "forward must be a (multi-line) string")
            return None
        programs = kind.check_program(self, forward_template, choices, variables, dims,
                                      constants, given, tuple(ask))
        if self.issues:
            return None
        self.issues.extend(budget.check_programs(
            programs.values(), dims,
            lambda program, name: self.line_of(name, "vars") or budget.defining_line(program,
                                                                                     name),
            self.line_of("forward")))
        if self.issues:
            return None
        return ProblemSpec(
            id=pid,
            title=self._string("title", ""),
            statement=self._string("statement", "").strip(),
            answer_kind=answer,
            layout=layout,
            dims=dims,
            choices=choices,
            vars=variables,
            forward_template=forward_template,
            given=given,
            ask=tuple(ask),
            rtol=rtol,
            numpy_rtol=numpy_rtol,
            weights=weights,
            credit=credit,
            decimals=decimals,
            kink_margin=kink_margin,
            path=self.path,
            source=self.text,
            version=spec_version(self.text),
            programs=programs,
            constants=constants,
            domain=domain,
        )

    def _string(self, key: str, default: str) -> str:
        value = self.data.get(key, default)
        if not isinstance(value, str):
            self.err(self.line_of(key), f"{key} must be a string")
            return default
        return value

    def _enum(self, key: str, allowed: tuple[str, ...], default: str) -> str:
        value = self.data.get(key, default)
        if value not in allowed:
            self.err(
                self.line_of(key), f"{key} must be one of {', '.join(allowed)} (got {value!r})"
            )
            return default
        return value

    def _number(self, key: str, default: float) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            self.err(self.line_of(key), f"{key} must be a non-negative number")
            return default
        return float(value)

    def domain(self) -> tuple[float, float] | None:
        """``domain = [low, high]`` (for the kinds that take one)."""
        value = self.data.get("domain")
        if value is None:
            return None
        line = self.line_of("domain")
        numbers = isinstance(value, list) and len(value) == 2 and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        if not numbers or not all(abs(v) <= 1e6 for v in value) or value[0] >= value[1]:
            self.err(
                line, f"domain must be [low, high] with low < high, within ±1e6 (got {value!r})"
            )
            return None
        return float(value[0]), float(value[1])

    def _ranges(self, table: str) -> dict[str, tuple[int, int]]:
        raw = self.data.get(table, {})
        if not isinstance(raw, dict):
            self.err(self.line_of(table), f"[{table}] must be a table of name = [low, high]")
            return {}
        out: dict[str, tuple[int, int]] = {}
        for name, value in raw.items():
            line = self.line_of(name, table)
            if not name.isidentifier():
                self.err(line, f"{table} name {name!r} is not an identifier")
                continue
            if isinstance(value, int) and not isinstance(value, bool):
                value = [value, value]
            if not (
                isinstance(value, list)
                and len(value) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            ):
                self.err(line, f"{table} {name} must be an integer or [low, high] (got {value!r})")
                continue
            lo, hi = value
            if lo > hi:
                self.err(line, f"{table} {name} has an empty range [{lo}, {hi}]: low is above high")
                continue
            if table == "dims" and lo < 1:
                self.err(line, f"dims {name} must be at least 1 (got low = {lo})")
                continue
            out[name] = (lo, hi)
        return out

    def _choices(self) -> dict[str, tuple[tuple[str, str], ...]]:
        raw = self.data.get("choose", {})
        out: dict[str, tuple[tuple[str, str], ...]] = {}
        if not isinstance(raw, dict):
            self.err(self.line_of("choose"), "[choose] must be a table")
            return out
        for name, value in raw.items():
            line = self.line_of(name, "choose") or self.line_of("choose")
            if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                out[name] = tuple((v, v) for v in value)
            elif (
                isinstance(value, dict)
                and value
                and all(isinstance(v, str) for v in value.values())
            ):
                out[name] = tuple((label, text.strip("\n")) for label, text in value.items())
            else:
                self.err(
                    line,
                    f"choice {name} must be a non-empty list of strings or a table label = text",
                )
        return out

    def variables(self, dims: Mapping[str, tuple[int, int]]) -> dict[str, VarDecl]:
        raw = self.data.get("vars", {})
        out: dict[str, VarDecl] = {}
        if not isinstance(raw, dict) or not raw:
            self.err(
                self.line_of("vars"), "[vars] must declare the inputs and parameters with shapes"
            )
            return out
        fixed = {n: lo for n, (lo, hi) in dims.items() if lo == hi}
        for name, decl in raw.items():
            line = self.line_of(name, "vars")
            if not name.isidentifier():
                self.err(line, f"variable name {name!r} is not usable")
                continue
            if name in dims:
                self.err(line, f"{name!r} is both a dim and a variable")
                continue
            if not isinstance(decl, dict):
                self.err(
                    line,
                    f'variable {name} must be a table like {{ shape = ["N", 1], role = "input" }}',
                )
                continue
            for key in decl:
                if key not in VAR_KEYS:
                    self.err(
                        line, f"variable {name}: unknown key {key!r}{did_you_mean(key, VAR_KEYS)}"
                    )
            shape = decl.get("shape")
            if not (isinstance(shape, list) and len(shape) == 2):
                self.err(line, f'variable {name}: shape must be a list of two dims, e.g. ["N", 1]')
                continue
            try:
                dims_shape = tuple(parse_lin(s, dims).subst(fixed) for s in shape)
            except DimExprError as exc:
                self.err(line, f"variable {name}: {exc}")
                continue
            for s in dims_shape:
                if min_over(s, dims) < 1:
                    self.err(
                        line, f"variable {name}: dimension {s} can be below 1 for the allowed dims"
                    )
            role = decl.get("role", "input")
            if role not in ROLES:
                self.err(
                    line, f"variable {name}: role must be one of {', '.join(ROLES)} (got {role!r})"
                )
                continue
            low, high = -1.0, 1.0
            if "range" in decl:
                rng = decl["range"]
                if not (
                    isinstance(rng, list)
                    and len(rng) == 2
                    and all(isinstance(v, int | float) and not isinstance(v, bool) for v in rng)
                    and rng[0] < rng[1]
                ):
                    self.err(line, f"variable {name}: range must be [low, high] with low < high")
                    continue
                low, high = float(rng[0]), float(rng[1])
            dist = decl.get("dist", "uniform")
            if dist not in ("uniform", "onehot", "ones"):
                self.err(line, f"variable {name}: dist must be uniform, onehot or ones")
                continue
            if dist == "onehot" and (role != "const" or not dims_shape[1] == Lin(1)):
                self.err(
                    line, f'variable {name}: a onehot variable must be a column with role = "const"'
                )
                continue
            if dist == "ones" and (role != "const" or Lin(1) not in dims_shape):
                self.err(line, f"variable {name}: a ones variable (to broadcast with @) must be "
                               'a row or a column with role = "const"')
                continue
            out[name] = VarDecl(name, dims_shape, role, low, high, dist)
        return out

    def _weights(self, ask: list[str]) -> dict[str, float]:
        raw = self.data.get("weights", {})
        out = {a: 1.0 for a in ask}
        if not isinstance(raw, dict):
            self.err(
                self.line_of("weights"), "[weights] must be a table of asked variable = weight"
            )
            return out
        for name, w in raw.items():
            line = self.line_of(name, "weights")
            if name not in ask:
                self.err(line, f"weight for {name!r}, which is not asked")
            elif isinstance(w, bool) or not isinstance(w, int | float) or w <= 0:
                self.err(line, f"weight for {name} must be a positive number")
            else:
                out[name] = float(w)
        return out

    # -- forward programs -----------------------------------------------------

    def _forward_first_line(self) -> int:
        """File line of the forward program's first line."""
        start = self.line_of("forward") or 1
        opening = self.text.splitlines()[start - 1]
        after = opening.split("=", 1)[1].strip()
        if after in ('"""', "'''"):
            return start + 1  # TOML trims the newline right after the delimiter
        return start

    def compile_all(self, template, choices, variables, dims, given, ask) -> dict:
        # at most budget.MAX_CHOICE_COMBINATIONS: check_table refused more
        combos = list(itertools.product(*(range(len(v)) for v in choices.values())))
        programs = {}
        first = self._forward_first_line()
        for combo in combos:
            picked = {name: choices[name][i][1] for name, i in zip(choices, combo)}
            text, line_map = substitute_choices(template, picked)
            compiler = ProgramCompiler(text, [first + i for i in line_map], variables, dims)
            program = compiler.compile(given, ask, self.line_of("given"), self.line_of("ask"))
            label = ", ".join(f"{n} = {choices[n][i][0]!r}" for n, i in zip(choices, combo))
            for issue in compiler.issues:
                suffix = f" (with {label})" if label and len(combos) > 1 else ""
                if SpecIssue(issue.line, issue.message) not in self.issues:
                    self.issues.append(SpecIssue(issue.line, issue.message + suffix))
            if compiler.issues:
                return {}
            programs[combo] = program
        return programs

