import pytest

from server.models import ApiToken
from server.services import tokens
from server.services.errors import NotFound, ValidationError

pytestmark = pytest.mark.usefixtures("db_backend")


def test_token_is_stored_hashed_and_authenticates(session, make_user):
    user = make_user(session)
    row, token = tokens.create_token(session, user, "laptop")
    assert token.startswith("nabla_") and len(token) > 40
    stored = session.get(ApiToken, row.id)
    assert stored.token_hash == tokens.hash_token(token) and token not in stored.token_hash
    assert tokens.user_for_token(session, token) is user
    assert stored.last_used_at is not None
    assert tokens.user_for_token(session, token + "x") is None
    assert tokens.user_for_token(session, "") is None


def test_revoked_token_no_longer_authenticates(session, make_user):
    user = make_user(session)
    row, token = tokens.create_token(session, user, "laptop")
    tokens.revoke_token(session, user, row.id)
    assert tokens.user_for_token(session, token) is None
    assert tokens.active_tokens(session, user) == []


def test_cannot_revoke_another_users_token(session, make_user):
    alice = make_user(session, email="alice@example.edu")
    bob = make_user(session, email="bob@example.edu")
    row, token = tokens.create_token(session, alice, "laptop")
    with pytest.raises(NotFound):
        tokens.revoke_token(session, bob, row.id)
    assert tokens.user_for_token(session, token) is alice


def test_token_name_is_required(session, make_user):
    user = make_user(session)
    with pytest.raises(ValidationError) as excinfo:
        tokens.create_token(session, user, "   ")
    assert excinfo.value.field == "name"
