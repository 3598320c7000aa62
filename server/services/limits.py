"""Shared counters for rate limits: the login throttle, the submission and check rates.

Every app server (and every gunicorn worker in it) must see the same counts,
so they live in the database by default (table ``rate_counters``) or in Redis
when ``NABLA_REDIS_URL`` is set; never in a process's memory.

The algorithm is the *sliding window counter*: a count per fixed window of
``period`` seconds, and a request at fraction ``f`` of the current window sees
``previous * (1 - f) + current`` requests in the last period. It allows no
burst of twice the limit across a window boundary, as a plain fixed window
does, and costs one small row (or key) per window.

Taking a slot is one atomic conditional increment: "add one to the current
window's count if it is below ``limit - ceil(previous * (1 - f))``" (in whole
milliseconds, so that Python, SQL and Lua compute the same integers). On the
database that is one statement, ``INSERT ... SELECT ... WHERE room ON
CONFLICT DO UPDATE ... WHERE count < ceiling RETURNING count`` (SQLite and
PostgreSQL alike; PostgreSQL locks the row, SQLite has one writer); in Redis
a Lua script. Two workers can never
both take the last slot, and a refused request does not count, so the
``Retry-After`` it is given is true: waiting that long lets the next one in
(unless others took the slot meanwhile).

Each operation is its own short transaction on its own connection, committed
at once like a Redis command, whatever the request does afterwards: a counter
must hold even when the request that took the slot fails or rolls back. (On
SQLite, a request must therefore not hold the write lock when it counts: the
views end their transaction first.)

Windows start at multiples of ``period`` in Unix time, so app servers must
keep their clocks in sync (NTP), as they must for due dates anyway.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, delete, select, text, update

from server.models import RateCounter
from server.services.errors import Unavailable

SWEEP_SECONDS = 60.0  # the database store deletes expired windows at most this often


@dataclasses.dataclass(frozen=True)
class Rate:
    """At most ``limit`` events per ``period`` seconds."""

    limit: int
    period: int

    def __post_init__(self) -> None:
        if self.limit < 1 or self.period < 1:
            raise ValueError(f"a rate needs a limit and a period of at least 1: {self}")

    def __str__(self) -> str:
        period = duration_text(self.period)
        return f"{self.limit} per {period.removeprefix('1 ')}"


@dataclasses.dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int = 0  # whole seconds; 0 when allowed


def duration_text(seconds: int) -> str:
    """``1 minute``, ``15 minutes``, ``40 seconds``, ``2 hours`` (rounded up)."""
    if seconds % 3600 == 0:
        count, unit = seconds // 3600, "hour"
    elif seconds >= 120 or seconds % 60 == 0:
        count, unit = math.ceil(seconds / 60), "minute"
    else:
        count, unit = seconds, "second"
    return f"{count} {unit}{'s' if count != 1 else ''}"


# --- the stores: three primitives each ------------------------------------------------


class CounterStore:
    """Counts per (key, window start). Subclasses implement the three operations."""

    def acquire(self, key: str, window: int, previous: int, limit: int, remaining_ms: int,
                period_ms: int, ttl: int) -> tuple[bool, int, int]:
        """Atomically add one to (key, window) if its count is below the ceiling
        ``limit - ceil(count(key, previous) * remaining_ms / period_ms)`` (in
        integers); returns (added, previous count, current count): the counts when
        refused (when added, they may be zeros).

        ``current + 1 + previous * w <= limit`` with the previous window's weight
        ``w = remaining_ms / period_ms`` is, for an integer ``current``,
        ``current < limit - ceil(previous * w)``.
        """
        raise NotImplementedError

    def give_back(self, key: str, window: int) -> None:
        """Subtract one from (key, window), not below zero."""
        raise NotImplementedError

    def clear(self, key: str, windows: tuple[int, ...]) -> None:
        """Forget the counts of ``key`` in these windows (at least)."""
        raise NotImplementedError


# Float products such as 3 * (40 / 60) may land a hair above a whole number.
EPSILON = 1e-9


# One statement: the room left (the ceiling) from the previous window's count,
# an insert of the first count if there is room, else an increment of the
# current one if it is below the ceiling. Integer division in both databases.
_ACQUIRE_SQL = text("""
WITH args AS (
    SELECT CAST(:key AS VARCHAR(200)) AS k, CAST(:window AS BIGINT) AS w,
           CAST(:previous AS BIGINT) AS pw, CAST(:limit AS BIGINT) AS lim,
           CAST(:remaining AS BIGINT) AS rem, CAST(:period AS BIGINT) AS per,
           CAST(:expires AS BIGINT) AS exp),
room AS (
    SELECT args.*, args.lim - (COALESCE((SELECT p.count FROM rate_counters p
                                         WHERE p.key = args.k AND p.window_start = args.pw), 0)
                               * args.rem + args.per - 1) / args.per AS top
    FROM args)
