"""A tasks module for tests: the real tasks, where no spec can be drawn (every draw
raises InstanceError "no acceptable draw"), patched in the zygote so that every
judge process it forks has it."""

from __future__ import annotations

from server.judge import tasks as real_tasks


def preload() -> None:
    real_tasks.preload()
    from server.engine import problem
    from server.engine.instance import InstanceError

    def broken(spec, seed, **_):
        raise InstanceError(f"{spec.id}: no acceptable draw")

    problem.draw = broken


def handle(message: dict, report=None) -> dict:
    return real_tasks.handle(message, report)
