"""Users: creation, authentication (with login throttling) and passwords.

Login throttling counts failed logins per (email, client address) and per
client address in shared counters (server.services.limits: the database, or
Redis), never per account: wrong passwords sent from one address lock out
that address only, so nobody can keep a classmate or the instructor out of
their account from elsewhere. The email is counted as typed (normalized), not
as an account: unknown emails get the same responses, the same counters and
the same password-hashing work as known ones, so throttling does not tell
which emails exist.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.db import write_transaction
from server.models import User
from server.models.user import new_session_nonce
from server.services import passwords
from server.services.errors import Conflict, ServiceError, ValidationError
from server.services.limits import Limiter, Rate, duration_text


@dataclasses.dataclass(frozen=True)
class LoginRates:
    """Failed logins allowed per (email, address) and per address (all emails).

    A whole class behind one NAT address shares the address limit, so it is
    generous; correct logins never count against it.
    """

    per_email_and_address: Rate = Rate(5, 15 * 60)
    per_address: Rate = Rate(50, 15 * 60)


class LoginThrottled(ServiceError):
    def __init__(self, retry_after: int, whole_address: bool) -> None:
        self.retry_after = retry_after
        what = "from your address" if whole_address else "for this email from your address"
        super().__init__(
            f"password: too many failed logins {what}; try again in "
            f"{duration_text(retry_after)}")


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


def _login_keys(email: str, address: str) -> tuple[str, str]:
    typed = (email or "").strip().lower()
    digest = hashlib.sha256(typed.encode("utf-8", "replace")).hexdigest()[:32]
    return f"login:email:{digest}:{address}", f"login:address:{address}"


class _LoginThrottle:
    """Slots taken before a password is checked, so that concurrent guesses
    cannot all slip in before the first failure is counted."""

    def __init__(self, limiter: Limiter, rates: LoginRates, email: str, address: str,
                 now: float | None) -> None:
        self.limiter, self.rates, self.now = limiter, rates, now
        self.email_key, self.address_key = _login_keys(email, address)

    def take(self) -> None:
        """Count this login as failed until it succeeds; raise LoginThrottled when over."""
        by_address = self.limiter.take(self.address_key, self.rates.per_address, self.now)
        if not by_address.allowed:
            raise LoginThrottled(by_address.retry_after, whole_address=True)
        by_email = self.limiter.take(self.email_key, self.rates.per_email_and_address, self.now)
        if not by_email.allowed:
            self.limiter.give_back(self.address_key, self.rates.per_address, self.now)
            raise LoginThrottled(by_email.retry_after, whole_address=False)

    def succeeded(self) -> None:
        self.limiter.clear(self.email_key, self.rates.per_email_and_address, self.now)
        self.limiter.give_back(self.address_key, self.rates.per_address, self.now)


def authenticate(
    session: Session, email: str, password: str, *, limiter: Limiter | None = None,
    address: str | None = None, rates: LoginRates | None = None, now: float | None = None,
) -> User | None:
    """The user with this email and password, or None (never says which was wrong).

    With a ``limiter``, failed logins are counted per (email, ``address``) and
    per ``address`` (``rates``), and LoginThrottled is raised, before any
    password is checked, while either is over its rate. A correct password
    clears the (email, address) count. ``now``: Unix time (tests). The
    counters write in their own transactions: on SQLite, ``session`` must not
    hold the write lock (the login view's session is a reader).
    """
    throttle = None
    if limiter is not None:
        throttle = _LoginThrottle(limiter, rates or LoginRates(), email,
                                  address or "unknown", now)
        throttle.take()
    user = get_user_by_email(session, email)
    # An unknown email is checked against a dummy hash: the same work, the same time.
    if not passwords.verify_password(user.password_hash if user else None, password):
        return None
    assert user is not None and user.password_hash is not None
    if throttle is not None:
        throttle.succeeded()
    if passwords.needs_rehash(user.password_hash):
        write_transaction(session)
        user.password_hash = passwords.hash_password(password)
        session.flush()
    return user


def set_password(session: Session, user: User, new_password: str) -> None:
    problem = passwords.password_problem(new_password)
    if problem:
        raise ValidationError("new_password", problem)
    user.password_hash = passwords.hash_password(new_password)
    user.session_nonce = new_session_nonce()  # every session of the user ends
    session.flush()


def change_password(session: Session, user: User, current_password: str, new_password: str) -> None:
    if not passwords.verify_password(user.password_hash, current_password):
        raise ValidationError("current_password", "is not your current password")
    if current_password == new_password:
        raise ValidationError("new_password", "is the same as the current password")
    set_password(session, user, new_password)


def load_user_for_login_session(session: Session, login_id: str) -> User | None:
    """Resolve Flask-Login's stored id ("user id:session nonce"), on every request."""
    user_id, _, nonce = login_id.partition(":")
    if not user_id.isdigit():
        return None
    user = session.get(User, int(user_id))
    if user is None or not secrets.compare_digest(user.session_nonce.encode(), nonce.encode()):
        return None
    return user


def end_sessions(session: Session, user: User) -> None:
    """End every login session of ``user`` (logout, "log out everywhere"): the
    session id they carry names the old nonce."""
    write_transaction(session)
    user.session_nonce = new_session_nonce()
    session.flush()
