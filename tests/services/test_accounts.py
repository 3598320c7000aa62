import pytest

from server.models import User
from server.services import accounts, passwords
from server.services.errors import Conflict, ValidationError

pytestmark = pytest.mark.usefixtures("db_backend")


def test_create_user_normalizes_email_and_hashes_password(session, make_user):
    user = make_user(session, email="  Ada@Example.EDU ", name="  Ada   Lovelace ")
    assert user.email == "ada@example.edu"
    assert user.name == "Ada Lovelace"
    assert user.password_hash.startswith("$argon2id$")
    assert "correct horse" not in user.password_hash


def test_duplicate_email_is_a_conflict_naming_the_field(session, make_user):
    make_user(session, email="a@example.edu")
    with pytest.raises(Conflict, match="email: a user with the email a@example.edu"):
        make_user(session, email="A@example.edu")


@pytest.mark.parametrize(
    ("email", "reason"),
    [("", "is required"), ("no-at-sign", "is not an email address"), ("a@b", "not an email")],
)
def test_bad_email_is_refused_with_reason(session, email, reason):
    with pytest.raises(ValidationError) as excinfo:
        accounts.create_user(session, email, "Name", "long enough password")
    assert excinfo.value.field == "email"
    assert reason in excinfo.value.reason


def test_short_password_is_refused(session):
    with pytest.raises(ValidationError) as excinfo:
        accounts.create_user(session, "a@example.edu", "A", "short")
    assert excinfo.value.field == "password"
    assert "at least 10" in excinfo.value.reason


def test_authenticate(session, make_user):
    make_user(session, email="a@example.edu", password="the right password")
    assert accounts.authenticate(session, "A@example.edu", "the right password") is not None
    assert accounts.authenticate(session, "a@example.edu", "the wrong password") is None
    assert accounts.authenticate(session, "nobody@example.edu", "the right password") is None
    assert accounts.authenticate(session, "not an email", "x") is None


def test_user_without_password_cannot_log_in(session):
    accounts.create_user(session, "new@example.edu", "New", None)
    assert accounts.authenticate(session, "new@example.edu", "not a real password") is None
    assert accounts.authenticate(session, "new@example.edu", "") is None


def test_change_password_checks_the_current_one(session, make_user):
    user = make_user(session, password="first password")
    with pytest.raises(ValidationError) as excinfo:
        accounts.change_password(session, user, "not it at all", "second password")
    assert excinfo.value.field == "current_password"
    with pytest.raises(ValidationError) as excinfo:
        accounts.change_password(session, user, "first password", "first password")
    assert excinfo.value.field == "new_password"
    accounts.change_password(session, user, "first password", "second password")
    assert accounts.authenticate(session, user.email, "second password") is user
    assert accounts.authenticate(session, user.email, "first password") is None


def test_login_session_id_ends_with_a_password_change(session, make_user):
    user = make_user(session)
    login_id = user.get_id()
    assert accounts.load_user_for_login_session(session, login_id) is user
    accounts.set_password(session, user, "a brand new password")
    assert accounts.load_user_for_login_session(session, login_id) is None
    assert accounts.load_user_for_login_session(session, user.get_id()) is user
    assert accounts.load_user_for_login_session(session, "garbage") is None


def test_outdated_hash_parameters_are_upgraded_on_login(session, make_user):
    user = make_user(session, password="the right password")
    old_hash = user.password_hash
    previous = passwords.use_profile("default")
    try:
        assert accounts.authenticate(session, user.email, "the right password") is user
        assert user.password_hash != old_hash
        assert not passwords.needs_rehash(user.password_hash)
    finally:
        passwords.use_profile(previous)
    assert session.get(User, user.id).password_hash == user.password_hash
