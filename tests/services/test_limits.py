"""Shared rate counters (server.services.limits), in the database and in Redis."""

from __future__ import annotations

import threading
import time

import pytest

from server.services.limits import (
    DatabaseCounters,
    Limiter,
    Rate,
    RedisCounters,
    duration_text,
    retry_after,
)

pytestmark = pytest.mark.usefixtures("db_backend")

# Windows start at multiples of the period in Unix time; tests run in a future
# hour so that the database store's sweep (real time) never deletes their rows.
HOUR = 3600
BASE = (int(time.time()) // HOUR + 2) * HOUR


@pytest.fixture
def store(counter_store, request):
    if counter_store == "redis":
        return RedisCounters.from_url(request.getfixturevalue("redis_url"),
                                      request.getfixturevalue("redis_prefix"))
    engine = request.getfixturevalue("db_engine")
    request.getfixturevalue("session")  # deletes every row afterwards
    return DatabaseCounters(engine)


@pytest.fixture
def limiter(store):
    return Limiter(store)


def test_a_window_allows_exactly_the_limit_and_a_refusal_is_not_counted(limiter):
    rate = Rate(3, 60)
    assert [limiter.take("k", rate, BASE + t).allowed for t in range(5)] == \
        [True, True, True, False, False]
    refused = limiter.take("k", rate, BASE + 10)
    assert not refused.allowed and refused.retry_after > 0
    # Other keys are counted apart.
    assert limiter.take("other", rate, BASE + 10).allowed
    # In the next window the three of this one weigh 3 * (1 - f): at f = 0.5,
    # 1.5 -> one more fits (1 + 1.5 <= 3), not two; refusals above did not count.
    assert limiter.take("k", rate, BASE + 90).allowed
    assert not limiter.take("k", rate, BASE + 90).allowed
    # Two windows later nothing is left.
    assert [limiter.take("k", rate, BASE + 180).allowed for _ in range(4)] == \
        [True, True, True, False]


def test_no_burst_of_twice_the_limit_across_a_window_boundary(limiter):
    rate = Rate(4, 60)
    assert all(limiter.take("k", rate, BASE + 59).allowed for _ in range(4))
    assert not limiter.take("k", rate, BASE + 60).allowed  # a fixed window would allow 4 more
    assert not limiter.take("k", rate, BASE + 74).allowed  # 4 * 46/60 = 3.07 carried
    assert limiter.take("k", rate, BASE + 75).allowed  # 4 * 45/60 = 3 carried, 1 fits
    assert not limiter.take("k", rate, BASE + 89).allowed  # 4 * 31/60 = 2.07, + 1 taken


@pytest.mark.parametrize(("limit", "period", "times"), [
    (3, 60, [0, 1, 2, 3]),
    (5, 60, [50, 55, 58, 59, 59, 60, 61]),
    (2, 10, [9, 9, 10, 12, 15]),
    (20, 60, [30] * 21),
    (1, 900, [100, 950]),
])
def test_retry_after_is_exact(limiter, limit, period, times):
    """After a refusal with Retry-After r, one more fits at t + r but not at t + r - 1."""
    rate = Rate(limit, period)
    key = f"k{limit}-{period}"
    for t in times:
        limiter.take(key, rate, BASE + t)
    t = BASE + times[-1]
    refused = limiter.take(key, rate, t)
    assert not refused.allowed
    r = refused.retry_after
    if r > 1:
        assert not limiter.take(key, rate, t + r - 1).allowed
    assert limiter.take(key, rate, t + r).allowed


def test_give_back_and_clear(limiter):
    rate = Rate(2, 60)
    assert limiter.take("k", rate, BASE).allowed and limiter.take("k", rate, BASE).allowed
    assert not limiter.take("k", rate, BASE).allowed
    limiter.give_back("k", rate, BASE + 1)
    assert limiter.take("k", rate, BASE + 1).allowed
    limiter.clear("k", rate, BASE + 2)
    assert limiter.take("k", rate, BASE + 2).allowed and limiter.take("k", rate, BASE + 2).allowed
    for _ in range(5):
        limiter.give_back("k", rate, BASE + 3)  # never below zero
    assert [limiter.take("k", rate, BASE + 3).allowed for _ in range(3)] == [True, True, False]


def test_concurrent_takes_never_pass_the_limit(store):
    """16 threads, each with its own connection, race for 20 slots: exactly 20 pass."""
    rate = Rate(20, 60)
    limiter = Limiter(store)
    for round_number in range(3):
        key = f"race{round_number}"
        barrier = threading.Barrier(16)
        allowed = []
        lock = threading.Lock()

        def worker(key=key, barrier=barrier, allowed=allowed, lock=lock):
            barrier.wait()
            for _ in range(4):
                decision = limiter.take(key, rate, BASE + 1)
                with lock:
                    allowed.append(decision.allowed)

        threads = [threading.Thread(target=worker) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(allowed) == 64 and sum(allowed) == 20


def test_the_database_deletes_expired_windows(db_engine, session):
    from sqlalchemy import func, select

    from server.models import RateCounter

    clock = [float(BASE)]
    counters = DatabaseCounters(db_engine, clock=lambda: clock[0])
    limiter = Limiter(counters, clock=lambda: clock[0])
    limiter.take("old", Rate(5, 60))
    clock[0] += 3 * 60 + 61  # past the row's two periods, and past the sweep interval
    limiter.take("new", Rate(5, 60))
    with db_engine.connect() as connection:
        keys = connection.execute(select(RateCounter.key)).scalars().all()
        assert keys == ["new"]
        assert connection.execute(select(func.count()).select_from(RateCounter)).scalar() == 1


@pytest.mark.backends("sqlite")  # Redis only: once is enough
def test_redis_keys_expire_after_two_periods(redis_url, redis_prefix):
    counters = RedisCounters.from_url(redis_url, redis_prefix)
    Limiter(counters).take("k", Rate(5, 60), BASE + 1)
    (key,) = counters.client.keys(redis_prefix + "*")
    assert key.decode() == f"{redis_prefix}{{k}}:{BASE}"
    assert 0 < counters.client.ttl(key) <= 120


def test_retry_after_and_durations_in_words():
    rate = Rate(20, 60)
    assert retry_after(rate, 0, 20, BASE + 15) == 48  # next window, once 20 * (1 - f) <= 19
    assert retry_after(rate, 20, 0, BASE + 0) == 3  # 20 * (1 - f) <= 19 from f = 1/20 on
    assert retry_after(Rate(3, 60), 0, 2, BASE + 10) == 50  # next window: 2 * (1 - f) <= 2
    assert str(rate) == "20 per minute"
    assert str(Rate(5, 900)) == "5 per 15 minutes"
    assert [duration_text(s) for s in (1, 45, 60, 61, 119, 120, 3600, 7200)] == [
        "1 second", "45 seconds", "1 minute", "61 seconds", "119 seconds", "2 minutes",
        "1 hour", "2 hours"]
    with pytest.raises(ValueError):
        Rate(0, 60)
