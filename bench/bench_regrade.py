"""Regrading stored submissions: half equations (mlp-relu), half numpy (mlp-relu-numpy).

    .venv/bin/python bench/bench_regrade.py [--submissions 10000] [--students 50]
        [--runner both|inprocess|rq] [--workers 2] [--threads 4] [--postgres URL]
        [--redis URL] [--sample 60] [--json FILE]

Fills a fresh database (SQLite in a temporary folder, or a new PostgreSQL
database, dropped at the end) with one course, ``--students`` students, their
instances of the two problems (drawn by the engine) and ``--submissions``
stored, never graded submissions (half of them the model answer, half a wrong
one), each with its own hidden-instance seeds. Then regrades the whole
assignment as one job (every submission changes: one audit row each):

* in-process: the job runs in a thread of this process (the embedded
  default), ``--threads`` gradings at once;
* rq: on ``--workers`` ``nabla worker`` processes started here, on a queue of
  their own in Redis, ``--threads`` gradings at once each.

Before that, as the per-stage baseline, ``--sample`` submissions of each kind
are graded one at a time through the same call the regrade makes (no
database): the cost of one grading of each kind. Prints wall time, the time
per submission, the ratio of the two runners, and what the per-stage figures
predict. Figures only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import Goal, Rows, add_json_argument, backend_name  # noqa: E402

PROBLEMS = ("mlp-relu", "mlp-relu-numpy")


def fill(url: str, students: int, submissions: int) -> tuple[int, int]:
    """(course id, assignment id) after inserting everything."""
    from sqlalchemy import insert, select

    from server import db
    from server.engine.bank import load_bank
    from server.engine.problem import instance_from_document, model_answer
    from server.models import Enrollment, Instance, Submission, User
    from server.models.base import dumps
    from server.services import grading
    from server.services.assignments import AssignmentDraft, ProblemChoice, create_assignment
    from server.services.courses import create_course
    from server.services.problems import latest_version

    bank = load_bank()
    engine = db.make_engine(url)
    factory = db.make_sessionmaker(engine)
    now = dt.datetime.now(dt.UTC)
    rng = random.Random(7)
    with factory() as session, session.begin():
        course = create_course(session, "BENCH", "Regrade bench")
        assignment = create_assignment(session, course, AssignmentDraft(
            title="Homework", open_at=now - dt.timedelta(days=1),
            due_at=now + dt.timedelta(days=1),
            problems=[ProblemChoice(p) for p in PROBLEMS]), bank)
        session.execute(insert(User), [
            {"email": f"s{i}@example.edu", "name": f"S {i}", "created_at": now}
            for i in range(students)])
        users = list(session.scalars(select(User.id).order_by(User.id)))
        session.execute(insert(Enrollment), [
            {"user_id": u, "course_id": course.id, "role": "student", "created_at": now}
            for u in users])
        per_instance = submissions // (students * len(PROBLEMS))
        for ap in assignment.problems:
            spec = bank[ap.problem_id]
            version = latest_version(session, ap.problem_id)
            wrong = ("dz7 = doutput\n" if spec.answer_kind == "equations"
                     else "def backward(**kw):\n    return {}\n")
            for n, user_id in enumerate(users):
                seed = 1000 + n
                drawn = grading.draw_for_seed(spec, seed)
                instance_id = session.execute(insert(Instance).values(
                    user_id=user_id, assignment_problem_id=ap.id,
                    problem_version_id=version.id, seed=seed, dims_json=dumps(drawn.dims),
                    choices_json=dumps(drawn.choices), values_json=dumps(drawn.values),
                    reference_json=dumps(drawn.reference), created_at=now)
                    .returning(Instance.id)).scalar_one()
                right = model_answer(spec, instance_from_document(spec, drawn.reference))
                session.execute(insert(Submission), [
                    {"user_id": user_id, "assignment_problem_id": ap.id,
                     "instance_id": instance_id, "answer": right if k % 2 == 0 else wrong,
                     "kind": spec.answer_kind, "status": "pending", "attempt": k + 1,
                     "late": False, "created_at": now + dt.timedelta(seconds=k),
                     "hidden_seeds_json": json.dumps([rng.randrange(2**31),
                                                      rng.randrange(2**31)])}
                    for k in range(per_instance)])
        ids = (course.id, assignment.id)
    engine.dispose()
    return ids


def reset(url: str) -> None:
    from sqlalchemy import delete, update

    from server import db
    from server.models import Job, Regrade, Submission

    engine = db.make_engine(url)
    with engine.begin() as c:
        c.execute(delete(Regrade))
        c.execute(delete(Job))
        c.execute(update(Submission).values(status="pending", score=None, result_json=None,
                                            graded_at=None))
    engine.dispose()


def stage_figures(url: str, sample: int, threads: int) -> dict[str, tuple[float, float]]:
    """Per kind: the median ms of one grading at a time, and gradings per second with
    ``threads`` at once, through regrade's own call (no database)."""
    from concurrent.futures import ThreadPoolExecutor

    from sqlalchemy import select

    from server import db
    from server.engine.bank import load_bank
    from server.models import Submission
    from server.services import regrade

    engine = db.make_engine(url)
    factory = db.make_sessionmaker(engine)
    bank = load_bank()
    out = {}
    for kind in ("equations", "numpy"):
        with factory() as session:
            ids = list(session.scalars(select(Submission.id).where(Submission.kind == kind)
                                       .order_by(Submission.id).limit(sample)))
        tasks, _ = regrade._prepare(regrade._load(factory, ids), bank, False)
        for task in tasks[:3]:
            regrade._grade(task)  # warm the judge, the sandbox pool and the caches
        times = []
        for task in tasks:
            start = time.perf_counter()
            regrade._grade(task)
            times.append((time.perf_counter() - start) * 1e3)
        start = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(regrade._grade, tasks))
        out[kind] = (statistics.median(times), len(tasks) / (time.perf_counter() - start))
    engine.dispose()
    return out


