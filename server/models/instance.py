from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, ForeignKey, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from server.models.base import Base, utcnow

if TYPE_CHECKING:
    from server.models.assignment import AssignmentProblem
    from server.models.problem import ProblemVersion
    from server.models.user import User


class Instance(Base):
    """A student's own draw of a problem: one per (user, assignment problem).

    ``dims``, ``choices``, ``values`` and ``reference`` are JSON text exactly as
    the engine produced them; the reference never leaves the server.
    """

    __tablename__ = "instances"
    __table_args__ = (UniqueConstraint("user_id", "assignment_problem_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    assignment_problem_id: Mapped[int] = mapped_column(
        ForeignKey("assignment_problems.id", ondelete="CASCADE"), index=True
    )
    problem_version_id: Mapped[int] = mapped_column(ForeignKey("problem_versions.id"))
    # 0 .. 2**31-1 (see services.instances.derive_seed); BigInteger leaves room.
    seed: Mapped[int] = mapped_column(BigInteger)
    dims_json: Mapped[str] = mapped_column(Text)
    choices_json: Mapped[str] = mapped_column(Text)
    values_json: Mapped[str] = mapped_column(Text)
    reference_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    user: Mapped[User] = relationship()
    assignment_problem: Mapped[AssignmentProblem] = relationship()
    problem_version: Mapped[ProblemVersion] = relationship()

    @property
    def dims(self) -> dict[str, Any]:
        return json.loads(self.dims_json)

    @property
    def choices(self) -> dict[str, Any]:
        return json.loads(self.choices_json)

    @property
    def values(self) -> Any:
        return json.loads(self.values_json)

    @property
    def reference(self) -> Any:
        return json.loads(self.reference_json)
