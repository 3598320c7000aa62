"""Users: creation, authentication and passwords."""

from __future__ import annotations

import datetime as dt
import math
import re
import secrets

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server.models import User, utcnow
from server.services import passwords
from server.services.errors import Conflict, ServiceError, ValidationError

# After this many consecutive wrong passwords, logins to the account are
# refused for LOCK_BASE, doubling with every further failure up to LOCK_MAX.
# That stops password guessing without locking a student out for long.
MAX_FAILED_LOGINS = 5
LOCK_BASE = dt.timedelta(minutes=1)
LOCK_MAX = dt.timedelta(minutes=15)


class LoginThrottled(ServiceError):
    def __init__(self, retry_after: dt.timedelta) -> None:
        self.retry_after = retry_after
        minutes = max(1, math.ceil(retry_after.total_seconds() / 60))
        super().__init__(
            f"password: too many wrong passwords for this account; try again in "
            f"{minutes} minute{'s' if minutes != 1 else ''}"
        )

# Deliberately loose: one @, something on both sides, a dot in the domain, no
# spaces. Whether the address receives mail is not our concern.
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_NAME_LENGTH = 200


def normalize_email(email: str, field: str = "email") -> str:
    value = (email or "").strip().lower()
    if not value:
        raise ValidationError(field, "is required")
    if len(value) > 254:
        raise ValidationError(field, "is longer than 254 characters")
    if not _EMAIL_RE.match(value):
        raise ValidationError(field, f"{email.strip()!r} is not an email address")
    return value


def clean_name(name: str, field: str = "name") -> str:
    value = " ".join((name or "").split())
    if not value:
        raise ValidationError(field, "is required")
    if len(value) > MAX_NAME_LENGTH:
        raise ValidationError(field, f"is longer than {MAX_NAME_LENGTH} characters")
    return value


def generate_password() -> str:
    """A random password for accounts created without one (shown once)."""
    return secrets.token_urlsafe(12)


def get_user_by_email(session: Session, email: str) -> User | None:
    try:
        normalized = normalize_email(email)
    except ValidationError:
        return None
    return session.scalar(select(User).where(User.email == normalized))


def create_user(
    session: Session,
    email: str,
    name: str,
    password: str | None = None,
    *,
    is_admin: bool = False,
) -> User:
    """A new user; ``password=None`` leaves the account without a password (no login)."""
    normalized = normalize_email(email)
    cleaned = clean_name(name)
    if session.scalar(select(User.id).where(User.email == normalized)) is not None:
        raise Conflict(f"email: a user with the email {normalized} already exists")
    password_hash = None
    if password is not None:
        problem = passwords.password_problem(password)
        if problem:
            raise ValidationError("password", problem)
        password_hash = passwords.hash_password(password)
    user = User(email=normalized, name=cleaned, password_hash=password_hash, is_admin=is_admin)
    session.add(user)
    session.flush()
    return user


def lock_duration(failed_logins: int) -> dt.timedelta | None:
    """How long logins are refused after ``failed_logins`` consecutive failures."""
    if failed_logins < MAX_FAILED_LOGINS:
        return None
    return min(LOCK_BASE * 2 ** min(failed_logins - MAX_FAILED_LOGINS, 10), LOCK_MAX)


def authenticate(
    session: Session, email: str, password: str, now: dt.datetime | None = None
) -> User | None:
    """The user with this email and password, or None (never says which was wrong).

    Raises LoginThrottled while the account is locked after repeated failures
    (the failure count is written even though the login fails: the caller
    commits it).
    """
    now = now or utcnow()
    user = get_user_by_email(session, email)
    if user is not None and user.login_locked_until is not None and user.login_locked_until > now:
        raise LoginThrottled(user.login_locked_until - now)
    if not passwords.verify_password(user.password_hash if user else None, password):
        if user is not None:
            _record_failed_login(session, user, now)
        return None
    assert user is not None and user.password_hash is not None
    if user.failed_logins or user.login_locked_until is not None:
        user.failed_logins = 0
        user.login_locked_until = None
    if passwords.needs_rehash(user.password_hash):
        user.password_hash = passwords.hash_password(password)
    session.flush()
    return user


def _record_failed_login(session: Session, user: User, now: dt.datetime) -> None:
    # One UPDATE ... SET n = n + 1, so concurrent guesses are all counted.
    session.execute(
        update(User).where(User.id == user.id).values(failed_logins=User.failed_logins + 1)
    )
    session.refresh(user, ["failed_logins"])
    duration = lock_duration(user.failed_logins)
    if duration is not None:
        user.login_locked_until = now + duration
        session.flush()


def set_password(session: Session, user: User, new_password: str) -> None:
    problem = passwords.password_problem(new_password)
    if problem:
        raise ValidationError("new_password", problem)
    user.password_hash = passwords.hash_password(new_password)
    user.failed_logins = 0
    user.login_locked_until = None
    session.flush()


def change_password(session: Session, user: User, current_password: str, new_password: str) -> None:
    if not passwords.verify_password(user.password_hash, current_password):
        raise ValidationError("current_password", "is not your current password")
    if current_password == new_password:
        raise ValidationError("new_password", "is the same as the current password")
    set_password(session, user, new_password)


def load_user_for_login_session(session: Session, login_id: str) -> User | None:
    """Resolve Flask-Login's stored id ("user id:password fingerprint")."""
    user_id, _, fingerprint = login_id.partition(":")
    if not user_id.isdigit():
        return None
    user = session.get(User, int(user_id))
    if user is None or not secrets.compare_digest(user.password_fingerprint(), fingerprint):
        return None
    return user
