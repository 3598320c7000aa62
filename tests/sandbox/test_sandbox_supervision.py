"""Concurrency, worker death and restart, layer reporting, refusal without isolation."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import CORRECT, assert_no_stray_processes, call_args, expected, own_processes

from server.sandbox import Sandbox, SandboxUnavailable, run_job, sandbox_status
from server.sandbox.client import REQUIRED_LAYERS


def test_status_reports_every_layer(sandbox):
    status = sandbox_status()
    assert status["available"] and status["missing"] == []
    for layer in REQUIRED_LAYERS:
        assert isinstance(status["layers"][layer], str) and status["layers"][layer]
    assert "namespace" in status["layers"]["network"]
    assert "uid" in status["layers"]["uid"]
    assert status["worker_pid"] == sandbox.worker_pid()


def test_concurrent_callers_get_their_own_results(sandbox):
    errors: list[str] = []

    def caller(tid: int) -> None:
        for j in range(6):
            call = call_args(seed=100 * tid + j, n=2 + tid % 3)
            r = run_job(CORRECT, [call])
            if r.status != "ok" or r.calls[0].status != "ok":
                errors.append(f"{tid}/{j}: {r}")
                continue
            for k, v in expected(call).items():
                if not np.allclose(r.calls[0].outputs[k], v):
                    errors.append(f"{tid}/{j}: wrong {k}")

    threads = [threading.Thread(target=caller, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert_no_stray_processes(sandbox)


def test_concurrent_hostile_and_normal_jobs(sandbox):
    results: dict[str, object] = {}

    def go(name: str, src: str, tl: float) -> None:
        results[name] = run_job(src, [call_args()], time_limit_s=tl)

    spin = "def backward(**kw):\n    while True:\n        pass\n"
    jobs = [("spin", spin, 0.5), ("ok1", CORRECT, 2), ("ok2", CORRECT, 2),
            ("kill", "import os\ndef backward(**kw):\n    os.kill(-1, 9)\n    return {}\n", 2)]
    threads = [threading.Thread(target=go, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results["spin"].status == "time_limit"
    assert results["ok1"].status == "ok" and results["ok2"].status == "ok"
    assert results["kill"].calls[0].status == "runtime_error"


def test_worker_death_during_a_job_gives_error_then_restarts():
    sb = Sandbox(pool_size=2)
    try:
        assert sb.run_job(CORRECT, [call_args()]).status == "ok"
        old, old_uids = sb.worker_pid(), sb.uid_range()
        out: dict[str, object] = {}
        sleeper = "import time\ndef backward(**kw):\n    time.sleep(30)\n"
        t = threading.Thread(
            target=lambda: out.update(r=sb.run_job(sleeper, [call_args()], time_limit_s=20)))
        t.start()
        time.sleep(0.3)
        started = time.monotonic()
        os.kill(old, signal.SIGKILL)
        t.join(10)
        assert not t.is_alive(), "the caller hung after the worker died"
        assert time.monotonic() - started < 5
        assert out["r"].status == "error"
        assert "worker" in out["r"].message
        # the next job starts a new worker and succeeds
        r = sb.run_job(CORRECT, [call_args()])
        assert r.status == "ok", r
        assert sb.worker_pid() not in (None, old)
        assert sb.restarts >= 1
        # the dead worker's children died with it (parent-death signal)
        time.sleep(0.2)
        orphans = own_processes(sb, old_uids)
        assert not orphans, orphans
    finally:
        sb.close()


def test_worker_death_while_idle_is_invisible_to_the_next_job():
    sb = Sandbox(pool_size=1)
    try:
        assert sb.run_job(CORRECT, [call_args()]).status == "ok"
        old = sb.worker_pid()
        os.kill(old, signal.SIGKILL)
        time.sleep(0.1)
        r = sb.run_job(CORRECT, [call_args()])
        assert r.status == "ok", r
        assert sb.worker_pid() != old
    finally:
        sb.close()


def test_worker_stops_when_its_server_process_closes_it():
    sb = Sandbox(pool_size=1)
    assert sb.run_job(CORRECT, [call_args()]).status == "ok"
    pid = sb.worker_pid()
    sb.close()
    with pytest.raises(ProcessLookupError):
        for _ in range(50):
            os.kill(pid, 0)
            time.sleep(0.05)


def test_a_forked_server_process_starts_its_own_worker(sandbox):
    """gunicorn forks workers: a child process must not share the parent's worker."""
    parent_worker = sandbox.worker_pid()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child process
        code = 1
        try:
            r = run_job(CORRECT, [call_args()])
            from server.sandbox import get_sandbox

            mine = get_sandbox().worker_pid()
            os.write(write, f"{r.status} {mine}".encode())
            get_sandbox().close()
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    answer = os.read(read, 100).decode().split()
    os.close(read)
    assert os.WEXITSTATUS(status) == 0
    assert answer[0] == "ok"
    assert int(answer[1]) != parent_worker
    assert sandbox.worker_pid() == parent_worker
    assert run_job(CORRECT, [call_args()]).status == "ok"


