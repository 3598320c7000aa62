from __future__ import annotations

import datetime as dt
import enum
import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from server.models.base import Base, utcnow

if TYPE_CHECKING:
    from server.models.assignment import AssignmentProblem
    from server.models.instance import Instance
    from server.models.user import User


class SubmissionStatus(enum.StrEnum):
    PENDING = "pending"  # stored, not graded yet
    GRADED = "graded"
    ERROR = "error"  # the grader failed; not the student's fault
    INVALID = "invalid"  # does not parse / validate: costs no attempt
    REFUSED = "refused"  # past the late-until date, or no attempts left


STATUS_VALUES = tuple(status.value for status in SubmissionStatus)


class Submission(Base):
    """Every answer a student sends, kept verbatim.

    ``attempt`` is NULL for submissions that cost no attempt (invalid,
    refused). The UNIQUE (user, assignment problem, attempt) constraint makes
    two concurrent submissions racing for the same attempt number collide in
    the database, so attempt limits hold without relying on Python-side checks.

    ``client_key`` is the random key of the form (or the API's
    ``Idempotency-Key``) that sent the answer: UNIQUE per user and problem, so
    a double click or a retried request stores one submission, not two.
    """

    __tablename__ = "submissions"
    __table_args__ = (
        UniqueConstraint("user_id", "assignment_problem_id", "attempt"),
        UniqueConstraint("user_id", "assignment_problem_id", "client_key"),
        CheckConstraint(f"status IN {STATUS_VALUES!r}", name="status"),
        CheckConstraint("attempt IS NULL OR attempt >= 1", name="attempt_positive"),
        Index("ix_submissions_assignment_problem_id", "assignment_problem_id"),
        # The periodic look for submissions left pending (services.recovery) reads this
        # small index, not the table.
        Index("ix_submissions_pending_created_at", "created_at",
              sqlite_where=text("status = 'pending'"),
              postgresql_where=text("status = 'pending'")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    assignment_problem_id: Mapped[int] = mapped_column(
        ForeignKey("assignment_problems.id", ondelete="CASCADE")
    )
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"))
    answer: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default=SubmissionStatus.PENDING.value)
    result_json: Mapped[str | None] = mapped_column(Text)
    score: Mapped[float | None]
    attempt: Mapped[int | None]
    late: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    graded_at: Mapped[dt.datetime | None]
    client_ip: Mapped[str | None] = mapped_column(String(45))
    client_key: Mapped[str | None] = mapped_column(String(64))
    # Seeds of the hidden instances this answer is checked on (JSON list), drawn
    # per submission when it is stored, kept so that a regrade reproduces them.
    hidden_seeds_json: Mapped[str | None] = mapped_column(Text)

    user: Mapped[User] = relationship()
    assignment_problem: Mapped[AssignmentProblem] = relationship()
    instance: Mapped[Instance] = relationship()

    @property
    def result(self) -> Any:
        return None if self.result_json is None else json.loads(self.result_json)

    @property
    def hidden_seeds(self) -> list[int] | None:
        return None if self.hidden_seeds_json is None else json.loads(self.hidden_seeds_json)


class Regrade(Base):
    """Audit of one regrade of one submission: who, why, before and after."""

    __tablename__ = "regrades"

    id: Mapped[int] = mapped_column(primary_key=True)
    submission_id: Mapped[int] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE"), index=True
    )
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    reason: Mapped[str] = mapped_column(Text, default="")
    old_status: Mapped[str] = mapped_column(String(16))
    new_status: Mapped[str] = mapped_column(String(16))
    old_score: Mapped[float | None]
    new_score: Mapped[float | None]
    old_result_json: Mapped[str | None] = mapped_column(Text)
    new_result_json: Mapped[str | None] = mapped_column(Text)
    # The background job that made this change (services.jobs), if any.
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"),
                                               index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    submission: Mapped[Submission] = relationship()
    actor: Mapped[User | None] = relationship()