def tree_cpu_s() -> float:
    """CPU seconds of this process and every process below it (judge, sandbox, workers),
    counting the children they have reaped: compare before and after a run."""
    stats = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(name)] = (int(fields[1]), sum(int(v) for v in fields[11:15]))
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [os.getpid()]
    while todo:
        pid = todo.pop()
        total += stats.get(pid, (0, 0))[1]
        todo += children.get(pid, [])
    return total / os.sysconf("SC_CLK_TCK")


def wait_for_job(url: str, job_id: int) -> tuple[str, int, int, int]:
    from server import db
    from server.models import Job

    engine = db.make_engine(url)
    factory = db.make_sessionmaker(engine)
    try:
        while True:
            with factory() as session:
                job = session.get(Job, job_id)
                if job.state in ("done", "failed"):
                    return job.state, job.done, job.changed, job.errors
            time.sleep(0.2)
    finally:
        engine.dispose()


def run_job(url: str, course_id: int, assignment_id: int, settings: dict) -> tuple[float, tuple]:
    """(wall seconds, (state, done, changed, errors, CPU seconds of our process tree))."""
    from server import db
    from server.models import Course
    from server.services import jobs, regrade

    engine = db.make_engine(url)
    factory = db.make_sessionmaker(engine)
    cpu = tree_cpu_s()
    start = time.perf_counter()
    with factory() as session, session.begin():
        job = regrade.start_regrade(session, session.get(Course, course_id), actor=None,
                                    reason="bench", assignment_id=assignment_id)
    threads = jobs.dispatch(engine, job, settings)
    for thread in threads:
        thread.join()
    outcome = wait_for_job(url, job.id)
    elapsed = time.perf_counter() - start
    engine.dispose()
    return elapsed, (*outcome, round(tree_cpu_s() - cpu, 1))


def start_workers(url: str, redis_url: str, prefix: str, count: int, threads: int,
                  folder: str) -> list[subprocess.Popen]:
    from redis import Redis
    from rq import Worker

    nabla = str(Path(sys.executable).with_name("nabla"))
    env = {**os.environ, "NABLA_DATABASE_URL": url, "NABLA_REDIS_URL": redis_url,
           "NABLA_REDIS_PREFIX": prefix, "NABLA_REGRADE_THREADS": str(threads),
           "NABLA_INSTANCE_PATH": folder}
    processes = []
    for n in range(count):
        with open(Path(folder) / f"worker{n}.log", "wb") as log:
            processes.append(subprocess.Popen([nabla, "worker"], env=env, stdout=log,
                                              stderr=subprocess.STDOUT,
                                              start_new_session=True))
    connection = Redis.from_url(redis_url)
    deadline = time.monotonic() + 60
    while len([w for w in Worker.all(connection=connection)
               if prefix + "jobs" in w.queue_names()]) < count:
        if time.monotonic() > deadline:
            raise SystemExit("the workers did not start; see " + folder)
        time.sleep(0.2)
    return processes


