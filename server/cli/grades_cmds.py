"""``nabla regrade``, ``nabla grades export``, ``nabla worker``, ``nabla users invite``."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from server.cli import main
from server.cli.job_progress import follow_job
from server.cli.web_cmds import _course, _database_url, _transaction, _user, site_url, users


def _settings() -> dict[str, Any]:
    from server.config import job_settings

    return job_settings()


# --- nabla regrade -----------------------------------------------------------------------


@main.command()
@click.option("--course", "course_code", required=True, help="Course code.")
@click.option("--assignment", "assignment_id", type=int, help="Regrade this assignment.")
@click.option("--problem", "problem_id", help="Regrade this problem (in the course's assignments).")
@click.option("--student", "email", help="Only this student's submissions.")
@click.option("--redraw", is_flag=True,
              help="First redraw the instances on the problem's current spec, keeping seeds.")
@click.option("--dry-run", is_flag=True, help="Report what would change; write nothing.")
@click.option("--reason", default="", help="Why (kept in the audit).")
@click.option("--wait", is_flag=True,
              help="With Redis: wait for the workers and show progress (in-process: always).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def regrade(course_code: str, assignment_id: int | None, problem_id: str | None,
            email: str | None, redraw: bool, dry_run: bool, reason: str, wait: bool,
            as_json: bool) -> None:
    """Re-run stored submissions against the current engine, as a background job.

    Every change of status or score is written with an audit row; the same
    result changes nothing. Without NABLA_REDIS_URL the job runs in this
    process (the command waits); with it, on `nabla worker` processes.
    """
    from server import db
    from server.models import Job
    from server.services import jobs
    from server.services import regrade as service

    settings = _settings()
    with _transaction() as session:
        course = _course(session, course_code)
        user_id = _user(session, email).id if email else None
        if dry_run:
            ids = service.select_submissions(session, course, assignment_id=assignment_id,
                                             problem_id=problem_id, user_id=user_id)
        else:
            job = service.start_regrade(session, course, actor=None, reason=reason,
                                        redraw=redraw, assignment_id=assignment_id,
                                        problem_id=problem_id, user_id=user_id,
                                        chunk_size=settings["chunk"])
    engine = db.make_engine(_database_url())
    try:
        if dry_run:
            summary = service.preview_regrade(engine, ids, bank=jobs.bank_of(settings),
                                              redraw=redraw, threads=settings["threads"])
            _print_preview(summary, as_json)
            return
        threads = jobs.dispatch(engine, job, settings)
        if not threads and not wait:
            _print_summary({"submissions": job.total, "changed": 0, "errors": 0,
                            "job": job.id, "state": "queued"}, as_json)
            return
        final = follow_job(engine, job.id, quiet=as_json, stale_s=settings["stale_s"])
        for thread in threads:
            thread.join()
        state = _summary_of(engine, job.id, Job)
        _print_summary(state, as_json)
        if final != "done":
            sys.exit(1)
    finally:
        engine.dispose()


def _summary_of(engine: Any, job_id: int, job_model: Any) -> dict[str, Any]:
    from server.db import make_sessionmaker

    with make_sessionmaker(engine)() as session:
        job = session.get(job_model, job_id)
        summary = {"submissions": job.total, "changed": job.changed, "errors": job.errors,
                   "job": job.id}
        if job.state != "done":
            summary |= {"state": job.state, "error": job.error}
        return summary


def _print_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary))
        return
    line = (f"job {summary['job']}: {summary['submissions']} submissions, "
            f"{summary['changed']} changed, {summary['errors']} errors")
    if summary.get("state") == "queued":
        line = f"job {summary['job']}: {summary['submissions']} submissions queued for the workers"
    elif summary.get("state"):
        line += f"; {summary['state']}: {summary.get('error') or ''}"
    click.echo(line)


def _print_preview(summary: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"submissions": summary.submissions, "changed": summary.changed,
                               "errors": summary.errors, "job": None, "dry_run": True,
                               "changes": [c.to_json() for c in summary.changes]}))
        return
    for c in summary.changes:
        click.echo(f"submission {c.submission_id} ({c.problem_id}): {c.old_status} "
                   f"{_score(c.old_score)} -> {c.new_status} {_score(c.new_score)}")
    click.echo(f"dry run: {summary.submissions} submissions, {summary.changed} would change, "
               f"{summary.errors} errors; nothing was written")


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


# --- nabla grades --------------------------------------------------------------------------


@main.group()
def grades() -> None:
    """Grades: exports."""


@grades.command("export")
@click.option("--course", "course_code", required=True)
@click.option("--assignment", "assignment_id", type=int, help="Only this assignment.")
@click.option("--format", "fmt", type=click.Choice(["long", "canvas"]), default="long",
              show_default=True)
@click.option("-o", "--output", type=click.File("wb"), default="-",
              help="File to write (default: standard output).")
def grades_export(course_code: str, assignment_id: int | None, fmt: str, output: Any) -> None:
    """Write the course's grades as CSV: long (one row per student x problem) or canvas
    (Canvas's gradebook import). The same bytes as the gradebook page and the API."""
    from server.services import exports, gradebook

    with _transaction() as session:
        book = gradebook.course_gradebook(session, _course(session, course_code),
                                          assignment_id=assignment_id)
        for piece in exports.export_csv(book, fmt):
            output.write(piece.encode())
    output.flush()


# --- nabla worker -----------------------------------------------------------------------


@main.command()
@click.option("--burst", is_flag=True, help="Stop when the queue is empty.")
def worker(burst: bool) -> None:
    """Run background jobs from the RQ queue (needs NABLA_REDIS_URL); any number of
    workers, on any machine that reaches the same database and Redis."""
    from server.services.jobs import run_worker

    settings = _settings()
    if not settings["redis_url"]:
        raise click.ClickException(
            "NABLA_REDIS_URL is not set: without Redis, jobs run in the process that starts "
            "them and no worker is needed")
    with _transaction():  # checks the database and its schema before taking jobs
        pass
    click.echo(f"worker on queue {settings['queue']}", err=True)
    run_worker(settings, burst=burst)


# --- nabla users invite ------------------------------------------------------------------


@users.command("invite")
@click.argument("email")
def users_invite(email: str) -> None:
    """Print a one-time set-password link for a user (valid 7 days, single use; it starts
    with NABLA_BASE_URL)."""
    from server.models import utcnow
    from server.services import invites

    base = site_url()
    with _transaction() as session:
        _, token = invites.create_invite(session, _user(session, email), utcnow())
    click.echo(invites.invite_link(base, token))