INSERT INTO rate_counters (key, window_start, count, expires_at)
SELECT k, w, 1, exp FROM room WHERE top > 0
ON CONFLICT (key, window_start) DO UPDATE SET count = rate_counters.count + 1
WHERE rate_counters.count < (SELECT top FROM room)
RETURNING count
""")


class DatabaseCounters(CounterStore):
    """Counters in the ``rate_counters`` table, one short transaction per operation."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock
        self._swept_at = 0.0
        self._sweep_lock = threading.Lock()
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise ValueError(f"rate counters need SQLite or PostgreSQL, not {engine.dialect.name}")

    def acquire(self, key: str, window: int, previous: int, limit: int, remaining_ms: int,
                period_ms: int, ttl: int) -> tuple[bool, int, int]:
        self._sweep_now_and_then()
        # On SQLite the transaction begins IMMEDIATE (server.db); on PostgreSQL
        # the conflicting row is locked and its count checked as it is now.
        with self.engine.begin() as connection:
            after = connection.execute(_ACQUIRE_SQL, {
                "key": key, "window": window, "previous": previous, "limit": limit,
                "remaining": remaining_ms, "period": period_ms, "expires": window + ttl,
            }).scalar()
        if after is not None:
            return True, 0, after
        table = RateCounter.__table__
        with self.engine.connect() as connection:  # refused: the counts, for Retry-After
            counts = dict(connection.execute(
                select(table.c.window_start, table.c.count)
                .where(table.c.key == key, table.c.window_start.in_((previous, window)))
            ).all())
        return False, counts.get(previous, 0), counts.get(window, 0)

    def give_back(self, key: str, window: int) -> None:
        table = RateCounter.__table__
        with self.engine.begin() as connection:
            connection.execute(
                update(table)
                .where(table.c.key == key, table.c.window_start == window, table.c.count > 0)
                .values(count=table.c.count - 1))

    def clear(self, key: str, windows: tuple[int, ...]) -> None:
        table = RateCounter.__table__
        with self.engine.begin() as connection:
            connection.execute(delete(table).where(table.c.key == key))

    def _sweep_now_and_then(self) -> None:
        """Delete expired windows, at most once every SWEEP_SECONDS per process."""
        now = self.clock()
        if now - self._swept_at < SWEEP_SECONDS or not self._sweep_lock.acquire(blocking=False):
            return
        try:
            self._swept_at = now
            table = RateCounter.__table__
            with self.engine.begin() as connection:
                connection.execute(delete(table).where(table.c.expires_at < int(now)))
        finally:
            self._sweep_lock.release()


# KEYS: the current window, the previous window; ARGV: limit, remaining ms, period ms,
# ttl in seconds. (Lua numbers are doubles: exact for these integers.)
_ACQUIRE_LUA = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
local period = tonumber(ARGV[3])
local top = tonumber(ARGV[1]) - math.floor((previous * tonumber(ARGV[2]) + period - 1) / period)
if current >= top then
  return {0, previous, current}
end
current = redis.call('INCR', KEYS[1])
if current == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
return {1, previous, current}
"""
_GIVE_BACK_LUA = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current > 0 then
  return redis.call('DECR', KEYS[1])
end
return 0
"""


