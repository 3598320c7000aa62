"""The spec attacks of issue 22 §1, through the real server (``nabla serve``, gunicorn).

A careless or hostile TA saves and previews the specs that once kept a web worker busy
for minutes and gigabytes (tests/spec_attacks.py), all at once; each answers within its
limit with a message naming what was too costly, ``GET /login`` keeps answering within a
second meanwhile, and the web workers' memory stays where it was. A second server with
short limits shows the judge stopping honest but costly work: four TAs saving the
costliest spec the budget allows, and a student's first draw of it.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.engine.test_budget import LOOP_AT_THE_LIMITS
from tests.spec_attacks import ATTACKS

from .live import HOST, LiveServer

COURSE = "SPEC101"
LOGIN_WITHIN_S = 1.0
SPEC_TIMEOUT_S = 10.0  # the default NABLA_SPEC_TIMEOUT_S


def _prepare(url: str) -> dict:
    """A course with a TA (an API token), a student with an assignment whose problem is
    the costliest spec the budget allows (its version stored as it is, as one saved
    before the limits would be), and the student's token."""
    from server import db
    from server.models import Problem, ProblemVersion, utcnow
    from server.services import accounts, assignments, bank, courses, tokens

    db.upgrade(url)
    engine = db.make_engine(url)
    try:
        session = db.make_sessionmaker(engine)()
        with session.begin():
            course = courses.create_course(session, COURSE, "Spec attacks")
            ta = accounts.create_user(session, "ta@example.edu", "A TA", None)
            student = accounts.create_user(session, "s@example.edu", "A student", None)
            courses.enroll(session, course, ta, "ta")
            courses.enroll(session, course, student, "student")
            key = bank.problem_key("worst-loop", course)
            session.add(Problem(id=key, spec_id="worst-loop", title="Worst",
                                answer_type="equations", course_id=course.id))
            session.flush()
            session.add(ProblemVersion(problem_id=key, version=1, spec_text=LOOP_AT_THE_LIMITS,
                                       spec_hash=bank.text_hash(LOOP_AT_THE_LIMITS),
                                       origin="api"))
            session.flush()
            now = utcnow()
            import datetime as dt

            hw = assignments.create_assignment(session, course, assignments.AssignmentDraft(
                title="Costly", open_at=now - dt.timedelta(days=1),
                due_at=now + dt.timedelta(days=7), problems=[
                    assignments.ProblemChoice(key, 1.0)]), bank.DatabaseBank(session, course))
            ids = {"ta": tokens.create_token(session, ta, "attacks")[1],
                   "student": tokens.create_token(session, student, "attacks")[1],
                   "assignment": hw.id, "problem": key}
        session.close()
    finally:
        engine.dispose()
    return ids


