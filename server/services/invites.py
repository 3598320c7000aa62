"""One-time set-password links for accounts created by a roster import (or by hand).

A link carries a random token; only its SHA-256 is stored. It is valid for
``INVITE_DAYS`` days and once: setting the password uses it up. No mail
server is needed: the instructor gets the links once (a CSV to mail out, or
``nabla users invite EMAIL``) and sends them.

The token is in the link's path, and paths end up in access logs, proxies'
logs, browser histories and Referer headers. So the token is used once per
visit, to open the link: ``open_invite`` exchanges it for a set-password *step*,
a random nonce that the web view keeps in the browser's (signed) session, whose
SHA-256 is stored on the invite, valid ``STEP_MINUTES``; the view then
redirects to a URL without the token. The password is set with the step
(``redeem_step``), never with the token. Opening the link does not use it up
(a student who closes the tab opens it again; that new step replaces the old
one); setting the password uses it up and ends the step, so a replay of the
link or of the step after that fails with the reason.
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
from server.models.base import MAX_ROW_ID
from server.services import accounts, csvfile
from server.services.errors import NotFound

INVITE_DAYS = 7
STEP_MINUTES = 30
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


def _check_usable(invite: PasswordInvite, now: dt.datetime) -> PasswordInvite:
    if invite.used_at is not None:
        raise NotFound("link: this set-password link was already used; log in, or ask your "
                       "instructor for a new one")
    if invite.expires_at < now:
        raise NotFound(f"link: this set-password link expired on "
                       f"{invite.expires_at:%Y-%m-%d %H:%M} UTC; ask your instructor for a "
                       "new one")
    return invite


def valid_invite(session: Session, token: str, now: dt.datetime) -> PasswordInvite:
    """The unused, unexpired invite of ``token``; NotFound (with the reason) otherwise."""
    invite = session.scalar(select(PasswordInvite).where(
        PasswordInvite.token_hash == _hash(token or "")))
    if invite is None:
        raise NotFound("link: this set-password link is unknown; ask your instructor for a "
                       "new one")
    return _check_usable(invite, now)


def open_invite(session: Session, token: str, now: dt.datetime) -> tuple[PasswordInvite, str]:
    """Exchange a link's token for a new set-password step (flush only): the invite and
    the step's nonce, returned once (only its hash is stored), valid ``STEP_MINUTES``.
    The link stays usable; an earlier step of it ends. NotFound as ``valid_invite``."""
    write_transaction(session)
    invite = valid_invite(session, token, now)
    nonce = secrets.token_urlsafe(32)
    invite.step_hash = _hash(nonce)
    invite.step_expires_at = now + dt.timedelta(minutes=STEP_MINUTES)
    session.flush()
    return invite, nonce


def step_invite(session: Session, invite_id: object, nonce: object, now: dt.datetime
                ) -> PasswordInvite:
    """The invite of a set-password step (``invite_id`` and ``nonce`` as the browser's
    session holds them, whatever their type); NotFound with the reason when there is no
    such step, a newer one replaced it, it expired, or the link is used up or expired."""
    known = type(invite_id) is int and 0 < invite_id <= MAX_ROW_ID
    invite = session.get(PasswordInvite, invite_id) if known else None
    if invite is None:
        raise NotFound("link: no set-password link is open in this browser; open the link "
                       "you were sent (it works until a password is set)")
    _check_usable(invite, now)
    if invite.step_hash is None or not isinstance(nonce, str) or \
            not secrets.compare_digest(invite.step_hash, _hash(nonce)):
        raise NotFound("link: this set-password page was replaced by a newer one (the link "
                       "was opened again, maybe in another browser); open the link again")
    assert invite.step_expires_at is not None  # set with step_hash
    if invite.step_expires_at < now:
        raise NotFound(f"link: this set-password page expired after {STEP_MINUTES} minutes; "
                       "open the link again (it works until a password is set)")
    return invite


def redeem_step(session: Session, invite_id: object, nonce: object, password: str,
                now: dt.datetime) -> User:
    """Set the password of a set-password step's account, use the link up and end the
    step (flush only). NotFound as ``step_invite``; ValidationError for the password."""
    write_transaction(session)
    invite = step_invite(session, invite_id, nonce, now)
    user = session.get(User, invite.user_id)
    assert user is not None  # the invite is deleted with its user
    accounts.set_password(session, user, password)
    invite.used_at = now
    invite.step_hash = invite.step_expires_at = None
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
