from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from server.models.base import Base, utcnow


class Problem(Base):
    """A problem of the bank, by its spec id (``"mlp-relu"``)."""

    __tablename__ = "problems"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    answer_type: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    versions: Mapped[list[ProblemVersion]] = relationship(
        back_populates="problem", order_by="ProblemVersion.version"
    )


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

    problem: Mapped[Problem] = relationship(back_populates="versions")
