"""Human-readable renderings of instances (the CLI's text output)."""

from __future__ import annotations

import numpy as np


def format_array(a: np.ndarray, decimals: int = 4) -> str:
    return np.array2string(
        np.asarray(a), precision=decimals, suppress_small=True, floatmode="maxprec"
    )


def _shape(a) -> str:
    return "×".join(str(d) for d in np.shape(a))


def render_values(values: dict, decimals: int, indent: str = "  ") -> list[str]:
    lines = []
    for name, v in values.items():
        if isinstance(v, list):
            for t, x in enumerate(v):
                lines.append(f"{indent}{name}[{t}] ({_shape(x)}) =")
                lines.extend(indent * 2 + row for row in format_array(x, decimals).splitlines())
        else:
            lines.append(f"{indent}{name} ({_shape(v)}) =")
            lines.extend(indent * 2 + row for row in format_array(v, decimals).splitlines())
    return lines


def render_instance_text(spec, inst) -> str:
    """An instance of a forward program of arrays (``nabla instance``)."""
    out = [
        f"{spec.id}: {spec.title}",
        f"version {inst.version}, seed {inst.seed}, {inst.layout} layout, "
        f"answer: {spec.answer_kind}",
        "dims: " + ", ".join(f"{k} = {v}" for k, v in inst.dims.items()),
    ]
    if inst.choices:
        out.append("choices: " + ", ".join(f"{k} = {v}" for k, v in inst.choices.items()))
    out.append("forward:")
    out.extend(f"  {line}" for line in inst.forward.splitlines())
    out.append(f"given: d{inst.given}    ask: " + ", ".join("d" + a for a in inst.ask))
    out.append("values:")
    out.extend(render_values(inst.values, spec.decimals))
    out.append("reference gradients:")
    out.extend(render_values(inst.reference, 6))
    return "\n".join(out)


def render_expression_text(spec, inst) -> str:
    """An expression problem's instance (``nabla instance``)."""
    out = [
        f"{spec.id}: {spec.title}",
        f"version {inst.version}, seed {inst.seed}, answer: expression",
    ]
    if inst.constants:
        out.append("constants: " + ", ".join(f"{k} = {v}" for k, v in inst.constants.items()))
    if inst.choices:
        out.append("choices: " + ", ".join(f"{k} = {v}" for k, v in inst.choices.items()))
    out.append("definitions:")
    out.extend(f"  {line}" for line in inst.forward.splitlines())
    out.append(f"ask: d{inst.given}/d{inst.ask[0]}")
    out.append(f"reference: {inst.reference}")
    return "\n".join(out)


# --------------------------------------------------------------------------- MathML


def forward_mathml(spec, program) -> list[dict]:
    """The forward program as native MathML (sympy's presentation printer), one
    entry per line: {"kind": "step" | "loop", "number", "source", "mathml"}."""
    import sympy
    from sympy.printing.mathml import mathml

    from server.engine.ops import OPS
    from server.engine.program import Loop

    def symbol(name: str, indexed: bool, loop_var: str | None):
        shown = f"{name}^({loop_var})" if indexed else name
        r, c = program.shapes[name]
        return sympy.MatrixSymbol(shown, sympy.Symbol(str(r)), sympy.Symbol(str(c)))

    def operand(a, loop_var):
        if a.name is None:
            return sympy.nsimplify(a.const)
        return symbol(a.name, a.indexed, loop_var)

    def rhs(step, loop_var) -> str:
        args = [operand(a, loop_var) for a in step.args]
        return OPS[step.op].mathml(args, step.region_text)

    lines: list[dict] = []
    number = 0
    for item in program.items:
        steps = item.body if isinstance(item, Loop) else (item,)
        loop_var = item.var if isinstance(item, Loop) else None
        if isinstance(item, Loop):
            lines.append({"kind": "loop", "number": None, "source": item.header, "mathml": ""})
        for step in steps:
            number += 1
            lhs = mathml(
                symbol(step.target, step.indexed, loop_var), printer="presentation", order="none"
            )
            body = f"<mrow>{lhs}<mo>=</mo>{rhs(step, loop_var)}</mrow>".replace(
                "&InvisibleTimes;", "&#x2062;"
            )
            lines.append(
                {
                    "kind": "step",
                    "number": number,
                    "source": step.source,
                    "mathml": '<math xmlns="http://www.w3.org/1998/Math/MathML" '
                    f'display="block">{body}</math>',
                }
            )
    return lines


def statement_html(text: str) -> str:
    """A problem statement as HTML: escaped, paragraphs at blank lines, and
    `backticks` as code. Nothing else of Markdown, and no raw HTML from the spec."""
    import html
    import re

    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    out = []
    for p in paragraphs:
        escaped = html.escape(" ".join(p.split()))
        out.append("<p>" + re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped) + "</p>")
    return "\n".join(out)
