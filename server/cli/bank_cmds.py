"""``nabla problems sync`` and ``nabla problems export``: the bank folder and the
database, which is the bank of record (server/services/bank.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from server.cli.engine_cmds import problems
from server.cli.web_cmds import _transaction


def _course(session: Any, code: str | None) -> Any:
    if code is None:
        return None
    from server.services.courses import get_course

    course = get_course(session, code)
    if course is None:
        raise click.ClickException(f"there is no course {code}")
    return course


def sync_bank(session: Any, directory: Path, course: Any = None) -> Any:
    """Sync ``directory`` into the database (one transaction: the caller's)."""
    from server.services.bank import sync_folder

    if not directory.is_dir():
        raise click.ClickException(f"{directory}: not a folder")
    return sync_folder(session, directory, course)


def print_report(report: Any) -> None:
    for key in report.new_versions:
        click.echo(f"new  {key}")
    for key in report.unchanged:
        click.echo(f"same {key}")
    for refused in report.refused:
        click.echo(f"REFUSED {refused['file']}", err=True)
        for error in refused["errors"]:
            where = f"{refused['file']}:{error['line']}" if error["line"] else refused["file"]
            click.echo(f"  {where}: {error['message']}", err=True)


@problems.command("sync")
@click.argument("directory", required=False, type=click.Path(path_type=Path))
@click.option("--course", "course_code", help="Import as this course's problems.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def problems_sync(directory: Path | None, course_code: str | None, as_json: bool) -> None:
    """Import a folder of spec files into the database (default: the bank folder,
    as shared problems). A changed text becomes a new version, an unchanged one
    changes nothing, and a file that fails validation is refused with its errors
    (exit status 1) and changes nothing."""
    from server.engine.bank import BANK_DIR

    with _transaction() as session:
        report = sync_bank(session, directory or BANK_DIR, _course(session, course_code))
    if as_json:
        click.echo(json.dumps(report.to_json()))
    else:
        print_report(report)
    if report.refused:
        sys.exit(1)


@problems.command("export")
@click.argument("problem_id")
@click.option("--course", "course_code", help="The course's own problem of that id.")
def problems_export(problem_id: str, course_code: str | None) -> None:
    """Print the latest version's spec text (syncing it back creates nothing)."""
    from server.services.bank import export_text

    with _transaction() as session:
        text = export_text(session, problem_id, _course(session, course_code))
    click.echo(text, nl=False)  # exactly the stored text: syncing it back changes nothing
