"""The app processes of a real server finish stale pending submissions themselves
(services.recovery): each runs a daemon thread that looks soon after start and
then every ``NABLA_RECOVER_EVERY_S`` seconds (with jitter, so that the workers of
several app servers do not look at once); the claims make concurrent looks safe.

Settings: ``NABLA_RECOVER_AFTER_S`` (120): how old a pending submission must be
before it is taken for abandoned; ``NABLA_RECOVER_EVERY_S`` (60; 0 turns the
thread off, ``nabla submissions recover`` still works).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import threading

from flask import Flask

from server.db import get_engine, make_sessionmaker

log = logging.getLogger(__name__)

FIRST_LOOK_S = (1.0, 5.0)


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    try:
        value = float(raw) if raw else default
    except ValueError:
        log.error("%s must be a number of seconds, got %r; using %g", name, raw, default)
        return default
    return max(0.0, value)


def recovery_settings() -> tuple[float, float]:
    """(after, every) in seconds."""
    from server.services.recovery import DEFAULT_AFTER_S

    return (_seconds("NABLA_RECOVER_AFTER_S", DEFAULT_AFTER_S),
            _seconds("NABLA_RECOVER_EVERY_S", 60.0))


def recover_once(app: Flask, after_s: float) -> list:
    from server.services.recovery import recover_pending

    session = make_sessionmaker(get_engine(app))()
    try:
        return recover_pending(session, now=lambda: dt.datetime.now(dt.UTC),
                               commit=session.commit,
                               older_than=dt.timedelta(seconds=after_s))
    finally:
        session.close()


def start_recovery_thread(app: Flask) -> threading.Thread | None:
    after_s, every_s = recovery_settings()
    if every_s <= 0:
        return None
    stop = threading.Event()

    def loop() -> None:
        wait = random.uniform(*FIRST_LOOK_S)
        while not stop.wait(wait):
            try:
                recover_once(app, after_s)
            except Exception:  # the next look tries again; the server goes on
                log.exception("recovering pending submissions failed")
            wait = every_s * random.uniform(0.8, 1.2)

    thread = threading.Thread(target=loop, name="nabla-recovery", daemon=True)
    thread.start()
    return thread
