from __future__ import annotations

import datetime as dt
import secrets
from typing import TYPE_CHECKING

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from server.models.base import Base, utcnow

if TYPE_CHECKING:
    from server.models.course import Enrollment
    from server.models.token import ApiToken


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Stored lower-cased and stripped (see services.accounts.normalize_email).
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    # NULL until a password is set: a user imported from a roster cannot log in yet.
    password_hash: Mapped[str | None] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(default=False)
    # Part of every login session's id: logging out, "log out everywhere" and a
    # password change give it a new value, which ends every session of the user
    # (a cookie captured before is refused on its next request).
    session_nonce: Mapped[str] = mapped_column(String(32), default=lambda: new_session_nonce(),
                                               server_default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    enrollments: Mapped[list[Enrollment]] = relationship(
        back_populates="user", cascade="all, delete-orphan"
    )
    api_tokens: Mapped[list[ApiToken]] = relationship(
        back_populates="user", cascade="all, delete-orphan"
    )

    # --- Flask-Login protocol -------------------------------------------------
    # The login session stores "id:session nonce" (services.accounts checks it).
    is_active = True
    is_anonymous = False

    @property
    def is_authenticated(self) -> bool:
        return True

    def get_id(self) -> str:
        return f"{self.id}:{self.session_nonce}"

    def __repr__(self) -> str:
        return f"<User {self.id} {self.email}>"


def new_session_nonce() -> str:
    return secrets.token_hex(16)
