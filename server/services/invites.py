"""One-time set-password links for accounts created by a roster import (or by hand).

A link carries a random token; only its SHA-256 is stored. It is valid for
``INVITE_DAYS`` days and once: setting the password uses it up. No mail
server is needed: the instructor gets the links once (a CSV to mail out, or
``nabla users invite EMAIL``) and sends them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.db import write_transaction
from server.models import PasswordInvite, User
from server.services import accounts, csvfile
from server.services.errors import NotFound

INVITE_DAYS = 7
TOKEN_PREFIX = "inv_"
PATH = "/set-password/"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_invite(session: Session, user: User, now: dt.datetime) -> tuple[PasswordInvite, str]:
    """A new link for ``user`` (flush only); the token is returned once, never stored."""
    write_transaction(session)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    invite = PasswordInvite(user_id=user.id, token_hash=_hash(token), created_at=now,
                            expires_at=now + dt.timedelta(days=INVITE_DAYS))
    session.add(invite)
    session.flush()
    return invite, token


def invite_link(base_url: str, token: str) -> str:
    return base_url.rstrip("/") + PATH + token


def valid_invite(session: Session, token: str, now: dt.datetime) -> PasswordInvite:
    """The unused, unexpired invite of ``token``; NotFound (with the reason) otherwise."""
    invite = session.scalar(select(PasswordInvite).where(
        PasswordInvite.token_hash == _hash(token or "")))
    if invite is None:
        raise NotFound("link: this set-password link is unknown; ask your instructor for a "
                       "new one")
    if invite.used_at is not None:
        raise NotFound("link: this set-password link was already used; log in, or ask your "
                       "instructor for a new one")
    if invite.expires_at < now:
        raise NotFound(f"link: this set-password link expired on "
                       f"{invite.expires_at:%Y-%m-%d %H:%M} UTC; ask your instructor for a "
                       "new one")
    return invite


def redeem_invite(session: Session, token: str, password: str, now: dt.datetime) -> User:
    """Set the password and use the link up (flush only)."""
    write_transaction(session)
    invite = valid_invite(session, token, now)
    user = session.get(User, invite.user_id)
    assert user is not None  # the invite is deleted with its user
    accounts.set_password(session, user, password)
    invite.used_at = now
    session.flush()
    return user


def invites_csv(session: Session, users: Sequence[User], base_url: str, now: dt.datetime
                ) -> str:
    """``email,name,link`` for ``users``, one new link each: the file to mail out
    (services.csvfile: a name or an email that looks like a formula is escaped)."""
    rows: list[list[str]] = [["email", "name", "link"]]
    for user in users:
        _, token = create_invite(session, user, now)
        rows.append([user.email, user.name, invite_link(base_url, token)])
    return csvfile.text(rows)


def new_account_links(session: Session, emails: Sequence[str], base_url: str,
                      now: dt.datetime) -> str:
    """``invites_csv`` for the accounts of ``emails`` (a roster import's new ones)."""
    users = session.scalars(select(User).where(User.email.in_(list(emails)))
                            .order_by(User.email)).all()
    return invites_csv(session, users, base_url, now)