def report(name: str, run: tuple[float, tuple], submissions: int) -> float:
    elapsed, outcome = run
    print(f"{name}: {elapsed:.1f} s, {elapsed / submissions * 1e3:.2f} ms per submission, "
          f"CPU {outcome[-1] / submissions * 1e3:.1f} ms per submission; state, done, "
          f"changed, errors, CPU s = {outcome}; load average {os.getloadavg()[0]:.1f}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--submissions", type=int, default=10_000)
    parser.add_argument("--students", type=int, default=50)
    parser.add_argument("--runner", choices=("both", "inprocess", "rq"), default="both")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--sample", type=int, default=60)
    parser.add_argument("--postgres", help="a PostgreSQL server URL (a database is made there)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    add_json_argument(parser)
    args = parser.parse_args()
    rows = Rows("bench_regrade")
    from server import db
    from tests import scratch_db

    folder = tempfile.mkdtemp(prefix="nabla-bench-regrade-")
    url = (scratch_db.create_postgres_database(args.postgres, "nabla_bench") if args.postgres
           else f"sqlite:///{folder}/bench.sqlite3")
    workers: list[subprocess.Popen] = []
    try:
        db.upgrade(url)
        start = time.perf_counter()
        course_id, assignment_id = fill(url, args.students, args.submissions)
        print(f"{args.submissions} submissions of {args.students} students stored in "
              f"{time.perf_counter() - start:.1f} s ({'PostgreSQL' if args.postgres else 'SQLite'}"
              f", {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})")
        stages = stage_figures(url, args.sample, args.threads)
        (eq_ms, eq_rate), (np_ms, np_rate) = stages["equations"], stages["numpy"]
        half = args.submissions / 2
        print(f"per stage (grading only, no database; {args.sample} of each kind): one at a "
              f"time, median equations {eq_ms:.1f} ms, numpy {np_ms:.1f} ms; "
              f"{args.threads} at once, equations {eq_rate:.0f}/s, numpy {np_rate:.0f}/s: "
              f"{half / eq_rate:.0f} s + {half / np_rate:.0f} s = "
              f"{half / eq_rate + half / np_rate:.0f} s predicted for all "
              f"(load average {os.getloadavg()[0]:.1f})")
        results = {}
        if args.runner in ("both", "inprocess"):
            reset(url)
            settings = {"threads": args.threads, "redis_url": None}
            results["in-process"] = report(f"in-process ({args.threads} threads)", run_job(
                url, course_id, assignment_id, settings), args.submissions)
        if args.runner in ("both", "rq"):
            reset(url)
            prefix = f"nabla-bench:{secrets.token_hex(4)}:"
            workers = start_workers(url, args.redis, prefix, args.workers, args.threads,
                                    folder)
            settings = {"redis_url": args.redis, "queue": prefix + "jobs"}
            results["rq"] = report(f"RQ ({args.workers} workers x {args.threads} threads)",
                                   run_job(url, course_id, assignment_id, settings),
                                   args.submissions)
        if len(results) == 2:
            print(f"ratio RQ / in-process: {results['rq'] / results['in-process']:.2f}")
        predicted = half / eq_rate + half / np_rate
        for runner, elapsed in results.items():
            rows.add(f"regrade.{runner}.{backend_name(args.postgres).lower()}",
                     f"regrade of an assignment, {runner}",
                     f"{args.submissions} submissions (half numpy), "
                     f"{backend_name(args.postgres)}, {args.threads} threads"
                     + (f" x {args.workers} workers" if runner == "rq" else "")
                     + "; one run", n=1, unit="s", p50=elapsed,
                     throughput=args.submissions / elapsed, throughput_unit="submissions/s",
                     baseline=f"grading alone, no database ({args.sample} of each kind, "
                     f"{args.threads} at once), scaled", baseline_p50=predicted,
                     goal=Goal(throughput=10_000 / 60, note="(10,000 in ≤ 60 s)"))
        rows.write(args.json)
    finally:
        for process in workers:
            from tests.web.helpers import stop_process_group

            stop_process_group(process)
        if args.postgres:
            scratch_db.drop_postgres_database(args.postgres, url)


if __name__ == "__main__":
    main()