@pytest.mark.parametrize("missing", ["chroot", "seccomp"])
def test_untrusted_code_is_refused_when_a_layer_is_missing(missing):
    sb = Sandbox(pool_size=1, insecure=False, worker_args=["--simulate-missing", missing])
    try:
        with pytest.raises(SandboxUnavailable, match=missing):
            sb.run_job(CORRECT, [call_args()])
        status = sb.status()
        assert status["available"] is False
        assert missing in status["message"]
    finally:
        sb.close()


def test_insecure_development_flag_runs_and_says_so():
    sb = Sandbox(pool_size=1, insecure=True, worker_args=["--simulate-missing", "seccomp"])
    try:
        status = sb.status()
        assert status["available"] is False
        assert status["missing"] == ["seccomp"]
        assert "INSECURE" in status["message"]
        assert sb.run_job(CORRECT, [call_args()]).status == "ok"
    finally:
        sb.close()


def test_unprivileged_user_namespace_fallback():
    """As a non-root server would: user + network namespaces, chroot, no capabilities."""
    sb = Sandbox(pool_size=1, worker_args=["--simulate-missing", "root"])
    try:
        status = sb.status()
        assert status["available"], status
        assert "user namespace" in status["layers"]["uid"]
        src = ("import os\ndef backward(x, W, dy):\n"
               "    for f in (lambda: os.chroot('..'), lambda: open('/etc/passwd'),\n"
               "              lambda: __import__('socket').socket()):\n"
               "        try:\n            f()\n            print('GOT')\n"
               "        except OSError as e:\n            print('DENIED', e.errno)\n"
               "    return {'x': x}\n")
        r = sb.run_job(src, [call_args()])
        assert r.status == "ok" and "GOT" not in r.stdout and r.stdout.count("DENIED") == 3
    finally:
        sb.close()
    sb = Sandbox(pool_size=1, worker_args=["--simulate-missing", "root,userns"])
    try:
        with pytest.raises(SandboxUnavailable, match="chroot"):
            sb.run_job(CORRECT, [call_args()])
    finally:
        sb.close()


def test_cli_sandbox_check(sandbox):
    import json

    from click.testing import CliRunner

    from server.cli import main

    res = CliRunner().invoke(main, ["sandbox", "check", "--jobs", "3"])
    assert res.exit_code == 0, res.output
    assert "all layers active" in res.output
    assert "[ok     ] seccomp" in res.output and "MISSING" not in res.output
    assert "median" in res.output and "failures: 0" in res.output
    res = CliRunner().invoke(main, ["sandbox", "check", "--jobs", "2", "--json"])
    data = json.loads(res.output)
    assert data["status"]["available"] and data["overhead"]["jobs"] == 2


def test_without_a_network_namespace_seccomp_still_blocks_sockets():
    sb = Sandbox(pool_size=1, worker_args=["--simulate-missing", "netns"])
    try:
        status = sb.status()
        assert status["available"], status
        assert status["layers"]["network"] == "seccomp denies socket()"
        src = ("def backward(**kw):\n    import socket\n    try:\n        socket.socket()\n"
               "        print('GOT')\n    except OSError as e:\n        print('DENIED', e.errno)\n"
               "    return {}\n")
        r = sb.run_job(src, [{}])
        assert r.stdout.startswith("DENIED"), r
    finally:
        sb.close()


