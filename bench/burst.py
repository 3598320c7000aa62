"""A deadline burst against the real server: `nabla serve` (gunicorn) on loopback.

    .venv/bin/python bench/burst.py [--students 300] [--seconds 60] [--db sqlite,postgresql]
                                    [--postgres SERVER_URL] [--workers N] [--threads N]
                                    [--json FILE]

For each database (SQLite in a temporary folder; PostgreSQL: a new database on
--postgres, dropped at the end) it migrates, adds a course with one assignment
(mlp-relu as equations, mlp-relu-numpy as numpy, MAX_ATTEMPTS attempts each)
and --students students with an API token each, starts ``nabla serve`` with
the submission rate limit at its default, and plays a deadline: every student
starts at a random moment of the first two thirds of --seconds, opens their
problem (GET), and sends 3 submissions a second or so apart: a wrong or hostile
answer (a sign error, or for some an endless loop, a file read, a deeply
nested expression), then an invalid one or the right one, then the right one
double-clicked (two concurrent POSTs with the same Idempotency-Key). With 2
attempts, some students' third submission is refused.

It reports requests sent, submissions stored, graded, refused and invalid
(with reasons), 5xx, p50/p95/p99/max latency of the POSTs, throughput, and the
peak memory (VmHWM) of every process of the server; then it checks the
database (``check_database``): every acknowledged submission is stored with
the status it was acknowledged with, none is pending, a double click stored
one submission, no two submissions share an attempt, no attempt number
exceeds the limit, and nothing is stored that no response acknowledged.
Figures only, no time is asserted; exits 1 when an invariant fails.
tests/web/test_burst.py runs it with 30 students and asserts the invariants.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime as dt
import http.client
import json
import os
import platform
import random
import secrets
import statistics
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_http import HOST, free_port, model_answers, pct, start_server, stop_server  # noqa: E402
from common import POSTGRES, Goal, Rows, add_json_argument, scratch_database  # noqa: E402

PROBLEMS = {"equations": "mlp-relu", "numpy": "mlp-relu-numpy"}
MAX_ATTEMPTS = 2


@dataclasses.dataclass
class Sent:
    student: int
    kind: str
    label: str
    key: str
    status: int  # 0: no response (connection error)
    ms: float
    submission: int | None = None
    outcome: str | None = None  # the stored status the response reports
    message: str = ""


# --- the database ----------------------------------------------------------------------


def prepare(url: str, students: int) -> tuple[int, list[str]]:
    """Migrate; a course "BURST" with one assignment and ``students`` students with a
    token each. Returns (assignment id, tokens)."""
    from server import db
    from server.engine.bank import load_bank
    from server.models import utcnow
    from server.services import accounts, assignments, courses, tokens

    db.upgrade(url)
    engine = db.make_engine(url)
    bank = load_bank()
    try:
        session = db.make_sessionmaker(engine)()
        with session.begin():
            now = utcnow()
            course = courses.create_course(session, "BURST", "Deadline burst")
            draft = assignments.AssignmentDraft(
                title="Due in a minute", open_at=now - dt.timedelta(days=1),
                due_at=now + dt.timedelta(days=1), max_attempts=MAX_ATTEMPTS,
                problems=[assignments.ProblemChoice(pid) for pid in PROBLEMS.values()])
            assignment = assignments.create_assignment(session, course, draft, bank)
            api_tokens = []
            for number in range(students):
                user = accounts.create_user(session, f"burst{number}@example.edu",
                                            f"Burst Student {number}", None)
                courses.enroll(session, course, user, "student")
                api_tokens.append(tokens.create_token(session, user, "burst")[1])
            assignment_id = assignment.id
        session.close()
    finally:
        engine.dispose()
    return assignment_id, api_tokens


def check_database(url: str, assignment_id: int, sent: list[Sent]) -> tuple[dict, list[str]]:
    """Counts of what is stored, and every broken invariant (empty: all hold)."""
    from sqlalchemy import select

    from server import db
    from server.models import AssignmentProblem, Submission

    engine = db.make_engine(url)
    try:
        session = db.make_sessionmaker(engine)()
        rows = session.scalars(
            select(Submission).join(AssignmentProblem)
            .where(AssignmentProblem.assignment_id == assignment_id)).all()
        stored = {row.id: (row.status, row.attempt, row.user_id, row.assignment_problem_id,
                           row.client_key) for row in rows}
        session.close()
    finally:
        engine.dispose()
    problems: list[str] = []
    acknowledged = {}
    for s in sent:
        if s.submission is None:
            continue
        acknowledged.setdefault(s.submission, s)
        row = stored.get(s.submission)
        if row is None:
            problems.append(f"lost: submission {s.submission} acknowledged to student "
                            f"{s.student} is not stored")
        elif s.outcome != "pending" and row[0] != s.outcome:
            problems.append(f"submission {s.submission} acknowledged as {s.outcome} "
                            f"is stored as {row[0]}")
    for sid, (status, *_rest) in stored.items():
        if status == "pending":
            problems.append(f"submission {sid} is left pending")
        if sid not in acknowledged:
            problems.append(f"submission {sid} ({status}) was stored but never acknowledged")
    clicks = collections.defaultdict(set)
    for s in sent:
        if s.submission is not None:
            clicks[(s.student, s.kind, s.key)].add(s.submission)
    for (student, kind, _key), ids in clicks.items():
        if len(ids) > 1:
            problems.append(f"one click (student {student}, {kind}) stored {sorted(ids)}")
    attempts = collections.Counter((row[2], row[3], row[1]) for row in stored.values()
                                   if row[1] is not None)
    for (user, _problem, attempt), count in attempts.items():
        if count > 1:
            problems.append(f"attempt {attempt} of user {user} counted {count} times")
        if attempt > MAX_ATTEMPTS:
            problems.append(f"user {user} has attempt {attempt} > {MAX_ATTEMPTS}")
    counts = collections.Counter(status for status, *_ in stored.values())
    return {"stored": len(stored), **counts}, problems


# --- the students ----------------------------------------------------------------------


def plan(student: int, kind: str, right: str) -> list[tuple[str, str]]:
    """The three answers of one student, as (label, answer); the last is double-clicked."""
    if kind == "equations":
        wrong = right.replace("dx = dz1 @ W1", "dx = -dz1 @ W1")
        hostile = right.replace("dx = dz1 @ W1", "dx = " + "(" * 400 + "dz1" + ")" * 400
                                + " @ W1")
        invalid = "1. dz7 = doutput +"
    else:
        wrong = right.replace("dx = dz1 @ W1", "dx = -dz1 @ W1")
        hostile = (right.replace("    N = x.shape[0]", "    while True:\n        pass", 1)
                   if student % 50 == 1 else
                   right.replace("    N = x.shape[0]", "    open('/etc/passwd').read()", 1))
        invalid = "def backward(:\n"
    first = ("hostile", hostile) if student % 5 == 1 else ("wrong", wrong)
    second = ("invalid", invalid) if student % 2 else ("right", right)
    return [first, second, ("right, double click", right)]


class Student:
    def __init__(self, number: int, port: int, token: str, kind: str, path: str) -> None:
        self.number, self.port, self.kind, self.path = number, port, kind, path
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def request(self, method: str, path: str, body: bytes | None = None,
                key: str | None = None) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection(HOST, self.port, timeout=60)
        headers = dict(self.headers)
        if key:
            headers["Idempotency-Key"] = key
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def submit(self, label: str, answer: str, key: str, out: list[Sent]) -> None:
        body = json.dumps({"answer": answer}).encode()
        started = time.perf_counter()
        try:
            status, raw = self.request("POST", self.path, body, key)
        except OSError as exc:
            out.append(Sent(self.number, self.kind, label, key, 0,
                            (time.perf_counter() - started) * 1e3, message=str(exc)))
            return
        sent = Sent(self.number, self.kind, label, key, status,
                    (time.perf_counter() - started) * 1e3)
        try:
            data = json.loads(raw)
        except ValueError:
            data = {}
        summary = data.get("submission", data) if isinstance(data, dict) else {}
        if isinstance(summary.get("id"), int):  # acknowledged: it names what was stored
            sent.submission, sent.outcome = summary["id"], summary.get("status")
        sent.message = str(data.get("message") or data.get("error") or "")[:120]
        out.append(sent)

    def play(self, start_at: float, answers: list[tuple[str, str]], out: list[Sent],
             rng: random.Random, think: float) -> None:
        time.sleep(max(0.0, start_at - time.monotonic()))
        self.request("GET", self.path.removesuffix("/submissions"))  # opens the problem
        for number, (label, answer) in enumerate(answers):
            time.sleep(rng.uniform(0.5, 1.5) * think)
            key = secrets.token_hex(16)
            if number < len(answers) - 1:
                self.submit(label, answer, key, out)
                continue
            clicks = [threading.Thread(target=self.submit, args=(label, answer, key, out))
                      for _ in range(2)]
            for click in clicks:
                click.start()
            for click in clicks:
                click.join()


def play(port: int, assignment_id: int, api_tokens: list[str], seconds: float,
         seed: int = 14, think: float = 1.0) -> tuple[list[Sent], float]:
    """``think``: about the seconds between a student's submissions."""
    answers = model_answers()
    rng = random.Random(seed)
    out: list[Sent] = []
    threads = []
    begin = time.monotonic() + 0.5
    for number, token in enumerate(api_tokens):
        kind = ("equations", "numpy")[number % 2]
        path = (f"/api/v1/assignments/{assignment_id}/problems/{PROBLEMS[kind]}"
                "/submissions")
        student = Student(number, port, token, kind, path)
        start_at = begin + rng.uniform(0, seconds * 2 / 3)
        threads.append(threading.Thread(
            target=student.play,
            args=(start_at, plan(number, kind, answers[kind]), out,
                  random.Random(rng.random()), think)))
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return out, time.perf_counter() - started


