"""What the benchmarks share: their machine-readable rows (``--json FILE``, read by
``run_all.py``), percentiles, scratch databases and the bulk inserts of a big course.

A row is one measurement with the columns of the table ``make bench`` prints:
measure, setting (with the sizes), n, p50, p99 (or a mean, where a figure is one),
throughput, a baseline measured in the same run and the ratio to it, the goal and
whether it is met. ``Rows.add`` computes the ratio and ``met``; nothing here
asserts a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
NOW = dt.datetime(2026, 11, 29, 12, tzinfo=dt.UTC)


def pct(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


@dataclasses.dataclass(frozen=True)
class Goal:
    """Limits a measurement should keep; unset ones do not apply. ``ratio_max`` bounds
    p50 / baseline (a speed-up of 50x is ``ratio_max=1 / 50``)."""

    p50: float | None = None
    p99: float | None = None
    throughput: float | None = None
    ratio_max: float | None = None
    note: str = ""

    def text(self, unit: str, throughput_unit: str) -> str:
        parts = []
        if self.p50 is not None:
            parts.append(f"p50 ≤ {self.p50:.4g} {unit}")
        if self.p99 is not None:
            parts.append(f"p99 ≤ {self.p99:.4g} {unit}")
        if self.throughput is not None:
            parts.append(f"≥ {self.throughput:.3g} {throughput_unit}")
        if self.ratio_max is not None:
            parts.append(f"≥ {1 / self.ratio_max:.3g}× faster than the baseline"
                         if self.ratio_max < 1 else f"≤ {self.ratio_max:.3g}× the baseline")
        return ", ".join(parts) + (f" {self.note}" if self.note else "")


class Rows:
    """The rows one benchmark measured; ``write`` saves them for run_all.py."""

    def __init__(self, bench: str) -> None:
        self.bench = bench
        self.rows: list[dict] = []

    def add(self, key: str, measure: str, setting: str, *, n: int,
            samples: Sequence[float] | None = None, unit: str = "ms",
            p50: float | None = None, p99: float | None = None, mean: float | None = None,
            throughput: float | None = None, throughput_unit: str = "/s",
            baseline: str | None = None, baseline_samples: Sequence[float] | None = None,
            baseline_p50: float | None = None, baseline_key: str | None = None,
            goal: Goal | None = None, checks: dict[str, bool] | None = None) -> dict:
        """One measurement. ``samples`` gives p50 and p99; ``baseline_samples`` (or
        ``baseline_p50``) the baseline, in the same unit; ``baseline_key`` names another
        row of the same run (run_all.py fills it in). ``checks``: conditions of the goal
        that are not times (e.g. "0 lost"), each True when it holds."""
        if samples is not None:
            p50, p99 = statistics.median(samples), pct(samples, 0.99)
        if baseline_samples is not None:
            baseline_p50 = statistics.median(baseline_samples)
        row = {"bench": self.bench, "key": key, "measure": measure, "setting": setting,
               "n": n, "unit": unit, "p50": p50, "p99": p99, "mean": mean,
               "throughput": throughput, "throughput_unit": throughput_unit,
               "baseline": baseline, "baseline_p50": baseline_p50,
               "baseline_key": baseline_key, "ratio": None,
               "goal": None, "goal_limits": dataclasses.asdict(goal) if goal else None,
               "checks": checks or {}, "met": None}
        finish(row)
        self.rows.append(row)
        return row

    def write(self, path: str | None) -> None:
        if path:
            Path(path).write_text(json.dumps({"bench": self.bench, "rows": self.rows},
                                             indent=1))


def finish(row: dict) -> None:
    """Ratio, goal text and ``met`` from the row's figures (again after run_all.py
    filled in a baseline from another row)."""
    value = row["p50"] if row["p50"] is not None else row["mean"]
    if value is not None and row["baseline_p50"]:
        row["ratio"] = value / row["baseline_p50"]
    limits = row["goal_limits"]
    if not limits and not row["checks"]:
        return
    goal = Goal(**limits) if limits else Goal()
    failed = [name for name, held in row["checks"].items() if not held]
    row["goal"] = ", ".join(filter(None, [goal.text(row["unit"], row["throughput_unit"]),
                                          *row["checks"]]))
    met = not failed
    for limit, figure, below in ((goal.p50, value, True), (goal.p99, row["p99"], True),
                                 (goal.throughput, row["throughput"], False),
                                 (goal.ratio_max, row["ratio"], True)):
        if limit is not None:
            met = met and figure is not None and (figure <= limit if below
                                                  else figure >= limit)
    row["met"] = met


def add_json_argument(parser) -> None:  # noqa: ANN001
    parser.add_argument("--json", metavar="FILE",
                        help="also write the figures as table rows (JSON) for run_all.py")


@contextlib.contextmanager
def scratch_database(postgres: str | None, prefix: str = "nabla_bench"
                     ) -> Iterator[tuple[str, Path]]:
    """(database URL, a temporary folder): SQLite in the folder, or with ``postgres``
    (a server URL) a new database there; both are removed at the end."""
    from tests import scratch_db

    folder = Path(tempfile.mkdtemp(prefix=prefix.replace("_", "-") + "-"))
    url = (scratch_db.create_postgres_database(postgres, prefix) if postgres
           else f"sqlite:///{folder / 'bench.sqlite3'}")
    try:
        yield url, folder
    finally:
        if postgres:
            scratch_db.drop_postgres_database(postgres, url)
        shutil.rmtree(folder, ignore_errors=True)


def backend_name(postgres: str | None) -> str:
    return "PostgreSQL" if postgres else "SQLite"


# --- a big course, inserted with bulk statements (bench_analytics, bench_export) ----------


def insert_course(c, code: str, problem_ids: Sequence[str]  # noqa: ANN001
                  ) -> tuple[int, dict[str, int]]:
    """A course and equations problems with one version each: (course id,
    {problem id: version id})."""
    from sqlalchemy import insert

    from server.models import Course, Problem, ProblemVersion

    course_id = c.execute(insert(Course).values(code=code, title=code.title(), created_at=NOW)
                          .returning(Course.id)).scalar_one()
    versions = {}
    for pid in problem_ids:
        c.execute(insert(Problem).values(id=pid, spec_id=pid, title=pid,
                                         answer_type="equations", created_at=NOW))
        versions[pid] = c.execute(insert(ProblemVersion).values(
            problem_id=pid, version=1, spec_text="", spec_hash=f"h-{pid}", created_at=NOW)
            .returning(ProblemVersion.id)).scalar_one()
    return course_id, versions


def insert_students(c, course_id: int, count: int, staff: Sequence[str] = (),  # noqa: ANN001
                    enrollment: Callable[[int], dict] = lambda _user_id: {}
                    ) -> tuple[list[int], dict[str, int]]:
    """``count`` enrolled students and the ``staff`` roles (one user each, e.g. "ta"):
    (student ids in order, {role: user id}). ``enrollment(user id)``: more columns of
    a student's enrollment."""
    from sqlalchemy import insert

    from server.models import Enrollment, User

    c.execute(insert(User), [
        {"email": f"s{i:05d}@example.edu", "name": f"Student {i:05d}", "created_at": NOW}
        for i in range(count)] + [
        {"email": f"{role}@example.edu", "name": role.upper(), "created_at": NOW}
        for role in staff])
    ids = dict(c.execute(User.__table__.select().with_only_columns(User.email, User.id)).all())
    staff_ids = {role: ids.pop(f"{role}@example.edu") for role in staff}
    students = sorted(ids.values())
    c.execute(insert(Enrollment), [
        {"user_id": u, "course_id": course_id, "role": "student", "created_at": NOW,
         **enrollment(u)} for u in students] + [
        {"user_id": u, "course_id": course_id, "role": role, "created_at": NOW}
        for role, u in staff_ids.items()])
    return students, staff_ids


