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
            click.echo(json.dumps({"id": spec.id, "title": spec.title,
                                   "answer": spec.answer_kind}))
        else:
            click.echo(f"{spec.id:32} {spec.answer_kind:10} {spec.title}")


@problems.command("check")
@click.argument("refs", nargs=-1)
@click.option(
    "--seeds", default=CHECK_SEEDS, show_default=True, help="Draws to verify per problem."
)
def problems_check(refs: tuple[str, ...], seeds: int) -> None:
    """Validate specs (spec files, folders of them, or ids; default: the whole bank)
    and verify draws.

    For array problems, also reports the plausible mistakes (mutants) of the
    structures drawn: how many, how many every draw separates from the right
    answer, how many are equivalent to it; the mean redraws and the median
    draw time. Exit status 1 if any spec is invalid or broken (or no draw
    separates its mutants, or the model answer, as text, is not 100% on every
    draw), with line-specific messages. The checks run in the judge's killable
    processes, under the spec limits of the server (NABLA_SPEC_TIMEOUT_S, ...)."""
    from server.engine.bank import find_spec_file, spec_files
    from server.services.bank import SpecRefused, check_report
    from server.services.errors import Unavailable

    targets = _spec_targets(refs) if refs else [str(p) for p in spec_files()]
    bad = 0
    for ref in targets:
        try:
            path = find_spec_file(ref)
            text = path.read_text(encoding="utf-8")
            spec, report = check_report(text, str(path), seeds)
        except (OSError, UnicodeDecodeError, LookupError) as exc:
            bad += 1
            click.echo(f"FAIL {ref}\n{exc}", err=True)
            continue
        except SpecRefused as exc:
            bad += 1
            click.echo(f"FAIL {ref}\n" + "\n".join(
                (f"{path}:{e['line']}: " if e["line"] else "") + e["message"]
                for e in exc.errors), err=True)
            continue
        except Unavailable as exc:
            bad += 1
            click.echo(f"FAIL {ref}\n{exc}", err=True)
            continue
        click.echo(f"ok   {spec.id} ({spec.answer_kind}, {seeds} draws verified){report}")
    if bad:
        click.echo(f"{bad} of {len(targets)} specs failed", err=True)
        sys.exit(1)


def _spec_targets(refs: tuple[str, ...]) -> list[str]:
    """Each ref as given, a folder replaced by the spec files in it."""
    from pathlib import Path

    from server.engine.bank import spec_files

    targets = []
    for ref in refs:
        if not Path(ref).is_dir():
            targets.append(ref)
            continue
        found = spec_files(Path(ref))
        if not found:
            fail(f"{ref}: no spec files (*.toml) in this folder", 1)
        targets.extend(str(path) for path in found)
    return targets


@main.command()
@click.argument("problem")
@click.option(
    "--seed", "seeds", type=int, multiple=True, required=True, help="Instance seed (repeatable)."
)
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object per line, with the reference."
)
def instance(problem: str, seeds: tuple[int, ...], as_json: bool) -> None:
    """Print the instance of PROBLEM for each seed."""
    spec = get_problem(problem)
    for seed in seeds:
        if seed < 0:
            fail(f"seed must be a non-negative integer (got {seed})")
        inst = get_instance(spec, seed)
        if as_json:
            click.echo(json.dumps(inst.to_json()))
        else:
            click.echo(spec.kind.render_text(spec, inst))


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


MAX_ANSWER_BYTES = 200_000


@main.command()
@click.argument("problem")
@click.option("--seed", type=int, required=True, help="Instance seed.")
@click.argument("files", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file per line.")
def grade(problem: str, seed: int, files: tuple[str, ...], as_json: bool) -> None:
    """Grade answer FILES against the instance of PROBLEM for SEED.

    .txt files hold equations or an expression; .py files a numpy backward function."""
    from server import sandbox

    spec = get_problem(problem)
    if seed < 0:
        fail(f"seed must be a non-negative integer (got {seed})")
    inst = get_instance(spec, seed)
    texts = []
    for path in files:
        try:
            with open(path, "rb") as fh:
                data = fh.read(MAX_ANSWER_BYTES + 1)
        except OSError as exc:
            fail(f"cannot read {path}: {exc.strerror}")
        if len(data) > MAX_ANSWER_BYTES:
            fail(f"{path} is larger than {MAX_ANSWER_BYTES} bytes")
        try:
            texts.append((path, data.decode("utf-8")))
        except UnicodeDecodeError:
            fail(f"{path} is not UTF-8 text")
    for path, text in texts:
        if path.endswith(".py") and spec.kind.file_suffix != ".py":
            fail(f"{path}: {spec.id} expects {spec.answer_kind} (a {spec.kind.file_suffix} file), "
                 "not a numpy function")
        result = spec.kind.grade(spec, inst, text, run_job=sandbox.run_job,
                                 check_source=sandbox.check_source)
        if as_json:
            click.echo(
                json.dumps({"file": path, "problem": spec.id, "seed": seed, **result.to_json()})
            )
        else:
            click.echo(render_result(path, text, result))


def render_result(path: str, text: str, result) -> str:
    out = [f"== {path}"]
    if not result.valid:
        out.append("invalid answer (costs no attempt):")
        out.extend("  " + e["message"].replace("\n", "\n  ") for e in result.errors)
        return "\n".join(out)
    by_line = {e.line: e for e in result.equations}
    for number, line in enumerate(text.splitlines(), 1):
        e = by_line.get(number)
        if e is None:
            out.append(f"     {line}")
            continue
        mark = "✓" if e.verdict == "correct" else ("~" if e.rule_correct else "✗")
        out.append(f"  {mark}  {line}")
        if e.verdict != "correct":
            out.append(f"       {e.verdict}: {e.message}")
    for name, g in result.gradients.items():
        mark = "✓" if g.verdict == "correct" else "✗"
        out.append(f"  {mark} {name}: {g.verdict}" + (f" — {g.message}" if g.message else ""))
    for e in result.errors:
        out.append(f"  ! line {e['line']}: {e['message']}")
    out.append(f"score: {result.score:.3f}")
    return "\n".join(out)