def peak_memory_kb(root: int) -> dict[int, tuple[str, int]]:
    """VmHWM (peak resident set) of ``root`` and every live process below it (gunicorn's
    master, its workers, their judge processes, sandbox workers and children)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
            except (OSError, ValueError):
                continue
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    peaks = {}
    for pid in tree:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            name = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        values = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if "VmHWM" in values:
            peaks[pid] = (_role(name), int(values["VmHWM"].split()[0]))
    return peaks


def _role(cmdline: str) -> str:
    for needle, role in (("sandbox", "sandbox"), ("judge", "judge"), ("gunicorn", "gunicorn")):
        if needle in cmdline:
            return role
    return cmdline[:30]


# --- one run ---------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    sent: list[Sent]
    wall: float
    counts: dict
    problems: list[str]
    peaks: dict[int, tuple[str, int]]


def run(url: str, folder: Path, students: int, seconds: float, *, workers: int | None = None,
        threads: int | None = None, env: dict[str, str] | None = None,
        think: float = 1.0) -> Outcome:
    """Prepare ``url``, serve it, play the burst, check the database."""
    assignment_id, api_tokens = prepare(url, students)
    server_env = {**os.environ, "NABLA_DATABASE_URL": url, "NABLA_INSTANCE_PATH": str(folder),
                  "NABLA_SECRET_KEY": secrets.token_hex(32), "NABLA_REDIS_URL": "",
                  **(env or {})}
    server_env.pop("NABLA_SUBMIT_RATE", None)  # the default rate limit
    port = free_port()
    process = start_server(server_env, port, workers or 2 * (os.cpu_count() or 1),
                           threads or 2, folder / "server.log")
    try:
        sent, wall = play(port, assignment_id, api_tokens, seconds, think=think)
        peaks = peak_memory_kb(process.pid)
    finally:
        stop_server(process)
    counts, problems = check_database(url, assignment_id, sent)
    return Outcome(sent, wall, counts, problems, peaks)


def report(name: str, outcome: Outcome, rows: Rows | None = None, students: int = 0,
           seconds: float = 0) -> None:
    sent = outcome.sent
    posts = [s.ms for s in sent]
    statuses = collections.Counter(s.status for s in sent)
    reasons = collections.Counter(f"{s.status} {s.outcome or ''} {s.message[:60]}".strip()
                                  for s in sent if s.status != 201)
    five = sum(n for status, n in statuses.items() if status >= 500 or status == 0)
    print(f"{name}: {len(sent)} POSTs in {outcome.wall:.1f} s "
          f"({len(sent) / outcome.wall:.1f}/s); statuses {dict(sorted(statuses.items()))}; "
          f"5xx or no answer: {five}")
    print(f"  latency p50 {statistics.median(posts):.0f} ms  p95 {pct(posts, 0.95):.0f} ms  "
          f"p99 {pct(posts, 0.99):.0f} ms  max {max(posts):.0f} ms   (goal p99 <= 1000 ms)")
    print(f"  stored: {dict(outcome.counts)}")
    for reason, n in reasons.most_common(8):
        print(f"  {n:5d} x {reason}")
    by_role = collections.defaultdict(list)
    for role, kb in outcome.peaks.values():
        by_role[role].append(kb / 1024)
    print("  peak memory (VmHWM), MB: " + "; ".join(
        f"{role} x{len(v)}: max {max(v):.0f}, median {statistics.median(v):.0f}"
        for role, v in sorted(by_role.items())))
    print("  invariants: " + ("all hold" if not outcome.problems
                              else f"{len(outcome.problems)} broken"))
    for problem in outcome.problems[:20]:
        print(f"    {problem}")
    if rows is not None:
        rows.add(f"burst.{name}", "deadline burst over HTTP, POST latency",
                 f"{students} students x 3 submissions (one double-clicked) in {seconds:g} s, "
                 f"{'PostgreSQL' if name == 'postgresql' else 'SQLite'}", n=len(posts),
                 samples=posts, throughput=len(sent) / outcome.wall, throughput_unit="POSTs/s",
                 goal=Goal(p99=1000), checks={"0 5xx": five == 0,
                                              "0 lost, invariants hold": not outcome.problems})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--db", default="sqlite,postgresql")
    parser.add_argument("--postgres", default=POSTGRES, metavar="SERVER_URL")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--threads", type=int)
    add_json_argument(parser)
    args = parser.parse_args()
    rows = Rows("burst")

    print(f"burst: {args.students} students x 3 submissions (one double-clicked) in "
          f"{args.seconds:g} s; {os.cpu_count()} CPUs, {platform.platform()}, "
          f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, load {os.getloadavg()[0]:.2f}")
    failed = False
    for backend in args.db.split(","):
        postgres = args.postgres if backend == "postgresql" else None
        with scratch_database(postgres, "nabla_burst") as (url, folder):
            outcome = run(url, folder, args.students, args.seconds, workers=args.workers,
                          threads=args.threads)
            report(backend, outcome, rows, args.students, args.seconds)
            failed |= bool(outcome.problems)
    print(f"load average {os.getloadavg()[0]:.2f}")
    rows.write(args.json)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