def insert_instances(c, user_ids: Sequence[int], assignment_problem_id: int,  # noqa: ANN001
                     version_id: int, choices: Sequence[str] = ("{}",)) -> dict[int, int]:
    """One (empty) instance per student: {user id: instance id}."""
    from sqlalchemy import insert, select

    from server.models import Instance

    c.execute(insert(Instance), [
        {"user_id": u, "assignment_problem_id": assignment_problem_id,
         "problem_version_id": version_id, "seed": u, "dims_json": "{}",
         "choices_json": choices[u % len(choices)], "values_json": "{}",
         "reference_json": "{}", "created_at": NOW} for u in user_ids])
    return dict(c.execute(select(Instance.user_id, Instance.id).where(
        Instance.assignment_problem_id == assignment_problem_id)).all())


# --- a fresh interpreter per sandbox job (the baseline of the pre-forked pool) -----------


class _ExitReport:
    """Stands in for the worker's lease socket: reports how a one-shot process ended."""

    def __init__(self, proc) -> None:  # noqa: ANN001
        self.proc = proc

    def settimeout(self, _t: float) -> None:
        pass

    def recv(self, _n: int) -> bytes:
        code = self.proc.wait(5)
        return json.dumps({"exit": code if code >= 0 else None,
                           "signal": -code if code < 0 else None, "wall": False}).encode()


def fresh_interpreter_job(source: str, calls: list[dict], *, function: str = "backward",
                          time_limit_s: float = 5.0, memory_mb: int = 512,
                          max_output_bytes: int = 64 << 20, outputs: Sequence[str] | None = None,
                          **_ignored: object):  # noqa: ANN201
    """``sandbox.run_job`` with a fresh interpreter for the job (``python -I``, numpy
    imported, the same isolation layers: the worker's one-shot mode) instead of a
    pre-forked child. Takes ``run_job``'s keyword arguments."""
    import socket
    import subprocess
    import time

    from server.sandbox import client, wire

    limits = {"time_limit_s": float(time_limit_s), "memory_mb": int(memory_mb),
              "max_output_arrays": 64, "max_array_elements": 1_000_000,
              "max_output_bytes": int(max_output_bytes), "max_stream_chars": 10_000,
              "outputs": None if outputs is None else list(outputs)}
    started = time.perf_counter()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    args = ["--oneshot", str(theirs.fileno()), "--uid-base", str(client.UID_FIRST)]
    proc = subprocess.Popen(client.worker_command(args), env=client.clean_environment(),
                            cwd="/", pass_fds=[theirs.fileno()], close_fds=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    theirs.close()
    job = wire.encode_job(source, calls, function, limits)

    def result(status: str, **kw: object) -> client.JobResult:
        return client.JobResult(status=status, elapsed_ms=(time.perf_counter() - started) * 1e3,
                                **kw)

    try:
        # The interpreter's start-up counts against the job's time (give it room).
        deadline = time.monotonic() + max(float(time_limit_s), 10.0)
        return client.get_sandbox()._converse(None, _ExitReport(proc), ours, job, deadline,
                                              limits, len(calls), result, source)
    finally:
        ours.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
