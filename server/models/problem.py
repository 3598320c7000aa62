from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from server.models.base import Base, utcnow

if TYPE_CHECKING:
    from server.models.course import Course
    from server.models.user import User


class Problem(Base):
    """A problem of the bank: shared (``course_id`` NULL, from the bank folder) or
    owned by one course.

    ``id`` is the problem's key, used by assignments and in URLs: the spec id
    (``"mlp-relu"``) for a shared problem, ``"<spec id>.c<course id>"`` for a
    course's own (a spec id has no dot, so the two never collide). ``spec_id``
    is the id written in the spec; it is unique per owner (two partial unique
    indexes), so a course may have its own ``mlp-relu`` beside the shared one.
    """

    __tablename__ = "problems"
    __table_args__ = (
        Index("uq_problems_shared_spec_id", "spec_id", unique=True,
              sqlite_where=text("course_id IS NULL"),
              postgresql_where=text("course_id IS NULL")),
        Index("uq_problems_course_spec_id", "course_id", "spec_id", unique=True,
              sqlite_where=text("course_id IS NOT NULL"),
              postgresql_where=text("course_id IS NOT NULL")),
    )

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    spec_id: Mapped[str] = mapped_column(String(100))
    course_id: Mapped[int | None] = mapped_column(ForeignKey("courses.id"))
    title: Mapped[str] = mapped_column(String(200))
    answer_type: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    course: Mapped[Course | None] = relationship()
    versions: Mapped[list[ProblemVersion]] = relationship(
        back_populates="problem", order_by="ProblemVersion.version"
    )

    @property
    def shared(self) -> bool:
        return self.course_id is None


class ProblemVersion(Base):
    """One text of a problem's spec; instances keep the version they came from."""

    __tablename__ = "problem_versions"
    __table_args__ = (
        UniqueConstraint("problem_id", "version"),
        UniqueConstraint("problem_id", "spec_hash"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    problem_id: Mapped[str] = mapped_column(ForeignKey("problems.id", ondelete="CASCADE"))
    version: Mapped[int]
    spec_text: Mapped[str] = mapped_column(Text)
    spec_hash: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # Who saved it (NULL: ``nabla problems sync``, or before authors were kept)
    # and how: "sync", "editor", "api", "copy" (NULL before this was kept).
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    origin: Mapped[str | None] = mapped_column(String(16))

    problem: Mapped[Problem] = relationship(back_populates="versions")
    author: Mapped[User | None] = relationship()
