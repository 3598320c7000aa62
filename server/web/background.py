"""The app's side of background jobs (services.jobs): their settings as the app has
them, and the periodic start of recovery jobs.

Every app process of a real server (each gunicorn worker of each app server)
looks soon after it starts and then every ``NABLA_RECOVER_EVERY_S`` seconds
(with jitter) for submissions left ``pending`` longer than
``NABLA_RECOVER_AFTER_S`` (services.recovery: one query on a partial index),
and when it finds some starts a ``recover`` job, which runs where jobs run (a
thread of this process, or ``nabla worker`` processes with Redis). At most one
recovery job is queued or running site-wide (a partial UNIQUE index): the other
processes' looks find it and start nothing. ``NABLA_RECOVER_EVERY_S=0`` turns
the looks off (``nabla submissions recover`` still works).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Mapping
from typing import Any

from flask import Flask

from server.db import begin_as_reader, get_engine, make_sessionmaker
from server.models import Job

log = logging.getLogger(__name__)

FIRST_LOOK_S = (1.0, 5.0)


def app_job_settings(app: Flask) -> dict[str, Any]:
    config = app.config
    return {**config["NABLA_JOBS"], "redis_url": config.get("NABLA_REDIS_URL"),
            "queue": config.get("NABLA_REDIS_PREFIX", "nabla:") + "jobs",
            # A bank handed to the app (tests, tools); else each job reads the database's.
            "bank": config.get("NABLA_PROBLEM_BANK")}


def look_for_pending(app: Flask, settings: Mapping[str, Any] | None = None) -> Job | None:
    """One look: the recovery job started (and dispatched), or None."""
    from server.services import jobs, recovery

    settings = settings or app_job_settings(app)
    engine = get_engine(app)
    with make_sessionmaker(engine)() as session:
        begin_as_reader(session)  # SQLite: the look takes no write lock (starting a job does)
        job = recovery.start_recovery(session, settings,
                                      older_than_s=app.config["NABLA_RECOVER"]["after_s"])
        session.commit()
    if job is not None:
        jobs.dispatch(engine, job, settings)
    return job


def start_recovery_looks(app: Flask) -> threading.Thread | None:
    every_s = app.config["NABLA_RECOVER"]["every_s"]
    if every_s <= 0:
        return None

    def loop() -> None:
        wait = random.uniform(*FIRST_LOOK_S)
        while True:
            time.sleep(wait)
            try:
                look_for_pending(app)
            except Exception:  # the next look tries again; the server goes on
                log.exception("looking for pending submissions failed")
            wait = every_s * random.uniform(0.8, 1.2)

    thread = threading.Thread(target=loop, name="nabla-recovery-looks", daemon=True)
    thread.start()
    return thread