class Server:
    """``nabla serve`` (2 workers x 2 threads) on a database of its own: SQLite in
    ``folder``, or a scratch database on the PostgreSQL server ``postgres``."""

    def __init__(self, folder: Path, postgres: str | None = None,
                 env: dict[str, str] | None = None, workers: int = 2) -> None:
        from tests.scratch_db import create_postgres_database

        self.postgres, self.workers = postgres, workers
        self.url = (f"sqlite:///{folder}/nabla.sqlite3" if postgres is None
                    else create_postgres_database(postgres))
        self.ids = _prepare(self.url)
        self.live = LiveServer({"NABLA_DATABASE_URL": self.url, "NABLA_INSTANCE_PATH": str(folder),
                                "NABLA_SUBMIT_RATE": "off", **(env or {})},
                               workers=workers, threads=2)
        assert self.live.wait_until_up(60) == 200, self.live.output()
        self.warm_up()

    def warm_up(self, timeout: float = 60) -> None:
        """Until every web worker's judge has started (its zygote imported numpy, sympy
        and the engine, and forked its grading processes): the attacks are measured on
        a running server, not on one still starting."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            zygotes = self.processes()["judges"]
            if len(zygotes) >= self.workers and all(len(_children(z)) >= 2 for z in zygotes):
                return
            time.sleep(0.2)
        raise AssertionError(f"the judges did not start: {self.processes()}")

    def until_not_busy(self, method: str, path: str, body: dict | None = None,
                       ) -> tuple[int, dict, float, int]:
        """``request``, again after each 503 "busy" (a worker checks one spec at a time
        and refuses a second at once): the last answer, the time of each try at most,
        and the number of busy answers."""
        busy, slowest = 0, 0.0
        while True:
            status, body_, took, headers = self.request(method, path, body, with_headers=True)
            slowest = max(slowest, took)
            if status != 503 or "checking another spec" not in body_.get("error", ""):
                return status, body_, slowest, busy
            assert headers.get("Retry-After") and took < LOGIN_WITHIN_S, (took, headers)
            busy += 1
            time.sleep(0.05)

    def request(self, method: str, path: str, body: dict | None = None, who: str = "ta",
                timeout: float = 60, with_headers: bool = False) -> tuple:
        connection = http.client.HTTPConnection(HOST, self.live.port, timeout=timeout)
        start = time.monotonic()
        try:
            connection.request(method, path, body=None if body is None else json.dumps(body),
                               headers={"Authorization": f"Bearer {self.ids[who]}",
                                        "Content-Type": "application/json"})
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        answer = (response.status, json.loads(data or b"{}"), time.monotonic() - start)
        return (*answer, response.headers) if with_headers else answer

    def processes(self) -> dict[str, list[int]]:
        """The pids of the server's own processes (gunicorn's master and web workers: its
        process group) and of the judges beside them (zygotes and judge processes)."""
        group = os.getpgid(self.live.process.pid)
        web, judges = [], []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                pgid = os.getpgid(int(entry.name))
                cmdline = (entry / "cmdline").read_bytes()
            except (OSError, ProcessLookupError):
                continue
            if pgid == group:
                web.append(int(entry.name))
            elif b"server.judge.zygote" in cmdline and _descends_from(int(entry.name), group):
                judges.append(int(entry.name))
        return {"web": web, "judges": judges}

    def stop(self) -> None:
        self.live.stop()
        if self.postgres is not None:
            from tests.scratch_db import drop_postgres_database

            drop_postgres_database(self.postgres, self.url)


def _descends_from(pid: int, group: int) -> bool:
    """Whether ``pid`` (a zygote: its own session) was started by a process of ``group``."""
    try:
        parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        return os.getpgid(parent) == group
    except (OSError, ProcessLookupError, ValueError):
        return False


def _pss_mb(pid: int) -> float:
    """Proportional set size: pages shared copy-on-write with the zygote counted once."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Watch:
    """While the attacks run: ``GET /login`` every 50 ms (the slowest answer), and the
    resident memory of every process of the server, web workers and judges apart."""

    def __init__(self, server: Server) -> None:
        self.server, self.stop_event = server, threading.Event()
        self.login_s: list[float] = []
        self.peak_web_mb: dict[int, float] = {}
        self.peak_judges_mb = 0.0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop_event.is_set():
            start = time.monotonic()
            connection = http.client.HTTPConnection(HOST, self.server.live.port, timeout=10)
            try:
                connection.request("GET", "/login")
                assert connection.getresponse().status == 200
            finally:
                connection.close()
            self.login_s.append(time.monotonic() - start)
            processes = self.server.processes()
            for pid in processes["web"]:
                self.peak_web_mb[pid] = max(self.peak_web_mb.get(pid, 0.0), _rss_mb(pid))
            judges = [p for z in processes["judges"] for p in [z, *_children(z)]]
            self.peak_judges_mb = max(self.peak_judges_mb, sum(_pss_mb(p) for p in judges))
            self.stop_event.wait(0.05)

    def __enter__(self) -> Watch:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        self.thread.join(15)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, tmp_path_factory):
    postgres = request.getfixturevalue("postgres_server_url") if request.param != "sqlite" \
        else None
    s = Server(tmp_path_factory.mktemp("spec-attacks"), postgres)
    yield s
    s.stop()


def _put(server: Server, name: str, text: str):
    spec_id = "attack-" + "-".join(name.split())
    return server.until_not_busy("PUT", f"/api/v1/courses/{COURSE}/problems/{spec_id}",
                                 {"spec": text})


def _preview(server: Server, text: str):
    return server.until_not_busy("POST", f"/api/v1/courses/{COURSE}/problems/any/preview",
                                 {"spec": text, "seed": 1})


def _attack(server: Server, call: tuple[str, str]):
    kind, name = call
    text = ATTACKS[name][0]
    return call, (_put(server, name, text) if kind == "put" else _preview(server, text))


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_each_attack_saved_and_previewed_is_refused_with_its_limit(server, name):
    text, words = ATTACKS[name]
    for kind, (status, body, took, _) in (("put", _put(server, name, text)),
                                          ("preview", _preview(server, text))):
        assert status == 422 and all(w in body["error"] for w in words), (kind, body)
        assert took < SPEC_TIMEOUT_S + 5, (kind, took)  # minutes, or never, before


