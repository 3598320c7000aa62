"""Following a background job from a command: a progress bar on standard error while it
runs (services.jobs), for ``nabla regrade`` and ``nabla submissions recover``."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

POLL_S = 0.5


def follow_job(engine: Any, job_id: int, *, quiet: bool, stale_s: float) -> str:
    """Poll the job row until it ends, with a progress bar on stderr; its final state.
    A running job whose heartbeat stopped for ``stale_s`` is failed (its worker died)."""
    from server.db import make_sessionmaker
    from server.models import Job
    from server.services.jobs import check_stale

    factory = make_sessionmaker(engine)
    shown = 0
    bar = None
    try:
        while True:
            with factory() as session, session.begin():
                job = check_stale(session, session.get(Job, job_id), stale_s)
                done, total, state, kind = job.done, job.total, job.state, job.kind
            if bar is None and not quiet and (state != "queued" or total):
                bar = click.progressbar(length=max(total, 1), label=f"{kind} job {job_id}",
                                        file=sys.stderr, show_pos=True)
            if bar is not None and done > shown:
                bar.update(done - shown)
                shown = done
            if state in ("done", "failed"):
                return state
            time.sleep(POLL_S)
    finally:
        if bar is not None:
            bar.render_finish()
