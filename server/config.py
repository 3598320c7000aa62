"""Settings from the environment (``NABLA_*``), with safe defaults.

This module is import-light (stdlib only) so that the CLI can read the same
settings as the web application without importing Flask.

``NABLA_SECRET_KEY``, when unset, is generated once and kept in the instance
folder with 0600 permissions; it is never logged or printed.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SECRET_KEY_FILE = "secret_key"
DEFAULT_SQLITE_NAME = "nabla.sqlite3"


class ConfigError(RuntimeError):
    """A setting is missing or malformed; the message names the setting."""


def instance_path(environ: dict[str, str] | None = None) -> Path:
    """The instance folder: ``NABLA_INSTANCE_PATH`` or ``<project>/instance``."""
    env = os.environ if environ is None else environ
    raw = env.get("NABLA_INSTANCE_PATH")
    return Path(raw).resolve() if raw else PROJECT_ROOT / "instance"


def default_database_url(instance: Path) -> str:
    return f"sqlite:///{instance / DEFAULT_SQLITE_NAME}"


def load_or_create_secret_key(instance: Path) -> str:
    """Read the instance's secret key, creating it (0600) on first use.

    Several gunicorn workers may start at once: the key is written to a private
    temporary file and hard-linked into place, so a reader never sees a partial
    key and exactly one writer wins.
    """
    path = instance / SECRET_KEY_FILE
    if path.exists():
        return _read_secret(path)
    instance.mkdir(parents=True, exist_ok=True)
    tmp = instance / f".{SECRET_KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won the race; use its key
    finally:
        tmp.unlink(missing_ok=True)
    return _read_secret(path)


def _read_secret(path: Path) -> str:
    key = path.read_text().strip()
    if len(key) < 32:
        raise ConfigError(
            f"{path} holds a secret key shorter than 32 characters; delete the file to "
            "have a new one generated, or set NABLA_SECRET_KEY"
        )
    return key


def _int_setting(env: dict[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _bool_setting(env: dict[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


# --- the judge (server/judge, docs/judge.md): grading equations and expressions in
# killable processes
def judge_settings(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """``NABLA_JUDGE_POOL`` processes per app process (2), ``NABLA_JUDGE_TIMEOUT_S``
    before a grading is stopped (5), ``NABLA_JUDGE_MEMORY_MB`` per process (512)."""
    env = os.environ if environ is None else environ
    raw = env.get("NABLA_JUDGE_TIMEOUT_S") or "5"
    try:
        timeout = float(raw)
    except ValueError:
        raise ConfigError(f"NABLA_JUDGE_TIMEOUT_S must be a number, got {raw!r}") from None
    if not 0.1 <= timeout <= 600:
        raise ConfigError(f"NABLA_JUDGE_TIMEOUT_S must be between 0.1 and 600, got {raw}")
    return {"size": _int_setting(env, "NABLA_JUDGE_POOL", 2, 1), "timeout_s": timeout,
            "memory_mb": _int_setting(env, "NABLA_JUDGE_MEMORY_MB", 512, 64)}


def database_url(environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return env.get("NABLA_DATABASE_URL") or default_database_url(instance_path(env))


def load_settings(
    environ: dict[str, str] | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """All settings as a Flask-style config mapping (upper-case keys).

    ``overrides`` (e.g. from ``create_app(config)``) win over the environment;
    a SECRET_KEY given there means no key file is read or created.
    """
    env = dict(os.environ if environ is None else environ)
    overrides = dict(overrides or {})
    if "INSTANCE_PATH" in overrides:
        env["NABLA_INSTANCE_PATH"] = str(overrides["INSTANCE_PATH"])
    instance = instance_path(env)
    secret = (
        overrides.get("SECRET_KEY")
        or env.get("NABLA_SECRET_KEY")
        or load_or_create_secret_key(instance)
    )
    timezone = env.get("NABLA_TIMEZONE", "UTC")
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(timezone)
    except Exception:  # ZoneInfoNotFoundError, ValueError for malformed keys
        raise ConfigError(f"NABLA_TIMEZONE: unknown time zone {timezone!r}") from None
    secure_cookies = _bool_setting(env, "NABLA_SECURE_COOKIES", False)
    if len(secret) < 32:
        raise ConfigError("NABLA_SECRET_KEY must be at least 32 characters long")
    return {
        "INSTANCE_PATH": str(instance),
        "DATABASE_URL": env.get("NABLA_DATABASE_URL") or default_database_url(instance),
        "SECRET_KEY": secret,
        "NABLA_TIMEZONE": timezone,
        # A submission is a few kilobytes; a roster CSV a few hundred.
        "MAX_CONTENT_LENGTH": _int_setting(env, "NABLA_MAX_CONTENT_LENGTH", 1 << 20, 1024),
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": secure_cookies,
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "REMEMBER_COOKIE_SECURE": secure_cookies,
        "WTF_CSRF_ENABLED": True,
        # The CSRF token lives as long as the login session, not one hour, so a
        # student who writes an answer slowly does not lose it on submit.
        "WTF_CSRF_TIME_LIMIT": None,
        # Refuse to serve a database behind the migrations (see server.db).
        "NABLA_CHECK_SCHEMA": _bool_setting(env, "NABLA_CHECK_SCHEMA", True),
        # Behind a reverse proxy, how many proxies set X-Forwarded-For/-Proto
        # (0: none, use the socket's address as the client IP).
        "NABLA_TRUSTED_PROXIES": _int_setting(env, "NABLA_TRUSTED_PROXIES", 0),
        "NABLA_JUDGE": judge_settings(env),
    } | overrides
