"""Personal API tokens: random, shown once, stored as SHA-256."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session, joinedload

from server.db import write_transaction
from server.models import ApiToken, User, utcnow
from server.services.errors import NotFound, ValidationError

TOKEN_PREFIX = "nabla_"
MAX_ACTIVE_TOKENS = 20
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


def hash_token(token: str) -> str:
    # The token carries 256 random bits, so a plain SHA-256 suffices: there is
    # nothing to brute-force, unlike a password.
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, user: User, name: str) -> tuple[ApiToken, str]:
    """A new token for ``user``; returns the row and the token text (shown once)."""
    name = " ".join((name or "").split())
    if not name:
        raise ValidationError("name", "is required (say where the token is used)")
    if len(name) > 100:
        raise ValidationError("name", "is longer than 100 characters")
    active = active_tokens(session, user)
    if len(active) >= MAX_ACTIVE_TOKENS:
        raise ValidationError(
            "name", f"you already have {MAX_ACTIVE_TOKENS} active tokens; revoke one first"
        )
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user=user, name=name, token_hash=hash_token(token), prefix=token[:12])
    session.add(row)
    session.flush()
    return row, token


def active_tokens(session: Session, user: User) -> list[ApiToken]:
    return list(
        session.scalars(
            select(ApiToken)
            .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
            .order_by(ApiToken.created_at, ApiToken.id)
        )
    )


def revoke_token(session: Session, user: User, token_id: int) -> ApiToken:
    """Revoke one of ``user``'s tokens (another user's token is "not found")."""
    row = session.get(ApiToken, token_id)
    if row is None or row.user_id != user.id:
        raise NotFound(f"token: no token {token_id} of yours")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
    return row


# Built once: this runs on every API request, and building the statement (and its
# cache key) each time cost more than running it.
_TOKEN_WITH_USER = (
    select(ApiToken)
    .options(joinedload(ApiToken.user))  # one query per API request, not two
    .where(ApiToken.token_hash == bindparam("token_hash"))
)


def user_for_token(session: Session, token: str) -> User | None:
    """The owner of an active token, recording its use; None if unknown or revoked."""
    if not token or len(token) > 200:
        return None
    row = session.scalar(_TOKEN_WITH_USER, {"token_hash": hash_token(token)})
    if row is None or row.revoked_at is not None:
        return None
    now = utcnow()
    # At most one write a minute per token: a script polling the API should
    # not turn every read into a write.
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        write_transaction(session)
        row.last_used_at = now
        session.flush()
    return row.user
