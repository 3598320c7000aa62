"""Background jobs (services.jobs): one row per job, its progress and its outcome."""

from __future__ import annotations

import datetime as dt
import enum
import json
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from server.models.base import Base, utcnow


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


JOB_STATES = tuple(state.value for state in JobState)
# Kinds of which at most one job may be queued or running at a time, site-wide (a partial
# UNIQUE index, so that every app server may try to start one and exactly one succeeds).
# Adding a kind here needs a migration that recreates the index.
EXCLUSIVE_KINDS = ("recover",)
_ACTIVE_EXCLUSIVE = text("kind IN ('recover') AND state IN ('queued', 'running')")


class Job(Base):
    """A job is split into ``chunks`` pieces of work that may run on different workers;
    ``chunks_done`` counts those finished, the last one marks the job done.
    ``heartbeat_at`` moves while a worker makes progress: a running job whose
    heartbeat stopped is failed (its worker died) and can be restarted.
    ``result_json``: what the job reports beyond its counters (a recovery's list of
    submissions and how each ended)."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(f"state IN {JOB_STATES!r}", name="state"),
        Index("uq_jobs_one_active_exclusive", "kind", unique=True,
              sqlite_where=_ACTIVE_EXCLUSIVE, postgresql_where=_ACTIVE_EXCLUSIVE),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    course_id: Mapped[int | None] = mapped_column(
        ForeignKey("courses.id", ondelete="CASCADE"), index=True)
    args_json: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default=JobState.QUEUED.value)
    total: Mapped[int] = mapped_column(default=0)
    done: Mapped[int] = mapped_column(default=0)
    changed: Mapped[int] = mapped_column(default=0)
    errors: Mapped[int] = mapped_column(default=0)
    chunks: Mapped[int] = mapped_column(default=1)
    chunks_done: Mapped[int] = mapped_column(default=0)
    # Bumped by every restart: a chunk of an earlier run that finishes late is ignored.
    attempt: Mapped[int] = mapped_column(default=1)
    error: Mapped[str | None] = mapped_column(Text)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    heartbeat_at: Mapped[dt.datetime | None]
    result_json: Mapped[str | None] = mapped_column(Text)

    @property
    def args(self) -> Any:
        return json.loads(self.args_json)

    @property
    def result(self) -> Any:
        return json.loads(self.result_json) if self.result_json else None