class CountersUnavailable(Unavailable):
    """The counters' store cannot be reached: nothing can be counted, so nothing is
    let through (the views answer 503 with Retry-After)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(
            "The server cannot reach its rate counters (Redis) right now, so nothing was "
            f"done ({error.__class__.__name__}); try again in a moment.")


def _redis_errors(method: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        import redis

        try:
            return method(*args, **kwargs)
        except redis.RedisError as exc:
            raise CountersUnavailable(exc) from exc

    return wrapped


class RedisCounters(CounterStore):
    """Counters in Redis: one key per (key, window), expiring after two periods.

    Keys are ``<prefix>{<key>}:<window start>``; the braces keep a key's windows
    in one hash slot on a Redis Cluster. A Redis that cannot be reached raises
    CountersUnavailable.
    """

    def __init__(self, client: Any, prefix: str = "nabla:") -> None:
        self.client = client
        self.prefix = prefix
        self._acquire = client.register_script(_ACQUIRE_LUA)
        self._give_back = client.register_script(_GIVE_BACK_LUA)

    @classmethod
    def from_url(cls, url: str, prefix: str = "nabla:") -> RedisCounters:
        import redis

        # Short timeouts: a login or a submission must not hang on a dead Redis.
        return cls(redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2),
                   prefix)

    def _key(self, key: str, window: int) -> str:
        return f"{self.prefix}{{{key}}}:{window}"

    @_redis_errors
    def acquire(self, key: str, window: int, previous: int, limit: int, remaining_ms: int,
                period_ms: int, ttl: int) -> tuple[bool, int, int]:
        added, before, current = self._acquire(
            keys=[self._key(key, window), self._key(key, previous)],
            args=[limit, remaining_ms, period_ms, ttl])
        return bool(added), int(before), int(current)

    @_redis_errors
    def give_back(self, key: str, window: int) -> None:
        self._give_back(keys=[self._key(key, window)])

    @_redis_errors
    def clear(self, key: str, windows: tuple[int, ...]) -> None:
        self.client.delete(*(self._key(key, window) for window in windows))


# --- the limiter ---------------------------------------------------------------------


class Limiter:
    """Sliding window counters over a store; ``clock`` gives Unix time in seconds."""

    def __init__(self, store: CounterStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    def _windows(self, rate: Rate, now: float) -> tuple[int, int, int]:
        """(this window's start, the previous one's, milliseconds left in this one)."""
        window = int(now // rate.period) * rate.period
        remaining_ms = max(0, (window + rate.period) * 1000 - math.floor(now * 1000))
        return window, window - rate.period, remaining_ms

    def take(self, key: str, rate: Rate, now: float | None = None) -> Decision:
        """Count one event for ``key`` if the rate allows it; a refused one is not counted."""
        now = self.clock() if now is None else now
        window, previous, remaining_ms = self._windows(rate, now)
        added, before, current = self.store.acquire(
            key, window, previous, rate.limit, remaining_ms, rate.period * 1000, 2 * rate.period)
        if added:
            return Decision(True)
        return Decision(False, retry_after(rate, before, current, now))

    def give_back(self, key: str, rate: Rate, now: float | None = None) -> None:
        """Undo one ``take`` of the current window (e.g. a login that turned out right)."""
        now = self.clock() if now is None else now
        self.store.give_back(key, self._windows(rate, now)[0])

    def clear(self, key: str, rate: Rate, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        window, previous, _ = self._windows(rate, now)
        self.store.clear(key, (previous, window))


def retry_after(rate: Rate, previous: int, current: int, now: float) -> int:
    """Whole seconds until one more event fits, if nothing else is counted meanwhile.

    One more fits when ``ceil(previous * (1 - f)) <= limit - current - 1``, that
    is ``previous * (1 - f) <= limit - current - 1``.
    """
    window = int(now // rate.period) * rate.period
    room = rate.limit - current - 1  # what the carried weight may still be
    if room >= 1 and previous > 0:
        # Still in this window, once the previous window's weight has shrunk.
        at = window + rate.period * (1 - room / previous)
    else:
        # In the next window, where this one is the previous: current * (1 - f) <= limit - 1.
        spare = (rate.limit - 1) / current if current else 1.0
        at = window + rate.period + rate.period * max(0.0, 1 - spare)
    return max(1, math.ceil(at - now - EPSILON))


def make_limiter(engine: Engine, redis_url: str | None = None,
                 redis_prefix: str = "nabla:") -> Limiter:
    """Counters in Redis when ``redis_url`` is given, else in the database."""
    if redis_url:
        return Limiter(RedisCounters.from_url(redis_url, redis_prefix))
    return Limiter(DatabaseCounters(engine))


# --- per-student rates: submissions, checks ------------------------------------------


class RateLimited(Exception):
    """Over a per-student rate: nothing was done; ``retry_after`` in whole seconds.
    Subclasses say what in ``template`` (formatted with ``rate`` and ``wait``)."""

    template = "Too many requests: at most {rate}; try again in {wait}."

    def __init__(self, rate: Rate, retry_after_seconds: int) -> None:
        self.retry_after = retry_after_seconds
        super().__init__(self.template.format(rate=rate,
                                              wait=duration_text(retry_after_seconds)))


class SubmissionRateLimited(RateLimited):
    """Too many submissions: nothing was stored, no attempt was used."""

    template = ("Too many submissions: at most {rate}. Nothing was stored and no attempt "
                "was used; try again in {wait}.")


class CheckRateLimited(RateLimited):
    """Too many checks: this answer was not checked (a check stores nothing anyway)."""

    template = ("Too many checks: at most {rate}. This answer was not checked (a check "
                "never stores anything or uses an attempt); try again in {wait}.")


def _take_slot(limiter: Limiter, key: str, rate: Rate | None,
               refusal: type[RateLimited]) -> None:
    if rate is None:
        return
    decision = limiter.take(key, rate)
    if not decision.allowed:
        raise refusal(rate, decision.retry_after)


def take_submission_slot(limiter: Limiter, user_id: int, rate: Rate | None) -> None:
    """Count one submission of the user (answer form and API alike), or raise
    SubmissionRateLimited. ``rate=None``: no limit."""
    _take_slot(limiter, f"submit:{user_id}", rate, SubmissionRateLimited)


def take_check_slot(limiter: Limiter, user_id: int, rate: Rate | None) -> None:
    """Count one check of the user (the Check button and the API alike: a budget apart
    from submissions), or raise CheckRateLimited. ``rate=None``: no limit."""
    _take_slot(limiter, f"check:{user_id}", rate, CheckRateLimited)
