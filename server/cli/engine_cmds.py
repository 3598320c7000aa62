"""``nabla problems``, ``nabla instance``, ``nabla solution``: the engine from the shell."""

from __future__ import annotations

import json
import sys

import click

from server.cli import main

CHECK_SEEDS = 5


def fail(message: str, code: int = 2) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def get_problem(ref: str):
    from server.engine.bank import UnknownProblemError, find_problem
    from server.engine.spec import SpecError

    try:
        return find_problem(ref)
    except UnknownProblemError as exc:
        fail(str(exc))
    except SpecError as exc:
        fail(f"the spec is invalid:\n{exc}")


def get_instance(spec, seed: int):
    from server.engine.instance import InstanceError
    from server.engine.problem import draw

    try:
        return draw(spec, seed)
    except InstanceError as exc:
        fail(str(exc), 1)


@main.group()
def problems() -> None:
    """List and check problem specs."""


@problems.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def problems_list(as_json: bool) -> None:
    """List the problems in the bank (id, answer type, title)."""
    from server.engine.bank import load_bank
    from server.engine.spec import SpecError

    try:
        bank = load_bank()
    except SpecError as exc:
        fail(f"the problem bank has invalid specs:\n{exc}", 1)
    for spec in bank.values():
        if as_json:
            click.echo(json.dumps({"id": spec.id, "title": spec.title, "answer": spec.answer}))
        else:
            click.echo(f"{spec.id:32} {spec.answer:10} {spec.title}")


@problems.command("check")
@click.argument("refs", nargs=-1)
@click.option("--seeds", default=CHECK_SEEDS, show_default=True, help="Draws to verify per problem.")
def problems_check(refs: tuple[str, ...], seeds: int) -> None:
    """Validate specs (paths or ids; default: the whole bank) and verify draws.

    Exit status 1 if any spec is invalid or broken, with line-specific messages."""
    from server.engine.bank import UnknownProblemError, find_problem, spec_files
    from server.engine.instance import InstanceError
    from server.engine.problem import draw
    from server.engine.spec import SpecError

    targets = list(refs) or [str(p) for p in spec_files()]
    bad = 0
    for ref in targets:
        try:
            spec = find_problem(ref)
            for seed in range(seeds):
                draw(spec, seed)
        except (SpecError, UnknownProblemError, InstanceError) as exc:
            bad += 1
            click.echo(f"FAIL {ref}\n{exc}", err=True)
            continue
        click.echo(f"ok   {spec.id} ({spec.answer}, {seeds} draws verified)")
    if bad:
        click.echo(f"{bad} of {len(targets)} specs failed", err=True)
        sys.exit(1)


@main.command()
@click.argument("problem")
@click.option("--seed", "seeds", type=int, multiple=True, required=True, help="Instance seed (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, with the reference.")
def instance(problem: str, seeds: tuple[int, ...], as_json: bool) -> None:
    """Print the instance of PROBLEM for each seed."""
    from server.engine.render import render_instance_text

    spec = get_problem(problem)
    for seed in seeds:
        if seed < 0:
            fail(f"seed must be a non-negative integer (got {seed})")
        inst = get_instance(spec, seed)
        if as_json:
            click.echo(json.dumps(inst.to_json()))
        else:
            click.echo(render_instance_text(spec, inst))


@main.command()
@click.argument("problem")
@click.option("--seed", type=int, required=True, help="Instance seed.")
def solution(problem: str, seed: int) -> None:
    """Print the model backward program of PROBLEM for that seed's instance."""
    from server.engine.problem import model_answer

    spec = get_problem(problem)
    if seed < 0:
        fail(f"seed must be a non-negative integer (got {seed})")
    click.echo(model_answer(spec, get_instance(spec, seed)))
