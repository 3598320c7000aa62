"""A tasks module for tests of a spec's check in the judge: the real tasks, with a
model answer that is wrong on purpose (``dz1 = -...``), patched in the zygote so
that every judge process it forks has it."""

from __future__ import annotations

from server.judge import tasks as real_tasks


def preload() -> None:
    real_tasks.preload()
    from server.engine import problem

    real = problem.model_answer
    problem.model_answer = lambda spec, inst: real(spec, inst).replace("dz1 = ", "dz1 = -")


def handle(message: dict, report=None) -> dict:
    return real_tasks.handle(message, report)
