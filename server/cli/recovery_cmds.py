"""``nabla submissions recover``: finish the submissions left pending, as a recovery job
(services.recovery) that this command starts and waits for."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from server.cli import main
from server.cli.job_progress import follow_job

WAIT_FOR_ACTIVE_TRIES = 3


@main.group()
def submissions() -> None:
    """Submissions: recover the ones left pending."""


@submissions.command()
@click.option("--older-than", "older_than", type=click.FloatRange(0, None), default=None,
              help="Seconds a submission must have been pending (default: "
                   "NABLA_RECOVER_AFTER_S, else 120).")
@click.option("--here", is_flag=True,
              help="Run the job in this process even when NABLA_REDIS_URL is set (when no "
                   "`nabla worker` runs).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def recover(older_than: float | None, here: bool, as_json: bool) -> None:
    """Grade and record every submission pending for longer than the bound.

    Starts a recovery job and waits for it: in this process without
    NABLA_REDIS_URL (or with --here), else on `nabla worker` processes. When a
    recovery job is already queued or running (an app server's), waits for
    it first. Exits 1 if the job failed."""
    from server import db
    from server.cli.web_cmds import _database_url
    from server.config import ConfigError, job_settings, recovery_settings
    from server.models import Job
    from server.services import jobs, recovery

    try:
        after_s = recovery_settings()["after_s"] if older_than is None else older_than
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    settings = {**job_settings(), **({"redis_url": None} if here else {})}
    engine = db.make_engine(_database_url())
    try:
        try:
            db.check_schema_current(engine)
        except db.SchemaOutOfDate as exc:
            raise click.ClickException(str(exc)) from None
        factory = db.make_sessionmaker(engine)
        for _ in range(WAIT_FOR_ACTIVE_TRIES):
            with factory() as session:
                job = recovery.start_recovery(session, settings, older_than_s=after_s,
                                              always=True)
                active = None if job is not None else jobs.active_job(session, recovery.KIND)
                session.commit()
                job_id = job.id if job is not None else None
                active_id = active.id if active is not None else None
            if job_id is not None or active_id is None:
                break
            click.echo(f"recovery job {active_id} is already queued or running: waiting for it",
                       err=True)
            follow_job(engine, active_id, quiet=True, stale_s=settings["stale_s"])
        if job_id is None:
            raise click.ClickException(
                "another recovery job is still queued or running; try again later")
        with factory() as session:
            threads = jobs.dispatch(engine, session.get(Job, job_id), settings)
        if not threads and not as_json:
            click.echo(f"recovery job {job_id} queued for the workers (`nabla worker`)",
                       err=True)
        state = follow_job(engine, job_id, quiet=as_json, stale_s=settings["stale_s"])
        for thread in threads:
            thread.join()
        with factory() as session:
            summary = _summary(session.get(Job, job_id), after_s)
    finally:
        engine.dispose()
    _print(summary, as_json)
    if state != "done":
        sys.exit(1)


def _summary(job: Any, after_s: float) -> dict[str, Any]:
    from server.services.recovery import SKIPPED, recovered_of

    ended = recovered_of(job)
    summary = {"job": job.id, "state": job.state, "older_than_s": after_s,
               "submissions": [{"id": item.submission_id, "status": item.status}
                               for item in ended],
               "recovered": sum(item.status != SKIPPED for item in ended),
               "errors": job.errors}
    if job.error:
        summary["error"] = job.error
    return summary


def _print(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary))
        return
    for item in summary["submissions"]:
        click.echo(f"submission {item['id']}: {item['status']}")
    line = (f"job {summary['job']}: {summary['recovered']} pending submission(s) older than "
            f"{summary['older_than_s']:g} s finished")
    if summary["state"] != "done":
        line += f"; {summary['state']}: {summary.get('error') or ''}"
    click.echo(line)


