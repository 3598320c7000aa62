"""services.invites: one-time set-password links, opened into a short set-password step
(issue 22: the token leaves the URL at once), used up when a password is set."""

from __future__ import annotations

import datetime as dt

import pytest

from server.models import utcnow
from server.services import invites
from server.services.errors import NotFound, ValidationError

pytestmark = pytest.mark.usefixtures("db_backend")
MINUTE = dt.timedelta(minutes=1)
DAY = dt.timedelta(days=1)


@pytest.fixture
def invited(session, make_user):
    user = make_user(session, password=None)
    now = utcnow()
    invite, token = invites.create_invite(session, user, now)
    return user, invite, token, now


def test_links_are_single_use_and_expire(session, make_user, invited):
    user, _, token, now = invited
    _, old = invites.create_invite(session, user, now - 8 * DAY)
    with pytest.raises(NotFound, match="expired"):
        invites.open_invite(session, old, now)
    with pytest.raises(NotFound, match="unknown"):
        invites.open_invite(session, "inv_nope", now)
    invite, nonce = invites.open_invite(session, token, now)
    with pytest.raises(ValidationError) as excinfo:
        invites.redeem_step(session, invite.id, nonce, "short", now)
    assert excinfo.value.field == "new_password"
    assert invites.redeem_step(session, invite.id, nonce, "a long new password", now) == user
    assert user.password_hash and invite.used_at == now and invite.step_hash is None
    with pytest.raises(NotFound, match="already used"):
        invites.redeem_step(session, invite.id, nonce, "another long password", now)
    with pytest.raises(NotFound, match="already used"):
        invites.open_invite(session, token, now)


def test_opening_a_link_stores_only_the_nonces_hash_and_does_not_use_it_up(session, invited):
    user, invite, token, now = invited
    first_invite, first = invites.open_invite(session, token, now)
    assert first_invite is invite and invite.used_at is None and user.password_hash is None
    assert first not in (invite.step_hash, token) and len(invite.step_hash) == 64
    assert invite.step_expires_at == now + invites.STEP_MINUTES * MINUTE
    # The tab was closed; the student opens the link again: a new step replaces the old.
    _, second = invites.open_invite(session, token, now + 5 * MINUTE)
    assert second != first
    with pytest.raises(NotFound, match="replaced by a newer one"):
        invites.step_invite(session, invite.id, first, now + 6 * MINUTE)
    assert invites.step_invite(session, invite.id, second, now + 6 * MINUTE) is invite


def test_a_step_lasts_thirty_minutes_and_only_with_its_nonce(session, invited):
    _, invite, token, now = invited
    _, nonce = invites.open_invite(session, token, now)
    assert invites.step_invite(session, invite.id, nonce, now + 30 * MINUTE) is invite
    with pytest.raises(NotFound, match="expired after 30 minutes; open the link again"):
        invites.redeem_step(session, invite.id, nonce, "a long new password",
                            now + 31 * MINUTE)
    # What a browser's session can hold instead of a step.
    for invite_id, value in ((invite.id, "forged"), (invite.id, None), (invite.id, 7),
                             (None, nonce), (str(invite.id), nonce), (True, nonce),
                             (2**31 - 1, nonce)):
        with pytest.raises(NotFound, match="link: "):
            invites.step_invite(session, invite_id, value, now)
    with pytest.raises(NotFound, match="no set-password link is open in this browser"):
        invites.step_invite(session, None, None, now)
    # The link itself expires with its seven days, whatever the step says.
    with pytest.raises(NotFound, match="link expired on"):
        invites.step_invite(session, invite.id, nonce, now + 8 * DAY)
