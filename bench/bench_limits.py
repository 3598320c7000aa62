"""What one rate-limit check costs: ``Limiter.take`` on each counter store.

    .venv/bin/python bench/bench_limits.py [--takes 2000] [--postgres URL] [--redis URL]
                                        [--json FILE]

For SQLite (a fresh WAL file, migrated), PostgreSQL (a new database, dropped
at the end) and Redis (a random key prefix, deleted at the end): times
``take`` one call at a time (each call is one transaction, or one Lua script),
and, side by side as the baseline, the cheapest write transaction on the
same store (SQLite/PostgreSQL: ``BEGIN; UPDATE one row; COMMIT``; Redis:
``INCR``). Prints the median and p99 in milliseconds and the ratio of the
medians. Figures only; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import Rows, add_json_argument, scratch_database  # noqa: E402

ROWS = Rows("bench_limits")


def timings(function: Callable[[int], object], count: int) -> list[float]:
    out = []
    for number in range(count):
        start = time.perf_counter()
        function(number)
        out.append((time.perf_counter() - start) * 1000)
    return out


def report(name: str, takes: list[float], baseline: list[float], label: str) -> None:
    def p99(values: list[float]) -> float:
        return sorted(values)[int(0.99 * (len(values) - 1))]

    m, b = statistics.median(takes), statistics.median(baseline)
    print(f"{name:<11} take p50 {m:6.3f} ms  p99 {p99(takes):6.3f} ms   |  {label:<26} "
          f"p50 {b:6.3f} ms  p99 {p99(baseline):6.3f} ms   |  ratio {m / b:4.2f}")
    ROWS.add(f"limits.{name.lower()}", "rate-limit check (Limiter.take)",
             f"{name}, one at a time", n=len(takes), samples=takes,
             baseline=f"{label} on the same store", baseline_samples=baseline)


def bench_database(name: str, url: str, count: int) -> None:
    from sqlalchemy import text

    from server import db
    from server.services.limits import DatabaseCounters, Limiter, Rate

    db.upgrade(url)
    engine = db.make_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO rate_counters VALUES ('baseline', 0, 0, 0)"))
        limiter = Limiter(DatabaseCounters(engine))
        rate = Rate(10**9, 60)
        limiter.take("warm", rate)

        def take(number: int) -> None:
            limiter.take(f"user:{number % 50}", rate)

        def baseline(number: int) -> None:
            with engine.begin() as connection:
                connection.execute(text(
                    "UPDATE rate_counters SET count = count + 1 WHERE key = 'baseline'"))

        report(name, timings(take, count), timings(baseline, count), "UPDATE one row (txn)")
    finally:
        engine.dispose()


def bench_redis(url: str, count: int) -> None:
    from server.services.limits import Limiter, Rate, RedisCounters

    prefix = f"nabla-bench:{secrets.token_hex(4)}:"
    counters = RedisCounters.from_url(url, prefix)
    limiter = Limiter(counters)
    rate = Rate(10**9, 60)
    try:
        limiter.take("warm", rate)

        def take(number: int) -> None:
            limiter.take(f"user:{number % 50}", rate)

        def baseline(number: int) -> None:
            counters.client.incr(prefix + "baseline")

        report("Redis", timings(take, count), timings(baseline, count), "INCR")
    finally:
        keys = list(counters.client.scan_iter(match=prefix + "*"))
        if keys:
            counters.client.delete(*keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--takes", type=int, default=2000)
    parser.add_argument("--postgres", metavar="SERVER_URL",
                        default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", metavar="URL", default="redis://127.0.0.1:6379/0")
    add_json_argument(parser)
    args = parser.parse_args()
    print(f"{args.takes} takes per store, one at a time; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.2f}")
    for postgres in (None, args.postgres):
        with scratch_database(postgres) as (url, _folder):
            bench_database("PostgreSQL" if postgres else "SQLite", url, args.takes)
    bench_redis(args.redis, args.takes)
    print(f"load average {os.getloadavg()[0]:.2f}")
    ROWS.write(args.json)


if __name__ == "__main__":
    main()
