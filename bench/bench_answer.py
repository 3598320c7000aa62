"""Answer-language figures: parse and run the 14-equation MLP answer of docs/design.md, section 5,
re-evaluate every line with reference inputs (carry-forward), and parse and judge a
scalar expression.  Prints median and p99 in microseconds, with a baseline measured in
the same run: the same 14 equations written directly in numpy.

    .venv/bin/python bench/bench_answer.py [--n 2000] [--json FILE]
"""

from __future__ import annotations

import argparse
import platform
import re
import time

import numpy as np
from common import Rows, add_json_argument

from server.engine.equations import AnswerContext, evaluate_rhs, parse_equations, run_equations
from server.engine.symbolic import expressions_equivalent, parse_scalar_expression

N, H1, H2, K = 3, 5, 4, 2
FORWARD = {
    "x": (N, 1), "W1": (H1, N), "b1": (H1, 1), "W2": (H2, H1), "b2": (H2, 1),
    "W3": (K, H2), "b3": (K, 1), "z1": (H1, 1), "z2": (H1, 1), "z3": (H1, 1),
    "z4": (H2, 1), "z5": (H2, 1), "z6": (H2, 1), "z7": (K, 1), "output": (K, 1),
}
GRADIENTS = {"d" + k: (c, r) for k, (r, c) in FORWARD.items() if k != "output"}
CTX = AnswerContext(FORWARD, GRADIENTS, frozenset({"doutput"}), {"N": N, "H1": H1, "H2": H2,
                                                                  "K": K})
ANSWER = """\
1. dz7 = doutput
2. db3 = doutput
3. dW3 = z6 @ dz7
4. dz6 = dz7 @ W3
5. dz5 = dz6 * (z5 > 0).T
6. dz4 = dz5
7. db2 = dz5
8. dW2 = z3 @ dz4
9. dz3 = dz4 @ W2
10. dz2 = dz3 * (z2 > 0).T
11. db1 = dz2
12. dz1 = dz2
13. dW1 = x @ dz1
14. dx = dz1 @ W1
"""


def direct(v, dout):
    g = {"dz7": dout, "db3": dout}
    g["dW3"] = v["z6"] @ g["dz7"]
    g["dz6"] = g["dz7"] @ v["W3"]
    g["dz5"] = g["dz6"] * (v["z5"] > 0).T
    g["dz4"] = g["db2"] = g["dz5"]
    g["dW2"] = v["z3"] @ g["dz4"]
    g["dz3"] = g["dz4"] @ v["W2"]
    g["dz2"] = g["dz3"] * (v["z2"] > 0).T
    g["db1"] = g["dz1"] = g["dz2"]
    g["dW1"] = v["x"] @ g["dz1"]
    g["dx"] = g["dz1"] @ v["W1"]
    return g


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e6)
    return out


ROWS = Rows("bench_answer")


def row(label: str, xs: list[float], base: float | None = None) -> None:
    med, p99 = float(np.median(xs)), float(np.percentile(xs, 99))
    ratio = f"   {med / base:7.1f}× baseline" if base else ""
    print(f"  {label:<44} median {med:9.1f} µs   p99 {p99:9.1f} µs{ratio}")
    if label.startswith("baseline"):
        return
    ROWS.add("answer." + re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-"),
             "answer language: " + label, ("the 14-equation MLP answer" if base
                                           else "2*x*cos(x^2) and a reference"),
             n=len(xs), samples=xs, unit="µs",
             baseline="the 14 equations in plain numpy" if base else None, baseline_p50=base)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    add_json_argument(parser)
    args = parser.parse_args()
    n = args.n
    rng = np.random.default_rng(0)
    values = {k: rng.standard_normal(s) for k, s in FORWARD.items()}
    dout = rng.standard_normal((1, K))
    grads = {"doutput": dout}
    program = parse_equations(ANSWER, CTX)
    reference = direct(values, dout)
    reference["doutput"] = dout
    events = []
    run_equations(program, values, grads, events.append)

    def lookup(name, index):
        return reference[name]

    def carry_forward():
        for e in events:
            evaluate_rhs(program, e, values, lookup)

    print(f"answer language, {n} repetitions ({platform.python_version()}, "
          f"{platform.machine()}, numpy {np.__version__})")
    base = timed(lambda: direct(values, dout), n)
    row("baseline: the 14 equations in plain numpy", base)
    b = float(np.median(base))
    row("parse_equations (14 lines)", timed(lambda: parse_equations(ANSWER, CTX), n), b)
    row("run_equations", timed(lambda: run_equations(program, values, grads), n), b)
    row("run_equations with on_assign events",
        timed(lambda: run_equations(program, values, grads, lambda e: None), n), b)
    row("evaluate_rhs of all 14 lines (carry-forward)", timed(carry_forward, n), b)
    row("parse + run + carry-forward",
        timed(lambda: (run_equations(parse_equations(ANSWER, CTX), values, grads,
                                     lambda e: None), carry_forward()), n), b)

    m = max(n // 20, 20)
    print(f"scalar expressions, {m} repetitions")
    text, ref_text = "2*x*cos(x^2)", "cos(x**2)*x*2"
    row("parse_scalar_expression", timed(lambda: parse_scalar_expression(text, ["x"]), m))
    a, r = parse_scalar_expression(text, ["x"]), parse_scalar_expression(ref_text, ["x"])
    row("expressions_equivalent (equal)", timed(lambda: expressions_equivalent(a, r, ["x"]), m))
    w = parse_scalar_expression("2*x*sin(x^2)", ["x"])
    row("expressions_equivalent (not equal)",
        timed(lambda: expressions_equivalent(w, r, ["x"]), m))
    ROWS.write(args.json)


if __name__ == "__main__":
    main()
