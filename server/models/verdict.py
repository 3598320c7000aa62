from __future__ import annotations

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from server.models.base import Base


class SubmissionVerdict(Base):
    """One graded submission's verdict on one asked gradient, in queryable form
    (services.verdicts writes it when a submission is graded or regraded).

    The submission's first mistake (the first wrong line of an equations answer:
    its line number, the model solution's step for the same gradient, the target
    and the line's text without numbering, comments or whitespace) is repeated on
    each of its rows; ``position`` 0 is the first asked gradient, so counting
    rows at position 0 counts submissions. ``assignment_problem_id`` and
    ``user_id`` are copies of the submission's, so grouping needs no join.
    """

    __tablename__ = "submission_verdicts"
    # Covering indexes for services.analytics' GROUP BYs: per gradient and verdict,
    # per student (by structural choice), and the first mistakes (position 0).
    __table_args__ = (
        Index("ix_submission_verdicts_problem_gradient", "assignment_problem_id", "gradient",
              "verdict", "user_id", "position"),
        Index("ix_submission_verdicts_problem_user", "assignment_problem_id", "user_id",
              "verdict"),
        Index("ix_submission_verdicts_problem_step", "assignment_problem_id", "position",
              "first_step"),
    )

    submission_id: Mapped[int] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE"), primary_key=True)
    gradient: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int]
    verdict: Mapped[str] = mapped_column(String(32))
    assignment_problem_id: Mapped[int] = mapped_column(
        ForeignKey("assignment_problems.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    first_line: Mapped[int | None]
    first_step: Mapped[int | None]
    first_target: Mapped[str | None] = mapped_column(String(64))
    first_text: Mapped[str | None] = mapped_column(String(200))
