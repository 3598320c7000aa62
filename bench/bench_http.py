"""Submissions over HTTP against the real server: `nabla serve` (gunicorn) on loopback.

    .venv/bin/python bench/bench_http.py [--clients 4] [--requests 150] [--seconds 20]
                                         [--workers 2xCPUs] [--threads 2] [--postgres URL]
                                         [--redis URL] [--first 40] [--gap-ms 0] [--cpu]

Creates a fresh database (SQLite in a temporary folder; with --postgres, a new
database on that server, dropped at the end), migrates it, adds the demo
course (``nabla demo``'s data) plus one student per client and a "Benchmark"
assignment with mlp-relu (equations) and mlp-relu-numpy (numpy) and 1000
attempts per problem, and gives each student an API token. It then starts
``nabla serve --bind 127.0.0.1:<free port>`` and, for each answer type,
drives it with --clients concurrent clients (one keep-alive connection each),
each POSTing its model answer to /api/v1/.../submissions until it has sent
--requests or --seconds have passed, back to back or, with --gap-ms, pausing
between submissions (so that the server's pools refill while it is idle).
Every response must be 201 with score 1.
The server runs with NABLA_SUBMIT_RATE at BENCH_SUBMIT_RATE: its counters are
taken on every submission (in the database, or in Redis with --redis) but
never refuse one, so the figures stay comparable with those measured before
the rate limit existed.

Before that, with --first N (default 40), N more students each open the
problem (the GET draws their instance) and POST their answer once, one after
another: the *first grade* of an instance, which the server has not graded
before (numpy: the instance's document is parsed; equations: the judge process
is sent it), beside the back-to-back phase's *resubmissions*.

Prints, per answer type: p50/p90/p99/max latency of the POST as the client
sees it, and throughput (graded submissions per second over the phase); the
first grades' p50/p99; and the 1-minute load average before and after (other
work on the machine). With --cpu, the CPU that each kind of server process
(gunicorn workers, judge, sandbox with its children) and the clients used per
submission of the back-to-back phase.
Figures only; nothing here asserts a time. The goals (2 cores): p50 <= 8 ms
for equations and <= 12 ms for numpy; p99 <= 30 ms and <= 40 ms.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if os.environ.get("PYTHONPATH"):  # another tree under test (a before run): it comes first
    sys.path.append(str(ROOT))
else:
    sys.path.insert(0, str(ROOT))

HOST = "127.0.0.1"  # loopback only
PROBLEMS = {"equations": "mlp-relu", "numpy": "mlp-relu-numpy"}
GOALS = {"equations": (8.0, 30.0), "numpy": (12.0, 40.0)}
MAX_CLIENTS = 32
MAX_REQUESTS = 900  # per client and phase: below the assignment's 1000 attempts
BENCH_SUBMIT_RATE = "1000000/minute"  # counted, never reached


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# --- the database ----------------------------------------------------------------------


def prepare_data(url: str, clients: int) -> tuple[int, list[str]]:
    """Migrate, add the demo and ``clients`` bench students; returns (assignment id,
    their tokens, in the order the students were created)."""
    from server import db
    from server.cli.web_cmds import DEMO_COURSE, create_demo
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
            create_demo(session, bank, now)
            course = courses.get_course(session, DEMO_COURSE[0])
            draft = assignments.AssignmentDraft(
                title="Benchmark", open_at=now - dt.timedelta(days=1),
                due_at=now + dt.timedelta(days=7), max_attempts=1000,
                problems=[assignments.ProblemChoice(pid) for pid in PROBLEMS.values()])
            assignment = assignments.create_assignment(session, course, draft, bank)
            api_tokens = []
            for number in range(1, clients + 1):
                user = accounts.create_user(session, f"bench{number}@example.edu",
                                            f"Bench Student {number}", None)
                courses.enroll(session, course, user, "student")
                api_tokens.append(tokens.create_token(session, user, "bench_http")[1])
            assignment_id = assignment.id
        session.close()
    finally:
        engine.dispose()
    return assignment_id, api_tokens


def model_answers() -> dict[str, str]:
    """The model answer of each problem; neither has structural choices, so it holds for
    every student's instance (the server's score of 1 confirms it)."""
    from server.engine.bank import load_bank
    from server.engine.problem import draw, model_answer

    bank = load_bank()
    answers = {}
    for kind, pid in PROBLEMS.items():
        spec = bank[pid]
        assert not spec.choices, f"{pid} has choices: the answer would differ per student"
        answers[kind] = model_answer(spec, draw(spec, 0))
    return answers


# --- the server ------------------------------------------------------------------------


def start_server(env: dict[str, str], port: int, workers: int, threads: int,
                 log_path: Path) -> subprocess.Popen:
    import server

    nabla = Path(sys.executable).with_name("nabla")
    # `nabla serve` runs `python -m gunicorn`, which puts its working folder first on
    # sys.path: start it in the tree whose code is under test (PYTHONPATH's, or this one).
    tree = Path(server.__file__).resolve().parents[1]
    print(f"server code: {tree}", file=sys.stderr)
    log = log_path.open("wb")
    process = subprocess.Popen(
        [str(nabla), "serve", "--bind", f"{HOST}:{port}", "--workers", str(workers),
         "--threads", str(threads)],
        cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"nabla serve exited:\n{log_path.read_text()[-3000:]}")
        connection = http.client.HTTPConnection(HOST, port, timeout=2)
        try:
            connection.request("GET", "/login")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.2)
        finally:
            connection.close()
    stop_server(process)
    raise SystemExit("nabla serve did not answer within 60 s")


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# --- the clients -----------------------------------------------------------------------


class Client:
    def __init__(self, port: int, token: str) -> None:
        self.connection = http.client.HTTPConnection(HOST, port, timeout=30)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        self.connection.request(method, path, body=body, headers=self.headers)
        response = self.connection.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        self.connection.close()


def run_phase(port: int, api_tokens: list[str], path: str, answer: str, requests: int,
              seconds: float, gap_s: float = 0.0) -> tuple[list[float], float, list[str]]:
    """Every client POSTs the answer back to back (or ``gap_s`` apart); returns
    latencies (ms), wall time, errors."""
    body = json.dumps({"answer": answer}).encode()
    latencies: list[list[float]] = [[] for _ in api_tokens]
    errors: list[str] = []
    barrier = threading.Barrier(len(api_tokens) + 1)
    deadline_box: list[float] = []

    def drive(index: int, token: str) -> None:
        client = Client(port, token)
        try:
            client.request("GET", path.removesuffix("/submissions"))  # warm: instance drawn
            barrier.wait()
            deadline = deadline_box[0]
            mine = latencies[index]
            while len(mine) < requests and time.monotonic() < deadline:
                if gap_s and mine:
                    time.sleep(gap_s)
                started = time.perf_counter()
                status, raw = client.request("POST", path, body)
                mine.append((time.perf_counter() - started) * 1e3)
                if status != 201:
                    errors.append(f"HTTP {status}: {raw[:200]!r}")
                elif json.loads(raw)["score"] != 1.0:
                    errors.append(f"score {json.loads(raw)['score']}")
        except Exception as exc:  # reported with the figures
            errors.append(f"{type(exc).__name__}: {exc}")
            if barrier.n_waiting:
                barrier.abort()
        finally:
            client.close()

    threads = [threading.Thread(target=drive, args=(i, t)) for i, t in enumerate(api_tokens)]
    for thread in threads:
        thread.start()
    deadline_box.append(time.monotonic() + seconds)
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return [x for per_client in latencies for x in per_client], wall, errors


def first_grades(port: int, api_tokens: list[str], path: str, answer: str
                 ) -> tuple[list[float], list[str]]:
    """Each student, one after another, opens the problem (the GET draws the instance)
    and POSTs the answer once; returns the POSTs' latencies (ms) and errors."""
    body = json.dumps({"answer": answer}).encode()
    latencies: list[float] = []
    errors: list[str] = []
    for token in api_tokens:
        client = Client(port, token)
        try:
            client.request("GET", path.removesuffix("/submissions"))
            started = time.perf_counter()
            status, raw = client.request("POST", path, body)
            latencies.append((time.perf_counter() - started) * 1e3)
            if status != 201 or json.loads(raw)["score"] != 1.0:
                errors.append(f"HTTP {status}: {raw[:200]!r}")
        finally:
            client.close()
    return latencies, errors


