"""Logging out ends the session on the server: a copy of the session cookie taken
before logout, "log out everywhere" or a password change is refused afterwards."""

import pytest

from server.services import accounts

from .helpers import login, post_form

pytestmark = pytest.mark.usefixtures("db_backend")

EMAIL = "student1@example.edu"


@pytest.fixture
def student(app_session, make_user):
    user = make_user(app_session, email=EMAIL, name="Student One")
    app_session.commit()
    return user


def logged_in_client(app):
    client = app.test_client()
    assert login(client, EMAIL).status_code == 302
    assert client.get("/profile").status_code == 200
    return client


def copy_of(app, client):
    """Another client holding a copy of ``client``'s session cookie (a stolen cookie)."""
    thief = app.test_client()
    thief.set_cookie("session", client.get_cookie("session").value)
    return thief


def assert_sent_to_login(client):
    response = client.get("/profile")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


def test_a_cookie_captured_before_logout_is_refused_after(app, student):
    client = logged_in_client(app)
    thief = copy_of(app, client)
    assert thief.get("/profile").status_code == 200
    response = post_form(client, "/profile", "/logout", {})
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    assert_sent_to_login(thief)
    assert_sent_to_login(client)
    assert login(client, EMAIL).status_code == 302  # a new login works
    assert client.get("/profile").status_code == 200
    assert_sent_to_login(thief)


def test_log_out_everywhere_ends_every_session(app, student):
    laptop, phone = logged_in_client(app), logged_in_client(app)
    page = laptop.get("/profile").get_data(as_text=True)
    assert "Log out everywhere" in page and 'action="/profile/logout-everywhere"' in page
    response = post_form(laptop, "/profile", "/profile/logout-everywhere", {})
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    assert_sent_to_login(phone)
    assert_sent_to_login(laptop)


def test_log_out_everywhere_needs_the_csrf_token(app, student):
    laptop, phone = logged_in_client(app), logged_in_client(app)
    assert laptop.post("/profile/logout-everywhere").status_code == 400
    assert phone.get("/profile").status_code == 200


def test_a_password_change_ends_the_other_sessions_only(app, student):
    laptop, phone = logged_in_client(app), logged_in_client(app)
    thief = copy_of(app, laptop)
    response = post_form(laptop, "/profile", "/profile/password", {
        "current_password": "correct horse battery", "new_password": "a brand new password",
        "confirm": "a brand new password"})
    assert response.status_code == 302
    assert laptop.get("/profile").status_code == 200  # this one goes on, with the new nonce
    assert_sent_to_login(phone)
    assert_sent_to_login(thief)


def test_end_sessions_gives_a_new_nonce(app_session, student):
    old = student.get_id()
    assert accounts.load_user_for_login_session(app_session, old) is student
    accounts.end_sessions(app_session, student)
    assert student.get_id() != old
    assert accounts.load_user_for_login_session(app_session, old) is None
    assert accounts.load_user_for_login_session(app_session, student.get_id()) is student
    assert accounts.load_user_for_login_session(app_session, f"{student.id}") is None
