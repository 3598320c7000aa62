"""``nabla submissions recover``: finish the submissions left pending (services.recovery)."""

from __future__ import annotations

import click

from server.cli import main


@main.group()
def submissions() -> None:
    """Submissions: recover the ones left pending."""


@submissions.command()
@click.option("--older-than", "older_than", type=click.FloatRange(0, None), default=None,
              help="Seconds a submission must have been pending (default: "
                   "NABLA_RECOVER_AFTER_S, else 120).")
def recover(older_than: float | None) -> None:
    """Grade and record every submission pending for longer than the bound."""
    import datetime as dt

    from server import db
    from server.cli.web_cmds import _database_url
    from server.services.recovery import recover_pending
    from server.web.recovery_loop import recovery_settings

    after_s = recovery_settings()[0] if older_than is None else older_than
    engine = db.make_engine(_database_url())
    try:
        try:
            db.check_schema_current(engine)
        except db.SchemaOutOfDate as exc:
            raise click.ClickException(str(exc)) from None
        session = db.make_sessionmaker(engine)()
        try:
            done = recover_pending(session, now=lambda: dt.datetime.now(dt.UTC),
                                   commit=session.commit, older_than=dt.timedelta(seconds=after_s))
        finally:
            session.close()
    finally:
        engine.dispose()
    for item in done:
        click.echo(f"submission {item.submission_id}: {item.status}")
    click.echo(f"{len(done)} pending submission(s) older than {after_s:g} s finished")