def process_cpu(root_pid: int) -> dict[str, float]:
    """CPU seconds used so far by the server's processes, by kind: the gunicorn
    workers, the judge (zygote and judge processes) and the sandbox (workers and
    their sandboxed children, reaped ones included), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    table: dict[int, tuple[int, list[str], str]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{name}/cmdline", "rb") as fh:
                command = fh.read().decode(errors="replace")
        except OSError:
            continue
        table[int(name)] = (int(fields[1]), fields, command)

    def under_server(pid: int) -> bool:
        while pid in table and pid != root_pid:
            pid = table[pid][0]
        return pid == root_pid

    totals = {"gunicorn workers": 0.0, "judge": 0.0, "sandbox": 0.0}
    for pid, (_, fields, command) in table.items():
        if pid == root_pid or not under_server(pid):
            continue
        kind = ("sandbox" if "server.sandbox" in command
                else "judge" if "server.judge" in command else "gunicorn workers")
        # utime, stime, and the children's that were reaped (sandboxed children)
        totals[kind] += sum(int(x) for x in fields[11:15]) / tick
    return totals


def warm_up(port: int, api_tokens: list[str], paths: dict[str, str],
            answers: dict[str, str]) -> None:
    """A few submissions per process before measuring: imports, the sandbox pool, caches."""
    for kind, path in paths.items():
        run_phase(port, api_tokens, path, answers[kind], requests=5, seconds=30)


IN_PROCESS = {"equations": "engine.grade.mlp-relu.model.hidden",
              "numpy": "numpy.grade.resubmission"}  # rows of bench_engine, bench_numpy_grading


def write_rows(args: argparse.Namespace, backend: str,
               table: list[tuple[str, list[float], float, bool]]) -> None:
    from common import Goal, Rows

    rows = Rows("bench_http")
    for kind, latencies, wall, ok in table:
        rows.add(f"http.{kind}.{'postgresql' if args.postgres else 'sqlite'}",
                 f"HTTP POST submission, {kind}", f"{backend}; {args.clients} client(s) back "
                 f"to back, {args.workers} workers x {args.threads} threads", n=len(latencies),
                 samples=latencies, throughput=len(latencies) / wall,
                 throughput_unit="submissions/s", baseline_key=IN_PROCESS[kind],
                 goal=Goal(*GOALS[kind]), checks={"every response 201, score 1": ok})
    rows.write(args.json)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=150, help="per client and answer type")
    parser.add_argument("--seconds", type=float, default=20.0, help="per answer type, at most")
    # The defaults of `nabla serve`.
    parser.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--postgres", metavar="SERVER_URL",
                        help="use a new database on this PostgreSQL server instead of SQLite, "
                             "e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--cpu", action="store_true",
                        help="print the CPU per submission of each kind of server process "
                             "(from /proc; Linux)")
    parser.add_argument("--gap-ms", type=float, default=0.0,
                        help="pause between a client's submissions (0: back to back)")
    parser.add_argument("--first", type=int, default=40,
                        help="students who each send one first submission per answer type")
    parser.add_argument("--redis", metavar="URL",
                        help="keep the rate counters in Redis (NABLA_REDIS_URL), e.g. "
                             "redis://127.0.0.1:6379/0, instead of the database")
    parser.add_argument("--json", metavar="FILE", help="also write table rows for run_all.py")
    args = parser.parse_args()
    if not 1 <= args.clients <= MAX_CLIENTS:
        parser.error(f"--clients must be between 1 and {MAX_CLIENTS}")
    if not 1 <= args.requests <= MAX_REQUESTS:
        parser.error(f"--requests must be between 1 and {MAX_REQUESTS}")
    if not 0 <= args.first <= 500:
        parser.error("--first must be between 0 and 500")
    if not 0 < args.seconds <= 300:
        parser.error("--seconds must be in (0, 300]")

    from tests import scratch_db

    folder = Path(tempfile.mkdtemp(prefix="nabla-bench-http-"))
    url = (scratch_db.create_postgres_database(args.postgres, "nabla_bench") if args.postgres
           else f"sqlite:///{folder / 'bench.sqlite3'}")
    process = None
    keep_folder = False
    try:
        assignment_id, api_tokens = prepare_data(url, args.clients + args.first)
        api_tokens, first_tokens = api_tokens[:args.clients], api_tokens[args.clients:]
        answers = model_answers()
        env = {**os.environ, "NABLA_DATABASE_URL": url, "NABLA_INSTANCE_PATH": str(folder),
               "NABLA_SECRET_KEY": secrets.token_hex(32), "NABLA_SUBMIT_RATE": BENCH_SUBMIT_RATE,
               "NABLA_REDIS_URL": args.redis or "",
               "NABLA_REDIS_PREFIX": f"nabla-bench:{secrets.token_hex(4)}:"}
        port = free_port()
        process = start_server(env, port, args.workers, args.threads, folder / "server.log")
        paths = {kind: f"/api/v1/assignments/{assignment_id}/problems/{pid}/submissions"
                 for kind, pid in PROBLEMS.items()}
        warm_up(port, api_tokens, paths, answers)

        backend = "PostgreSQL" if args.postgres else "SQLite (WAL)"
        backend += ", counters in " + ("Redis" if args.redis else "the database")
        print(f"nabla serve on {HOST}:{port}: {args.workers} workers x {args.threads} threads, "
              f"{backend}; {args.clients} clients, keep-alive, "
              f"{f'{args.gap_ms:g} ms apart' if args.gap_ms else 'back to back'}; "
              f"{os.cpu_count()} CPUs, {platform.platform()}, "
              f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; "
              f"load average {os.getloadavg()[0]:.2f}")
        failed = False
        table: list[tuple[str, list[float], float, bool]] = []
        for kind, path in paths.items():
            if first_tokens:
                latencies, errors = first_grades(port, first_tokens, path, answers[kind])
                print(f"{kind:<9} first grade of an instance, n={len(latencies):3d}  "
                      f"p50 {statistics.median(latencies):6.2f} ms  "
                      f"p99 {pct(latencies, 0.99):6.2f} ms")
                if errors:
                    failed = True
                    print(f"  {len(errors)} errors, e.g. {errors[0]}")
            cpu_before = process_cpu(process.pid) if args.cpu else {}
            cpu_line = ""
            own_before = time.process_time()
            latencies, wall, errors = run_phase(port, api_tokens, path, answers[kind],
                                                args.requests, args.seconds, args.gap_ms / 1e3)
            if args.cpu:
                used = {k: v - cpu_before[k] for k, v in process_cpu(process.pid).items()}
                used["bench clients"] = time.process_time() - own_before
                n = len(latencies)
                cpu_line = (f"{kind:<9} CPU per submission: " + ", ".join(
                    f"{k} {v / n * 1e3:.2f} ms" for k, v in used.items())
                    + f"; {sum(used.values()) / wall:.2f} CPUs busy on average")
            good, bad = GOALS[kind]
            p50, p99 = statistics.median(latencies), pct(latencies, 0.99)
            print(f"{kind:<9} POST n={len(latencies):5d}  p50 {p50:6.2f} ms  "
                  f"p90 {pct(latencies, 0.9):6.2f} ms  p99 {p99:6.2f} ms  "
                  f"max {max(latencies):7.2f} ms  {len(latencies) / wall:7.1f} submissions/s"
                  f"   (goal p50 <= {good:g}, p99 <= {bad:g} ms)")
            if cpu_line:
                print(cpu_line)
            table.append((kind, latencies, wall, not errors))
            if errors:
                failed = True
                print(f"  {len(errors)} errors, e.g. {errors[0]}")
        print(f"load average {os.getloadavg()[0]:.2f} (other work on the machine shifts "
              "the figures)")
        if args.json:
            write_rows(args, backend, table)
        if failed:
            keep_folder = True
            print(f"server log: {folder / 'server.log'}")
            sys.exit(1)
    finally:
        if process is not None:
            stop_server(process)
        if args.postgres:
            scratch_db.drop_postgres_database(args.postgres, url)
        if not keep_folder:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
