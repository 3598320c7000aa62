"""Set-password links (issue 22): opening one exchanges its token for a short step in
the browser's session and redirects to /set-password, a URL without the token; the
password is set from the step. The link works until a password is set (a student who
closes the tab opens it again), and a replay after that, of the link or of the step,
fails with a page that says why."""

from __future__ import annotations

import html

import pytest

from server.models import PasswordInvite, utcnow
from server.services import accounts, invites

from .helpers import csrf_token

pytestmark = pytest.mark.usefixtures("db_backend")
PASSWORD = "a brand new password"


@pytest.fixture
def link(app_session, make_user):
    """The path of a new account's set-password link."""
    user = make_user(app_session, "new@example.edu", "New Student", password=None)
    _, token = invites.create_invite(app_session, user, utcnow())
    app_session.commit()
    return f"/set-password/{token}"


def choose(client, password=PASSWORD, page="/set-password"):
    return client.post("/set-password", data={"new_password": password, "confirm": password,
                                              "csrf_token": csrf_token(client, page)})


def text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def password_set(app_session) -> bool:
    app_session.expire_all()
    user = accounts.get_user_by_email(app_session, "new@example.edu")
    found = user.password_hash is not None
    app_session.rollback()
    return found


def test_opening_the_link_redirects_to_a_url_without_the_token_and_the_step_sets_it(
        client, link, app_session):
    opened = client.get(link)
    assert opened.status_code == 303 and opened.location == "/set-password"
    token = link.rsplit("/", 1)[1]
    page = client.get("/set-password")
    assert page.status_code == 200
    assert "new@example.edu" in text(page) and token not in text(page)
    short = choose(client, "short")
    assert short.status_code == 400 and "at least 10" in text(short)
    assert not password_set(app_session)
    done = choose(client)
    assert done.status_code == 302 and done.location == "/"
    assert client.get("/profile").status_code == 200  # logged in
    assert password_set(app_session)
    app_session.expire_all()
    invite = app_session.query(PasswordInvite).one()
    assert invite.used_at is not None and invite.step_hash is None
    app_session.rollback()


def test_the_link_works_until_a_password_is_set_and_never_after(app, link, app_session):
    closed_tab, browser, fresh = app.test_client(), app.test_client(), app.test_client()
    assert closed_tab.get(link).status_code == 303
    assert not password_set(app_session)  # opening it used nothing up
    assert browser.get(link).status_code == 303  # the student clicks the link again
    stale = closed_tab.get("/set-password")
    assert stale.status_code == 404 and "replaced by a newer one" in text(stale)
    copy = app.test_client()  # a copy of the browser's cookie, taken before the set
    cookie = browser.get_cookie("session")
    copy.set_cookie(cookie.key, cookie.value, domain=cookie.domain)
    assert choose(browser).status_code == 302

    replay = fresh.get(link)
    assert replay.status_code == 404 and "already used" in text(replay)
    again = browser.get("/set-password")  # the step is gone from the browser's session
    assert again.status_code == 404
    assert "no set-password link is open in this browser" in text(again)
    copied = copy.get("/set-password")
    assert copied.status_code == 404 and "already used" in text(copied)
    second = choose(copy, "an attacker's password", page="/login")
    assert second.status_code == 404 and "already used" in text(second)
    app_session.expire_all()
    assert accounts.authenticate(app_session, "new@example.edu", PASSWORD) is not None
    app_session.rollback()


def test_no_step_a_forged_step_and_a_bad_link_get_a_page_that_says_what_to_do(
        client, link, app_session):
    from server.web.auth import SET_PASSWORD_STEP

    missing = client.get("/set-password")
    assert missing.status_code == 404
    assert "open the link you were sent" in text(missing)
    invite_id = app_session.query(PasswordInvite.id).scalar()
    app_session.rollback()
    for step in ({"invite": invite_id, "nonce": "forged"}, {"invite": str(invite_id)},
                 "garbage", ["x"], {"invite": 2**40, "nonce": "x"}):
        with client.session_transaction() as flask_session:
            flask_session[SET_PASSWORD_STEP] = step
        assert client.get("/set-password").status_code == 404, step
        refused = choose(client, page="/login")
        assert refused.status_code == 404 and "link: " in text(refused), step
    unknown = client.get("/set-password/inv_nope")
    assert unknown.status_code == 404 and "unknown" in text(unknown)
    assert client.post(link).status_code == 405  # the token only opens the link
    assert not password_set(app_session)