def test_every_attack_saved_and_previewed_at_once_answers_a_message_while_login_answers(server):
    """As the report ran them: 12 previews of the nested exp at once (they kept all 4
    workers busy until a restart), 4 TAs saving the long loop in parallel (~290 s each),
    and every other attack saved and previewed, twice, by 8 clients at once."""
    before = {pid: _rss_mb(pid) for pid in server.processes()["web"]}
    calls = ([(kind, name) for name in ATTACKS for kind in ("put", "preview")] * 2
             + [("preview", "nested exp")] * 12 + [("put", "long loop")] * 4)
    with Watch(server) as watch, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda call: _attack(server, call), calls))
        time.sleep(0.5)  # one more look at the workers after the last answer
    for (kind, name), (status, body, took, _) in answers:
        words = ATTACKS[name][1]
        assert status == 422, (kind, name, status, body)
        assert all(w in body["error"] for w in words), (kind, name, body["error"])
        assert body["errors"] and took < SPEC_TIMEOUT_S + 5, (kind, name, took)
    assert max(watch.login_s) < LOGIN_WITHIN_S, sorted(watch.login_s)[-5:]
    grown = {pid: watch.peak_web_mb[pid] - before.get(pid, 0.0) for pid in watch.peak_web_mb
             if pid in before}
    print(f"\nweb workers' peak RSS: {sorted(round(v) for v in watch.peak_web_mb.values())} MB "
          f"(growth {sorted(round(v) for v in grown.values())} MB); judges' peak "
          f"{watch.peak_judges_mb:.0f} MB (PSS, zygotes and judge processes); slowest "
          f"/login {max(watch.login_s) * 1e3:.0f} ms "
          f"over {len(watch.login_s)} requests; {sum(a[1][3] for a in answers)} busy answers "
          f"for {len(answers)} attacks")
    assert all(v < 100 for v in grown.values()), grown  # 3.3 GB in one worker before
    assert all(v < 400 for v in watch.peak_web_mb.values()), watch.peak_web_mb


def test_a_good_spec_saves_previews_and_saving_it_again_checks_nothing(server):
    from server.services.bank import EXAMPLE_SPEC

    text = EXAMPLE_SPEC.replace('"my-problem"', '"tiny-live"')
    spec_id = "tiny-live"
    status, body, first = server.request(
        "PUT", f"/api/v1/courses/{COURSE}/problems/{spec_id}", {"spec": text})
    assert (status, body["version"]) == (201, 1), body
    status, body, again = server.request(
        "PUT", f"/api/v1/courses/{COURSE}/problems/{spec_id}", {"spec": text})
    assert (status, body["version"]) == (200, 1), body
    status, body, _, _ = _preview(server, text)
    assert status == 200 and "reference" in body["instance"] and body["solution"]


def test_a_toml_nested_too_deeply_is_a_422_naming_its_line(server):
    from tests.spec_attacks import DEEP_ARRAYS

    status, body, _, _ = _put(server, "deep", DEEP_ARRAYS)
    assert status == 422 and body["errors"][0]["line"] == 2
    assert "nest more than 16 levels" in body["error"]


@pytest.fixture
def hurried(request, tmp_path_factory):
    """A server (one worker) whose limits are short enough for honest work to hit them."""
    s = Server(tmp_path_factory.mktemp("spec-hurried"), env=request.param, workers=1)
    yield s
    s.stop()


@pytest.mark.parametrize("hurried", [{"NABLA_SPEC_TIMEOUT_S": "0.5",
                                      "NABLA_DRAW_TIMEOUT_S": "60"}], indirect=True)
def test_four_tas_saving_a_costly_spec_at_once_are_stopped_at_the_limit_with_the_stage(hurried):
    text = LOOP_AT_THE_LIMITS.replace('"worst-loop"', '"costly"')
    with Watch(hurried) as watch, ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: hurried.until_not_busy(
            "PUT", f"/api/v1/courses/{COURSE}/problems/costly", {"spec": text}), range(4)))
    for status, body, took, _ in answers:
        assert status == 422, body
        assert "drawing and verifying this spec took more than 0.5 s and was stopped:" \
            in body["error"], body["error"]
        assert took < 10, took  # ~290 s each before, with both cores saturated
    assert max(watch.login_s) < LOGIN_WITHIN_S, sorted(watch.login_s)[-5:]


@pytest.mark.parametrize("hurried", [{"NABLA_DRAW_TIMEOUT_S": "0.2"}], indirect=True)
def test_a_students_first_draw_past_its_limit_is_a_503_and_nothing_is_stored(hurried):
    path = f"/api/v1/assignments/{hurried.ids['assignment']}/problems/{hurried.ids['problem']}"
    with Watch(hurried) as watch:
        status, body, took, headers = hurried.request("GET", path, who="student",
                                                      with_headers=True)
    assert status == 503 and "cannot be drawn right now (it took too long)" in body["error"]
    assert headers["Retry-After"] and took < 5 and max(watch.login_s) < LOGIN_WITHIN_S
    assert "failed in the judge (timeout" in hurried.live.output()  # the details, for staff
    from sqlalchemy import create_engine, func, select

    from server.models import Instance

    engine = create_engine(hurried.url)
    with engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(Instance)) == 0
    engine.dispose()
