"""Human-readable renderings of instances (the CLI's text output)."""

from __future__ import annotations

import numpy as np


def format_array(a: np.ndarray, decimals: int = 4) -> str:
    return np.array2string(np.asarray(a), precision=decimals, suppress_small=True, floatmode="maxprec")


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
    if spec.answer == "expression":
        return render_expression_text(spec, inst)
    out = [
        f"{spec.id}: {spec.title}",
        f"version {inst.version}, seed {inst.seed}, {inst.layout} layout, answer: {spec.answer}",
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
