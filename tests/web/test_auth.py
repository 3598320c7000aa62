import html
import re

import pytest

from server.models import ApiToken
from server.services import accounts

from .helpers import csrf_token, login, post_form

pytestmark = pytest.mark.usefixtures("db_backend")


@pytest.fixture
def student(app_session, make_user):
    user = make_user(app_session, email="student1@example.edu", name="Student One")
    app_session.commit()
    return user


def test_login_page_and_cookie_flags(client, student):
    page = client.get("/login")
    assert page.status_code == 200 and "Log in" in page.get_data(as_text=True)
    response = login(client, "student1@example.edu")
    assert response.status_code == 302 and response.headers["Location"] == "/"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    dashboard = client.get("/")
    assert dashboard.status_code == 200 and "Student One" in dashboard.get_data(as_text=True)


def test_wrong_password_and_unknown_email_get_the_same_message(client, student):
    wrong = login(client, "student1@example.edu", "wrong password!")
    unknown = login(client, "nobody@example.edu", "wrong password!")
    for response in (wrong, unknown):
        assert response.status_code == 401
        assert "The email or the password is not right." in response.get_data(as_text=True)
    assert client.get("/").status_code == 302


def test_login_without_csrf_token_is_refused(client, student):
    response = client.post(
        "/login", data={"email": "student1@example.edu", "password": "correct horse battery"}
    )
    assert response.status_code == 400
    assert "security token is missing" in response.get_data(as_text=True)
    assert client.get("/").status_code == 302  # not logged in


def test_login_with_a_forged_csrf_token_is_refused(client, student):
    csrf_token(client, "/login")  # a session exists, but the token is not its token
    response = client.post("/login", data={"email": "student1@example.edu",
                                           "password": "correct horse battery",
                                           "csrf_token": "forged"})
    assert response.status_code == 400


