"""Settings from the environment (``NABLA_*``), with safe defaults.

This module is import-light (stdlib only) so that the CLI can read the same
settings as the web application without importing Flask.

``NABLA_SECRET_KEY``, when unset, is generated once and kept in the instance
folder with 0600 permissions; it is never logged or printed.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import secrets
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent
# A source checkout (the repository, or an editable install of it) has its
# pyproject.toml beside server/; an installed wheel has not (PROJECT_ROOT is
# then site-packages).
IS_CHECKOUT = (PROJECT_ROOT / "pyproject.toml").is_file()
SECRET_KEY_FILE = "secret_key"
DEFAULT_SQLITE_NAME = "nabla.sqlite3"
DEFAULT_SUBMIT_RATE = "20/minute"
DEFAULT_CHECK_RATE = "60/minute"
DEFAULT_LOGIN_RATE = "5/15minutes"
DEFAULT_LOGIN_ADDRESS_RATE = "50/15minutes"
log = logging.getLogger(__name__)


class ConfigError(RuntimeError):
    """A setting is missing or malformed; the message names the setting."""


def instance_path(environ: dict[str, str] | None = None) -> Path:
    """The instance folder: ``NABLA_INSTANCE_PATH``; else ``<checkout>/instance`` in a
    source checkout, or ``<prefix>/var/nabla-instance`` when installed from a wheel
    (Flask's convention for installed applications; ``<prefix>`` is the venv)."""
    env = os.environ if environ is None else environ
    raw = env.get("NABLA_INSTANCE_PATH")
    if raw:
        return Path(raw).resolve()
    if IS_CHECKOUT:
        return PROJECT_ROOT / "instance"
    return Path(sys.prefix) / "var" / "nabla-instance"


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


_PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_RATE_RE = re.compile(
    r"^\s*(\d+)\s*(?:/|per\s)\s*(\d+)?\s*(second|minute|hour|day)s?\s*$", re.IGNORECASE)


def parse_rate(name: str, raw: str) -> tuple[int, int] | None:
    """``"20/minute"``, ``"20 per minute"``, ``"5/15minutes"``, ``"100/hour"`` or a bare
    integer (per minute) as (limit, period in seconds); ``"off"`` as None (no limit)."""
    text = raw.strip()
    if text.lower() in {"off", "none", "unlimited"}:
        return None
    if text.isdigit():
        limit, period = int(text), 60
    else:
        match = _RATE_RE.match(text)
        if match is None:
            raise ConfigError(
                f"{name} must look like '20/minute', '5/15minutes', '100/hour', an integer "
                f"(per minute) or 'off', got {raw!r}")
        count, unit = int(match.group(2) or 1), _PERIODS[match.group(3).lower()]
        limit, period = int(match.group(1)), count * unit
    if limit < 1 or period < 1:
        raise ConfigError(f"{name}: the limit and the period must be at least 1, got {raw!r}")
    return limit, period


def _rate_setting(env: dict[str, str], name: str, default: str,
                  may_be_off: bool = True) -> tuple[int, int] | None:
    rate = parse_rate(name, env.get(name) or default)
    if rate is None and not may_be_off:
        raise ConfigError(f"{name} cannot be off: logins are always throttled")
    return rate


def _proxies_setting(env: dict[str, str]) -> int:
    """``NABLA_PROXIES``; ``NABLA_TRUSTED_PROXIES`` is its deprecated old name."""
    if env.get("NABLA_PROXIES", "") == "" and env.get("NABLA_TRUSTED_PROXIES", "") != "":
        log.warning("NABLA_TRUSTED_PROXIES is deprecated: rename it to NABLA_PROXIES")
        return _int_setting(env, "NABLA_TRUSTED_PROXIES", 0)
    return _int_setting(env, "NABLA_PROXIES", 0)


# --- the judge (server/judge, docs/judge.md): grading equations and expressions in
# killable processes
def judge_settings(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """``NABLA_JUDGE_POOL`` processes per app process (2), ``NABLA_JUDGE_TIMEOUT_S``
    before a grading is stopped (5), ``NABLA_JUDGE_MEMORY_MB`` per process (512)."""
    env = os.environ if environ is None else environ
    return {"size": _int_setting(env, "NABLA_JUDGE_POOL", 2, 1),
            "timeout_s": _timeout_setting(env, "NABLA_JUDGE_TIMEOUT_S", 5.0),
            "memory_mb": _int_setting(env, "NABLA_JUDGE_MEMORY_MB", 512, 64)}


def spec_judge_settings(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """A spec's work for staff (check, save, preview, try an answer, draw statistics,
    ``nabla problems check`` and ``sync``): ``NABLA_SPEC_POOL`` processes per app
    process (1), stopped after ``NABLA_SPEC_TIMEOUT_S`` (10) or beyond
    ``NABLA_SPEC_MEMORY_MB`` (512), at niceness 10 so that web workers come first. A
    request that finds them busy waits a quarter of a second at most, then is refused
    (it never waits long in a web thread): a worker's other threads stay free."""
    env = os.environ if environ is None else environ
    return {"size": _int_setting(env, "NABLA_SPEC_POOL", 1, 1),
            "timeout_s": _timeout_setting(env, "NABLA_SPEC_TIMEOUT_S", 10.0),
            "memory_mb": _int_setting(env, "NABLA_SPEC_MEMORY_MB", 512, 64), "nice": 10,
            "wait_s": 0.25}


def draw_settings(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """A student's draw (their instance on a first visit, a regrade's redraw, a numpy
    answer's hidden instances), in the grading pool: ``NABLA_DRAW_TIMEOUT_S`` (5) and
    ``NABLA_DRAW_MEMORY_MB`` (256). A spec is saved only if each of its check draws
    took at most half the time (``draw_limit_s``)."""
    env = os.environ if environ is None else environ
    timeout = _timeout_setting(env, "NABLA_DRAW_TIMEOUT_S", 5.0)
    return {"timeout_s": timeout, "memory_mb": _int_setting(env, "NABLA_DRAW_MEMORY_MB", 256, 64),
            "draw_limit_s": timeout / 2}


def _timeout_setting(env: dict[str, str] | Any, name: str, default: float) -> float:
    raw = env.get(name) or str(default)
    try:
        timeout = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not 0.1 <= timeout <= 600:
        raise ConfigError(f"{name} must be between 0.1 and 600, got {raw}")
    return timeout


def job_settings(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Background jobs (server.services.jobs): on RQ when ``NABLA_REDIS_URL`` is set (queue
    ``<NABLA_REDIS_PREFIX>jobs``), else in a thread; a running job whose heartbeat is
    older than ``NABLA_JOB_STALE_S`` (60) is failed; ``NABLA_REGRADE_THREADS`` gradings
    at once per chunk (4)."""
    env = os.environ if environ is None else environ
    return {"redis_url": env.get("NABLA_REDIS_URL") or None,
            "queue": (env.get("NABLA_REDIS_PREFIX") or "nabla:") + "jobs",
            "stale_s": _int_setting(env, "NABLA_JOB_STALE_S", 60, 1),
            "threads": _int_setting(env, "NABLA_REGRADE_THREADS", 4, 1),
            "chunk": _int_setting(env, "NABLA_REGRADE_CHUNK", 200, 1)}


def _seconds_setting(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not value >= 0:
        raise ConfigError(f"{name} must be 0 or more seconds, got {raw!r}")
    return value


def recovery_settings(environ: dict[str, str] | None = None) -> dict[str, float]:
    """Submissions left ``pending`` (services.recovery): ``NABLA_RECOVER_AFTER_S`` (120) is
    how long before one is taken for abandoned; every app process looks at start and every
    ``NABLA_RECOVER_EVERY_S`` (60; 0: never) and starts a recovery job when it finds one."""
    env = os.environ if environ is None else environ
    return {"after_s": _seconds_setting(env, "NABLA_RECOVER_AFTER_S", 120.0),
            "every_s": _seconds_setting(env, "NABLA_RECOVER_EVERY_S", 60.0)}


# Set by `nabla serve` and `nabla run` for the app when they bind a loopback address
# (`make demo`: 127.0.0.1:5000); read by base_url_settings, never meant to be set by hand.
LOOPBACK_BIND_ENV = "NABLA_LOOPBACK_BIND"
BASE_URL_MISSING = (
    "NABLA_BASE_URL is not set, so the server cannot make links for other people (such "
    "as set-password links): set NABLA_BASE_URL to the address people reach this site at, "
    "e.g. NABLA_BASE_URL=https://nabla.example.edu (for the local demo, "
    "NABLA_BASE_URL=http://127.0.0.1:5000). Without it, only a server bound to a loopback "
    "address and visited there (`make demo`) makes such links")


def base_url(environ: dict[str, str] | None = None) -> str | None:
    """``NABLA_BASE_URL``: where people reach the site (``https://nabla.example.edu``, or
    with a path, ``https://example.edu/nabla``), without a trailing slash; the start of
    every absolute link the server makes for someone else (set-password links), never
    the Host header of a request. None when unset; ConfigError when it is not an http(s)
    URL with a host and without a query, a fragment or a user name."""
    env = os.environ if environ is None else environ
    raw = (env.get("NABLA_BASE_URL") or "").strip()
    if not raw:
        return None
    parts = urlsplit(raw)
    problem = None
    if parts.scheme not in ("http", "https"):
        problem = "must start with https:// or http://"
    elif not parts.hostname:
        problem = "has no host name"
    elif parts.query or parts.fragment or "?" in raw or "#" in raw:
        problem = "must not have a query (?...) or a fragment (#...)"
    elif parts.username is not None or parts.password is not None:
        problem = "must not carry a user name or a password"
    else:
        try:
            parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
        except ValueError:
            problem = "has a port that is not a number"
    if problem:
        raise ConfigError(f"NABLA_BASE_URL {problem}, got {raw!r}")
    return raw.rstrip("/")


def is_loopback_host(host_and_port: str | None) -> bool:
    """Whether ``HOST[:PORT]`` (``127.0.0.1:5000``, ``[::1]:5000``, ``localhost``) names
    this machine's loopback interface."""
    try:
        host = urlsplit("//" + (host_and_port or "")).hostname
    except ValueError:  # e.g. an unclosed "[" (a Host header is the client's to choose)
        return False
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def loopback_bind(environ: dict[str, str] | None = None) -> str | None:
    """``HOST:PORT`` that `nabla serve` or `nabla run` bound when it is a loopback address
    (``LOOPBACK_BIND_ENV``), else None."""
    env = os.environ if environ is None else environ
    raw = (env.get(LOOPBACK_BIND_ENV) or "").strip()
    if not raw:
        return None
    if not is_loopback_host(raw):
        raise ConfigError(f"{LOOPBACK_BIND_ENV} must be a loopback HOST:PORT (`nabla serve` "
                          f"sets it), got {raw!r}")
    return raw


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
        # (0: none, use the socket's address as the client IP: a client's own
        # X-Forwarded-For is then ignored, for the login throttle too).
        "NABLA_PROXIES": _proxies_setting(env),
        # Shared counters (login throttle, submission rate) live in Redis when
        # this is set, else in the database (server.services.limits).
        "NABLA_REDIS_URL": env.get("NABLA_REDIS_URL") or None,
        "NABLA_REDIS_PREFIX": env.get("NABLA_REDIS_PREFIX") or "nabla:",
        # (limit, period in seconds), or None for no limit.
        "NABLA_SUBMIT_RATE": _rate_setting(env, "NABLA_SUBMIT_RATE", DEFAULT_SUBMIT_RATE),
        # Checks (the Check button and POST .../check) per student: a budget of their own.
        "NABLA_CHECK_RATE": _rate_setting(env, "NABLA_CHECK_RATE", DEFAULT_CHECK_RATE),
        "NABLA_LOGIN_RATE": _rate_setting(env, "NABLA_LOGIN_RATE", DEFAULT_LOGIN_RATE, False),
        "NABLA_LOGIN_ADDRESS_RATE": _rate_setting(
            env, "NABLA_LOGIN_ADDRESS_RATE", DEFAULT_LOGIN_ADDRESS_RATE, False),
        "NABLA_JUDGE": judge_settings(env),
        "NABLA_SPEC_JUDGE": spec_judge_settings(env),
        "NABLA_DRAW": draw_settings(env),
        "NABLA_JOBS": job_settings(env),
        "NABLA_RECOVER": recovery_settings(env),
        # The start of links made for others (server.web.links.site_url); without it,
        # only the loopback demo makes them, from the address `nabla serve` bound.
        "NABLA_BASE_URL": base_url(env),
        "NABLA_LOOPBACK_BIND": loopback_bind(env),
    } | overrides
