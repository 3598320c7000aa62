"""Per-student exceptions to an assignment: extensions and score overrides (audited)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from sqlalchemy import CheckConstraint, ForeignKey, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from server.models.base import Base, utcnow

if TYPE_CHECKING:
    from server.models.assignment import Assignment, AssignmentProblem
    from server.models.user import User


class Extension(Base):
    """One student's own dates for one assignment (replacing due_at and late_until)."""

    __tablename__ = "extensions"
    __table_args__ = (
        UniqueConstraint("user_id", "assignment_id"),
        CheckConstraint("late_until IS NULL OR late_until >= due_at", name="late_after_due"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    assignment_id: Mapped[int] = mapped_column(
        ForeignKey("assignments.id", ondelete="CASCADE"), index=True)
    due_at: Mapped[dt.datetime]
    late_until: Mapped[dt.datetime | None]
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    user: Mapped[User] = relationship(foreign_keys=[user_id])
    assignment: Mapped[Assignment] = relationship()


class ScoreOverride(Base):
    """A score set by staff for one student on one assignment problem (in [0, 1])."""

    __tablename__ = "score_overrides"
    __table_args__ = (
        UniqueConstraint("user_id", "assignment_problem_id"),
        CheckConstraint("score >= 0 AND score <= 1", name="score_unit"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    assignment_problem_id: Mapped[int] = mapped_column(
        ForeignKey("assignment_problems.id", ondelete="CASCADE"), index=True)
    score: Mapped[float]
    reason: Mapped[str] = mapped_column(Text)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    assignment_problem: Mapped[AssignmentProblem] = relationship()


class OverrideEvent(Base):
    """Audit of every override set, changed or removed: who, when, old, new, why.
    ``new_score`` NULL: the override was removed (the computed score counts again)."""

    __tablename__ = "override_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    assignment_problem_id: Mapped[int] = mapped_column(
        ForeignKey("assignment_problems.id", ondelete="CASCADE"), index=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    old_score: Mapped[float | None]
    new_score: Mapped[float | None]
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    actor: Mapped[User | None] = relationship(foreign_keys=[actor_id])
