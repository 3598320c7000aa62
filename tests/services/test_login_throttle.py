"""Login throttling per (email, address) and per address, in shared counters."""

from __future__ import annotations

import threading
import time

import pytest

from server.db import begin_as_reader
from server.services import accounts
from server.services.limits import DatabaseCounters, Limiter, Rate, RedisCounters

pytestmark = pytest.mark.usefixtures("db_backend")

NOW = float((int(time.time()) // 3600 + 2) * 3600)  # a future hour (see test_limits)
RATES = accounts.LoginRates(per_email_and_address=Rate(5, 900), per_address=Rate(12, 900))
ATTACKER, CLASSMATE = "127.0.0.2", "127.0.0.3"


@pytest.fixture
def limiter(counter_store, request, db_engine):
    if counter_store == "redis":
        return Limiter(RedisCounters.from_url(request.getfixturevalue("redis_url"),
                                              request.getfixturevalue("redis_prefix")))
    return Limiter(DatabaseCounters(db_engine))


@pytest.fixture
def student(session, make_user):
    user = make_user(session, email="student1@example.edu", password="the right password")
    session.commit()  # SQLite: the counters write in their own transactions
    return user


def attempt(session, limiter, email, password, address, now=NOW):
    """'ok', 'wrong' or the LoginThrottled message.

    The session reads as the login view's does (a DEFERRED reader on SQLite):
    the counters write in their own transactions, which need the write lock."""
    begin_as_reader(session)
    try:
        user = accounts.authenticate(session, email, password, limiter=limiter, address=address,
                                     rates=RATES, now=now)
    except accounts.LoginThrottled as exc:
        return f"throttled: {exc} ({exc.retry_after} s)"
    finally:
        session.commit()
    return "ok" if user is not None else "wrong"


def test_an_attacker_is_throttled_and_the_classmate_is_not(session, limiter, student):
    outcomes = [attempt(session, limiter, student.email, "guess", ATTACKER) for _ in range(6)]
    assert outcomes[:5] == ["wrong"] * 5
    assert outcomes[5].startswith("throttled: password: too many failed logins for this email "
                                  "from your address; try again in ")
    # Even the right password, from the attacker's address:
    assert attempt(session, limiter, student.email, "the right password", ATTACKER) \
        .startswith("throttled")
    # The student, from another address, is not locked out:
    assert attempt(session, limiter, student.email, "the right password", CLASSMATE) == "ok"
    # After the window and its weight have passed, the attacker may try again.
    later = NOW + 2 * 900
    assert attempt(session, limiter, student.email, "guess", ATTACKER, later) == "wrong"


def test_unknown_and_known_emails_behave_the_same(session, limiter, student):
    def sequence(email, address):
        return [attempt(session, limiter, email, "guess", address) for _ in range(7)]

    known = sequence(student.email, ATTACKER)
    unknown = sequence("nobody@example.edu", CLASSMATE)
    assert known == unknown
    assert known.count("wrong") == 5


def test_many_emails_from_one_address_are_throttled_by_address(session, limiter, student):
    outcomes = [attempt(session, limiter, f"user{n}@example.edu", "guess", ATTACKER)
                for n in range(RATES.per_address.limit + 1)]
    assert outcomes[:-1] == ["wrong"] * RATES.per_address.limit
    assert outcomes[-1].startswith("throttled: password: too many failed logins from your "
                                   "address; try again in ")
    assert attempt(session, limiter, student.email, "the right password", ATTACKER) \
        .startswith("throttled")
    assert attempt(session, limiter, student.email, "the right password", CLASSMATE) == "ok"


def test_a_right_password_clears_the_count_and_never_counts_for_the_address(
        session, limiter, student):
    for _ in range(4):
        assert attempt(session, limiter, student.email, "typo", CLASSMATE) == "wrong"
    assert attempt(session, limiter, student.email, "the right password", CLASSMATE) == "ok"
    assert [attempt(session, limiter, student.email, "typo", CLASSMATE)
            for _ in range(5)] == ["wrong"] * 5
    # A class behind one address logging in correctly never fills the address limit.
    for _ in range(3 * RATES.per_address.limit):
        assert attempt(session, limiter, student.email, "the right password", ATTACKER) == "ok"


def test_concurrent_guesses_get_no_more_tries_than_the_limit(db_engine, limiter, student):
    """20 guesses at once from one address: 5 are checked, 15 throttled."""
    from server.db import make_sessionmaker

    factory = make_sessionmaker(db_engine)
    barrier = threading.Barrier(20)
    outcomes = []

    def guess():
        session = factory()
        try:
            barrier.wait()
            outcomes.append(attempt(session, limiter, student.email, "guess", ATTACKER))
        finally:
            session.close()

    threads = [threading.Thread(target=guess) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("wrong") == 5
    assert sum(outcome.startswith("throttled") for outcome in outcomes) == 15


def test_without_a_limiter_nothing_is_counted(session, student):
    for _ in range(20):
        assert accounts.authenticate(session, student.email, "guess") is None
    assert accounts.authenticate(session, student.email, "the right password") is student
