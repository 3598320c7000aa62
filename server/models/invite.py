from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from server.models.base import Base, utcnow

if TYPE_CHECKING:
    from server.models.user import User


class PasswordInvite(Base):
    """A one-time set-password link; only the SHA-256 of its random token is stored.

    Opening the link starts a set-password *step* (services.invites): a random nonce
    kept in that browser's session, whose SHA-256 is stored here with the time the
    step ends. Opening the link again replaces the step; setting the password uses
    the link up and ends the step.
    """

    __tablename__ = "password_invites"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]
    step_hash: Mapped[str | None] = mapped_column(String(64))
    step_expires_at: Mapped[dt.datetime | None]

    user: Mapped[User] = relationship()
