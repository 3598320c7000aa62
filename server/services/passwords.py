"""Password hashing with argon2id (argon2-cffi)."""

from __future__ import annotations

from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024

_PROFILES = {
    "default": profiles.RFC_9106_LOW_MEMORY,
    # For tests only: the cheapest parameters argon2 accepts.
    "cheapest": profiles.CHEAPEST,
}
_profile = "default"
_hasher = PasswordHasher.from_parameters(_PROFILES[_profile])
# Verified against when the email is unknown, so that a login attempt takes
# as long for an unknown email as for a wrong password.
_dummy_hash = _hasher.hash("not a real password")


def use_profile(name: str) -> str:
    """Hash with the named parameters from now on; returns the name of those it replaces
    (for whoever changed them to put them back)."""
    global _profile, _hasher, _dummy_hash
    previous, _profile = _profile, name
    _hasher = PasswordHasher.from_parameters(_PROFILES[name])
    _dummy_hash = _hasher.hash("not a real password")
    return previous


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True if ``password`` matches; False for no hash, a wrong password or a bad hash."""
    try:
        return _hasher.verify(password_hash or _dummy_hash, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    try:
        return _hasher.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


def password_problem(password: str) -> str | None:
    """Why ``password`` is not acceptable as a new password, or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"must be at least {MIN_PASSWORD_LENGTH} characters long"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"must be at most {MAX_PASSWORD_LENGTH} characters long"
    if password.strip() == "":
        return "must not be only spaces"
    return None
