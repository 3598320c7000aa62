from __future__ import annotations

import datetime as dt
import enum
from typing import TYPE_CHECKING

from sqlalchemy import CheckConstraint, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from server.models.base import Base, utcnow

if TYPE_CHECKING:
    from server.models.course import Course
    from server.models.problem import Problem


class ScorePolicy(enum.StrEnum):
    BEST = "best"
    LAST = "last"


class Assignment(Base):
    __tablename__ = "assignments"
    __table_args__ = (
        CheckConstraint("due_at >= open_at", name="due_after_open"),
        CheckConstraint("late_until IS NULL OR late_until >= due_at", name="late_after_due"),
        CheckConstraint("late_credit >= 0 AND late_credit <= 100", name="late_credit_percent"),
        CheckConstraint("max_attempts IS NULL OR max_attempts >= 1", name="max_attempts"),
        CheckConstraint("score_policy IN ('best', 'last')", name="score_policy"),
        CheckConstraint("points >= 0", name="points_nonnegative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    course_id: Mapped[int] = mapped_column(ForeignKey("courses.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    open_at: Mapped[dt.datetime]
    due_at: Mapped[dt.datetime]
    # Submissions after due_at and up to late_until earn late_credit percent.
    late_until: Mapped[dt.datetime | None]
    late_credit: Mapped[int] = mapped_column(default=0)
    # NULL: unlimited attempts.
    max_attempts: Mapped[int | None]
    score_policy: Mapped[str] = mapped_column(String(8), default=ScorePolicy.BEST.value)
    # What the assignment is worth in the gradebook and the exports.
    points: Mapped[float] = mapped_column(default=100.0, server_default="100")
    # The id of the matching Canvas assignment: the Canvas export titles its column with it.
    canvas_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    course: Mapped[Course] = relationship(back_populates="assignments")
    problems: Mapped[list[AssignmentProblem]] = relationship(
        back_populates="assignment",
        cascade="all, delete-orphan",
        order_by="AssignmentProblem.position",
    )

    def __repr__(self) -> str:
        return f"<Assignment {self.id} {self.title!r}>"


class AssignmentProblem(Base):
    __tablename__ = "assignment_problems"
    __table_args__ = (
        UniqueConstraint("assignment_id", "problem_id"),
        CheckConstraint("weight > 0", name="weight_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    assignment_id: Mapped[int] = mapped_column(
        ForeignKey("assignments.id", ondelete="CASCADE")
    )
    problem_id: Mapped[str] = mapped_column(ForeignKey("problems.id"), index=True)
    weight: Mapped[float] = mapped_column(default=1.0)
    position: Mapped[int] = mapped_column(default=0)

    assignment: Mapped[Assignment] = relationship(back_populates="problems")
    problem: Mapped[Problem] = relationship()