def test_dashboard_redirects_to_login_with_next(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


def test_login_follows_a_local_next_but_not_another_site(client, student):
    token = csrf_token(client, "/login")
    data = {"email": "student1@example.edu", "password": "correct horse battery",
            "csrf_token": token}
    response = client.post("/login", data={**data, "next": "//evil.example/x"})
    assert response.headers["Location"] == "/"
    client.post("/logout", data={"csrf_token": csrf_token(client, "/profile")})
    token = csrf_token(client, "/login")
    response = client.post("/login", data={**data, "csrf_token": token, "next": "/profile"})
    assert response.headers["Location"] == "/profile"


# What an attacker puts in a link: /login?next=<query>. Each one must land on the
# dashboard. Before the fix, "/%09/evil.example" (a TAB) was checked for "//"
# before werkzeug dropped the TAB, answering "Location: //evil.example".
OPEN_REDIRECTS = ["/%09/evil.example", "/%09/%09/evil", "%2f%2fevil", "//evil", "/%5Cevil",
                  "%5C%5Cevil", "https:evil", "https://evil.example/", "/%0D/evil", "%09//evil",
                  "/%7F/evil", "%20//evil", "javascript:alert(1)", "///evil"]


@pytest.mark.parametrize("query", OPEN_REDIRECTS)
def test_login_never_redirects_to_another_site(client, student, query):
    page = client.get(f"/login?next={query}").get_data(as_text=True)
    hidden = re.search(r'id="next" name="next" type="hidden" value="([^"]*)"', page)
    next_value = html.unescape(hidden.group(1))  # what the browser posts back
    response = client.post("/login", data={
        "email": "student1@example.edu", "password": "correct horse battery",
        "csrf_token": csrf_token(client, "/login"), "next": next_value})
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


@pytest.mark.parametrize("target", ["/\n/evil", "/\r\n/evil", "/\t/evil.example", "/\\evil",
                                    "/\x00/evil", "\x0b//evil"])
def test_control_characters_in_next_go_to_the_dashboard_not_a_500(client, student, target):
    response = client.post("/login", data={
        "email": "student1@example.edu", "password": "correct horse battery",
        "csrf_token": csrf_token(client, "/login"), "next": target})
    assert response.status_code in (302, 400)  # a NUL is refused at the door (400)
    if response.status_code == 302:
        assert response.headers["Location"] == "/"


@pytest.mark.parametrize(("target", "location"), [
    ("/profile", "/profile"), ("/assignments/1/problems/mlp-relu?x=1#y",
                               "/assignments/1/problems/mlp-relu?x=1#y"),
    ("/d\u00e9j\u00e0", "/d%C3%A9j%C3%A0"), ("/a%2F%2Fb", "/a%2F%2Fb")])
def test_a_path_on_this_site_is_followed_as_sent(client, student, target, location):
    response = client.post("/login", data={
        "email": "student1@example.edu", "password": "correct horse battery",
        "csrf_token": csrf_token(client, "/login"), "next": target})
    assert response.headers["Location"] == location


@pytest.mark.parametrize("value", ["/\t/evil", "//evil", "/\\evil", "https:evil", "%2f%2fevil",
                                   "/\u3000/x", "", None, "evil", "/ok"])
def test_safe_next_checks_the_value_werkzeug_sends(value):
    from urllib.parse import urlsplit

    from server.web.auth import safe_next

    result = safe_next(value)
    if value == "/ok":
        assert result == "/ok"
    if result is not None:
        assert result.startswith("/") and not result.startswith("//")
        assert not urlsplit(result).netloc and "\\" not in result


def test_logout_needs_post_with_csrf(client, student):
    login(client, "student1@example.edu")
    assert client.get("/logout").status_code == 405
    assert client.post("/logout").status_code == 400
    assert client.get("/").status_code == 200  # still logged in
    response = post_form(client, "/profile", "/logout", {})
    assert response.status_code == 302
    assert client.get("/").status_code == 302


def test_change_password(client, student, app_session):
    login(client, "student1@example.edu")
    bad = post_form(client, "/profile", "/profile/password", {
        "current_password": "not my password", "new_password": "new password 123",
        "confirm": "new password 123"})
    assert bad.status_code == 400
    assert "Current password: is not your current password" in bad.get_data(as_text=True)
    mismatch = post_form(client, "/profile", "/profile/password", {
        "current_password": "correct horse battery", "new_password": "new password 123",
        "confirm": "other password 123"})
    assert "does not match the new password" in mismatch.get_data(as_text=True)
    short = post_form(client, "/profile", "/profile/password", {
        "current_password": "correct horse battery", "new_password": "short",
        "confirm": "short"})
    assert short.status_code == 400
    assert "New password: must be at least 10 characters" in short.get_data(as_text=True)
    ok = post_form(client, "/profile", "/profile/password", {
        "current_password": "correct horse battery", "new_password": "new password 123",
        "confirm": "new password 123"})
    assert ok.status_code == 302
    assert client.get("/").status_code == 200  # this session survives the change
    app_session.expire_all()
    assert accounts.authenticate(app_session, "student1@example.edu", "new password 123")


def test_password_change_logs_out_other_sessions(app, student):
    first, second = app.test_client(), app.test_client()
    login(first, "student1@example.edu")
    login(second, "student1@example.edu")
    post_form(first, "/profile", "/profile/password", {
        "current_password": "correct horse battery", "new_password": "new password 123",
        "confirm": "new password 123"})
    assert first.get("/").status_code == 200
    assert second.get("/").status_code == 302


def test_create_use_and_revoke_a_token_on_the_profile_page(client, student, app_session):
    login(client, "student1@example.edu")
    missing = post_form(client, "/profile", "/profile/tokens", {"name": "  "})
    assert missing.status_code == 400
    created = post_form(client, "/profile", "/profile/tokens", {"name": "notebook"})
    assert created.status_code == 201
    html = created.get_data(as_text=True)
    token = html.split('<pre class="token" id="new-token">')[1].split("</pre>")[0]
    assert token.startswith("nabla_")
    assert token not in client.get("/profile").get_data(as_text=True)  # shown once
    api = client.application.test_client()
    me = api.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json["email"] == "student1@example.edu"
    token_id = app_session.query(ApiToken).one().id
    app_session.rollback()  # end the read: SQLite transactions hold the write lock
    revoked = post_form(client, "/profile", f"/profile/tokens/{token_id}/revoke", {})
    assert revoked.status_code == 302
    assert api.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_cannot_revoke_another_users_token(client, student, app_session, make_user):
    from server.services import tokens

    other = make_user(app_session, email="other@example.edu")
    row, token = tokens.create_token(app_session, other, "theirs")
    app_session.commit()
    login(client, "student1@example.edu")
    response = post_form(client, "/profile", f"/profile/tokens/{row.id}/revoke", {},
                         follow_redirects=True)
    assert "no token" in response.get_data(as_text=True)
    app_session.expire_all()
    assert app_session.get(ApiToken, row.id).revoked_at is None


def test_security_headers(client):
    response = client.get("/login")
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]


def test_empty_or_overlong_login_fields_are_400_with_the_field_named(client, student):
    token = csrf_token(client, "/login")
    empty = client.post("/login", data={"email": "", "password": "", "csrf_token": token})
    assert empty.status_code == 400
    page = empty.get_data(as_text=True)
    assert "Email: This field is required." in page and "Password: This field is required." in page
    long = client.post("/login", data={"email": "a" * 300 + "@example.edu", "password": "x",
                                       "csrf_token": token})
    assert long.status_code == 400
    assert "Email: Field cannot be longer than 254 characters." in long.get_data(as_text=True)
