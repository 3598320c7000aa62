"""``nabla sandbox ...``: inspect the untrusted-code sandbox on this machine."""

from __future__ import annotations

import json

import click

from server.cli import main

TRIVIAL = "def backward(x):\n    return {'dx': 2 * x}\n"


@main.group()
def sandbox() -> None:
    """The sandbox that runs students' numpy code."""


@sandbox.command()
@click.option("--jobs", default=50, show_default=True, type=click.IntRange(1, 10_000),
              help="trivial jobs to time")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def check(jobs: int, as_json: bool) -> None:
    """Print which isolation layers are active and the per-job overhead.

    Exits with status 1 when untrusted code would be refused here.
    """
    import statistics
    import time

    import numpy as np

    from server.sandbox import run_job, sandbox_status
    from server.sandbox.client import REQUIRED_LAYERS

    status = sandbox_status()
    timings: list[float] = []
    failures = 0
    runnable = status["available"] or status["insecure"]
    if runnable:
        x = np.arange(6.0).reshape(2, 3)
        run_job(TRIVIAL, [{"x": x}])  # warm: the first job may start the worker
        for _ in range(jobs):
            t = time.perf_counter()
            r = run_job(TRIVIAL, [{"x": x}])
            timings.append((time.perf_counter() - t) * 1e3)
            if r.status != "ok" or r.calls[0].status != "ok":
                failures += 1
    timings.sort()
    figures = {}
    if timings:
        figures = {
            "jobs": len(timings), "failures": failures,
            "median_ms": round(statistics.median(timings), 3),
            "p90_ms": round(timings[int(0.9 * (len(timings) - 1))], 3),
            "max_ms": round(timings[-1], 3),
        }
    if as_json:
        click.echo(json.dumps({"status": status, "overhead": figures}, indent=2))
    else:
        layers = status.get("layers") or {}
        for name in REQUIRED_LAYERS:
            desc = layers.get(name)
            mark = "ok     " if desc else "MISSING"
            click.echo(f"  [{mark}] {name:<13} {desc or ''}")
        click.echo(status["message"])
        if figures:
            click.echo(
                f"per-job overhead (trivial job, {figures['jobs']} jobs back to back): "
                f"median {figures['median_ms']} ms, p90 {figures['p90_ms']} ms, "
                f"max {figures['max_ms']} ms; failures: {failures}"
            )
    if not status["available"] and not status["insecure"]:
        raise SystemExit(1)
    if failures:
        raise SystemExit(2)