def _nice(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[16])
    except (OSError, ValueError, IndexError):
        return None


@pytest.mark.skipif(os.geteuid() != 0, reason="lowering a niceness again needs root")
def test_refills_prepare_in_the_background_and_jobs_run_at_full_priority():
    """With a grade's worth of children ready, new ones prepare at BACKGROUND_NICE
    (idle CPU only); a leased child runs its job at the server's niceness."""
    from server.sandbox.pool import BACKGROUND_NICE

    sb = Sandbox(pool_size=6)

    def full_pool() -> list[int]:
        worker = sb.worker_pid()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pool = [pid for pid, ppid, _ in own_processes(sb) if ppid == worker]
            if len(pool) >= 6:
                break
            time.sleep(0.05)
        return pool

    def cpu_and_state(pid: int) -> tuple[str, int] | None:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return fields[0], int(fields[11]) + int(fields[12])  # state, utime + stime

    def ready_pool() -> set[int]:
        """The full pool once every child has finished preparing (asleep, its CPU time
        still): under load a child counted by full_pool may still be setting up, and
        then fewer than a grade's worth are ready, when refills rightly go at full speed."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            pool = full_pool()
            first = {pid: cpu_and_state(pid) for pid in pool}
            time.sleep(0.3)
            second = {pid: cpu_and_state(pid) for pid in pool}
            if all(first[p] is not None and first[p] == second[p] and first[p][0] == "S"
                   for p in pool):
                return set(pool)
        raise AssertionError("the pool did not settle")

    try:
        sb.run_job(CORRECT, [call_args()])
        before = ready_pool()
        threads = [threading.Thread(target=sb.run_job, args=(CORRECT, [call_args()]))
                   for _ in range(3)]  # one grade: three children at once
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        refilled = [pid for pid in full_pool() if pid not in before]
        assert refilled and all(_nice(pid) == BACKGROUND_NICE for pid in refilled), (
            [(pid, _nice(pid)) for pid in refilled])
        report = ("import os\ndef backward(x, W, dy):\n"
                  "    print(os.getpriority(os.PRIO_PROCESS, 0))\n    return {}\n")
        for _ in range(8):  # every child of the pool, background ones included
            r = sb.run_job(report, [call_args()])
            assert r.status == "ok" and r.stdout == f"{os.getpriority(os.PRIO_PROCESS, 0)}\n", r
    finally:
        sb.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="lowering a niceness again needs root")
def test_a_refill_is_lowered_by_the_worker_so_an_early_raise_sticks(monkeypatch):
    """A background refill is at BACKGROUND_NICE as soon as spawn() returns, set by the
    worker, not by the child: a raise (prioritize) that comes before the child has run
    anything is final. (A CI run under load once ran a job at 19: the child lowered
    itself after the worker had already raised it.)"""
    from server.sandbox import pool

    go_r, go_w = os.pipe()
    said_r, said_w = os.pipe()

    def slow_child(cfg, filt, job_fd, devnull):  # the child: not started yet until `go`
        os.read(go_r, 1)
        os.write(said_w, str(os.getpriority(os.PRIO_PROCESS, 0)).encode())
        os._exit(0)

    monkeypatch.setattr(pool, "child_main", slow_child)
    ctrl, _other = socket.socketpair()
    worker = pool.Worker(ctrl.detach(), {"pool_size": 6, "uid_base": 60000, "uid_count": 4})
    worker.can_boost = True
    worker.ready = [object()] * pool.URGENT_READY  # a grade's worth ready: refills wait
    worker.spawn()
    (child,) = worker.children.values()
    try:
        assert child.background and _nice(child.pid) == pool.BACKGROUND_NICE
        worker.boost(child)  # someone needs it before it ever ran
        os.write(go_w, b"x")
        assert os.read(said_r, 16).decode() == str(worker.nice)
        assert _nice(child.pid) in (worker.nice, None)  # None: it has exited
    finally:
        worker.kill(child)
        os.waitpid(child.pid, 0)
        for fd in (go_r, go_w, said_r, said_w, child.pidfd):
            os.close(fd)
        child.sock.close()
        _other.close()
        worker.ctrl.close()
        worker.sel.close()
        os.close(worker.devnull)
