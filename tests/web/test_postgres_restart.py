"""PostgreSQL restarted during traffic (issue 14 §3): a scratch cluster of this test's
own (initdb and pg_ctl in a temporary folder, on another port; never the machine's
server). Requests succeed or fail with 503 and a retry message, never 500; the
pool reconnects without a restart of ours; nothing is half-written: what was
acknowledged is stored, and what a failure left pending is finished by recovery."""

from __future__ import annotations

import collections
import datetime as dt
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from .live import Browser, LiveServer, free_port
from .test_burst import load_burst

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _as_postgres(argv: list[str]) -> list[str]:
    """initdb and pg_ctl refuse to run as root."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


class ScratchCluster:
    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.data = folder / "data"
        folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(folder, "postgres", "postgres")
        self.run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                 "--no-sync", "-E", "UTF8")
        self.pg_ctl("start")

    def run(self, tool: str, *args: str) -> None:
        binary = PG_BIN / tool if (PG_BIN / tool).exists() else Path(shutil.which(tool) or tool)
        done = subprocess.run(_as_postgres([str(binary), *args]), capture_output=True,
                              timeout=120, text=True)
        assert done.returncode == 0, f"{tool} failed: {done.stdout}{done.stderr}"

    def pg_ctl(self, action: str, *extra: str) -> None:
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c max_connections=60")
        self.run("pg_ctl", action, "-D", str(self.data), "-w", "-t", "60", "-o", options,
                 "-l", str(self.folder / "log"), *extra)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        try:
            self.pg_ctl("stop", "-m", "immediate")
        except AssertionError:
            pass


@pytest.fixture
def cluster():
    if not (PG_BIN / "initdb").exists() and shutil.which("initdb") is None:
        pytest.fail("initdb not found: install postgresql (the test starts its own cluster)")
    # Not under pytest's tmp_path: the postgres user must be able to reach it.
    folder = Path(tempfile.mkdtemp(prefix="nabla-pg-"))
    try:
        scratch = ScratchCluster(folder)
        try:
            yield scratch
        finally:
            scratch.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_postgres_restart_during_traffic_gives_503_or_success_never_500(cluster, tmp_path):
    from server import db
    from tests import scratch_db

    burst = load_burst()
    url = scratch_db.create_postgres_database(cluster.url, "nabla_restart")
    assignment_id, api_tokens = burst.prepare(url, 8)
    answer = burst.model_answers()["equations"]
    path = f"/api/v1/assignments/{assignment_id}/problems/mlp-relu/submissions"
    server = LiveServer({"NABLA_DATABASE_URL": url, "NABLA_INSTANCE_PATH": str(tmp_path),
                         "NABLA_SECRET_KEY": "restart-secret-" + "x" * 32,
                         "NABLA_REDIS_URL": "", "NABLA_SUBMIT_RATE": "off",
                         "NABLA_RECOVER_EVERY_S": "0"}, workers=2, threads=2)
    sent: list = []
    stop = threading.Event()
    phase = ["before"]

    def drive(number: int, token: str) -> None:
        count = 0
        while not stop.is_set():
            count += 1
            key = f"student-{number}-send-{count:05d}"
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}",
                       "Idempotency-Key": key}
            try:
                status, _, text = Browser(server.port).request(
                    "POST", path, json.dumps({"answer": answer}), headers)
                body = json.loads(text)
            except (OSError, ValueError) as exc:
                status, body = 0, {"error": repr(exc)}
            summary = body.get("submission", body)
            sent.append(burst.Sent(number, "equations", phase[0], key, status, 0.0,
                                   summary.get("id"), summary.get("status"),
                                   str(body.get("error", ""))))
            time.sleep(0.05)

    try:
        assert server.wait_until_up() == 200, server.output()
        threads = [threading.Thread(target=drive, args=(n, t)) for n, t in enumerate(api_tokens)]
        for thread in threads:
            thread.start()
        time.sleep(2)
        phase[0] = "restart"
        cluster.pg_ctl("restart", "-m", "fast")
        phase[0] = "after"
        time.sleep(4)
        stop.set()
        for thread in threads:
            thread.join(60)
        output = server.output()
    finally:
        stop.set()
        server.stop()
    statuses = collections.Counter((s.label, s.status) for s in sent)
    assert not [s for s in sent if s.status not in (201, 409, 503)], (statuses, output)
    for s in sent:
        if s.status == 503:
            assert "try again" in s.message.lower(), s.message
    # The pool reconnected: requests after the restart were answered from the database.
    assert any(s.label == "after" and s.status in (201, 409) for s in sent), statuses
    # A request that failed after storing its answer left it pending: recovery finishes it.
    engine = db.make_engine(url)
    try:
        from server.services.recovery import recover_pending

        session = db.make_sessionmaker(engine)()
        recover_pending(session, now=lambda: dt.datetime.now(dt.UTC), commit=session.commit,
                        older_than=dt.timedelta(0))
        session.close()
    finally:
        engine.dispose()
    counts, problems = burst.check_database(url, assignment_id, sent)
    unacknowledged = [p for p in problems if "never acknowledged" in p]
    assert [p for p in problems if p not in unacknowledged] == []
    assert len(unacknowledged) <= sum(1 for s in sent if s.status == 503)
    assert counts.get("pending", 0) == 0
    scratch_db.drop_postgres_database(cluster.url, url)
