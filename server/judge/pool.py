"""Server side of the judge: a zygote per app process and a pool of judge processes.

``Judge.call(message)`` hands a message to an idle judge process and waits for
its answer until a wall-clock deadline; a judge process that misses it is
killed (through its pidfd: no pid can be reused under us) and another one is
forked from the zygote in its place, so the thread that asked, and every other
thread, carry on. Thread-safe. See docs/judge.md.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from server.judge import wire
from server.judge.zygote import BOOTSTRAP, MAX_CONTROL_BYTES

log = logging.getLogger(__name__)

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TASKS = "server.judge.tasks"
START_TIMEOUT_S = 60.0  # the zygote imports numpy, sympy and the engine (1-2 s)
SPAWN_TIMEOUT_S = 10.0


class JudgeError(Exception):
    """A message was not answered. ``kind``: ``timeout`` (the deadline passed; the
    judge process was killed), ``memory`` (it ran out of its memory limit),
    ``crashed`` (it died), ``busy`` (no judge process became free in time),
    ``unavailable`` (none could be started), ``error`` (the task raised). ``stage``:
    the last progress the judge process reported (server.engine.progress)."""

    def __init__(self, kind: str, message: str, stage: str | None = None):
        self.kind = kind
        self.stage = stage  # what the judge process said it was doing last, if anything
        super().__init__(message)


def clean_environment() -> dict[str, str]:
    """The zygote's whole environment: nothing from the server's (no secrets) but
    OpenBLAS's tuning (``OPENBLAS_CORETYPE``, ...: the same kernels as the server's, so
    that an instance drawn here has the same bits as one drawn there)."""
    env = {name: value for name, value in os.environ.items()
           if name.startswith("OPENBLAS_") and name.isupper()}
    env.update({"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"})
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = "1"  # small arrays; and no thread pools in processes that fork
    return env


@dataclass
class _Process:
    pid: int
    sock: socket.socket
    pidfd: int

    def idle_and_alive(self) -> bool:
        """An idle judge process never writes: a readable socket means it has exited
        (e.g. with the zygote)."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        return not poller.poll(0)

    def kill(self) -> None:
        try:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        except (ProcessLookupError, OSError):
            pass  # it already exited

    def close(self) -> None:
        self.sock.close()
        try:
            os.close(self.pidfd)
        except OSError:
            pass


class Zygote:
    """The process that imported the tasks module once and forks judge processes for
    every pool of this app process (grading and spec work share it)."""

    def __init__(self, tasks: str = TASKS) -> None:
        self.tasks = tasks
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._starting: subprocess.Popen | None = None
        self._control: socket.socket | None = None
        self.closed = False
        self.starts = 0

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            command = [sys.executable, "-I", "-B", "-c", BOOTSTRAP, _ROOT,
                       str(theirs.fileno()), self.tasks]
            process = subprocess.Popen(
                command, pass_fds=(theirs.fileno(),), env=clean_environment(), cwd="/",
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            ours.close()
            raise JudgeError("unavailable", f"cannot start the judge: {exc}") from None
        finally:
            theirs.close()
        self._starting = process  # close() kills it if the server stops meanwhile
        ours.settimeout(START_TIMEOUT_S)
        try:
            hello = json.loads(ours.recv(MAX_CONTROL_BYTES) or b"{}")
        except (OSError, ValueError) as exc:
            hello = {"error": str(exc)}
        self._starting = None
        if not hello.get("ready") or self.closed:
            ours.close()
            process.kill()
            process.wait()
            raise JudgeError("unavailable", "the judge did not start: "
                             f"{hello.get('error') or 'it exited'}")
        ours.settimeout(SPAWN_TIMEOUT_S)
        self._process, self._control = process, ours
        self.starts += 1

    def _stop(self) -> None:
        process, control = self._process, self._control
        self._process = self._control = None
        if control is not None:
            control.close()  # the zygote exits on end of file; its judges die with it
        if process is not None:
            try:
                process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def spawn(self, memory_mb: int, nice: int = 0) -> _Process:
        """A new judge process (the zygote is started, or started again, as needed)."""
        with self._lock:
            for attempt in range(2):
                if self.closed:
                    raise JudgeError("unavailable", "the judge is closed")
                if self._process is None or self._process.poll() is not None:
                    self._stop()
                    self._start()
                assert self._control is not None
                try:
                    self._control.send(json.dumps({"memory_mb": memory_mb,
                                                   "nice": nice}).encode())
                    data, fds, _, _ = socket.recv_fds(self._control, MAX_CONTROL_BYTES, 2)
                except OSError as exc:
                    data, fds = b"", []
                    log.warning("judge zygote did not answer (%s); restarting it", exc)
                reply = json.loads(data) if data else {}
                if len(fds) == 2 and "pid" in reply:
                    return _Process(int(reply["pid"]), socket.socket(fileno=fds[0]), fds[1])
                for fd in fds:
                    os.close(fd)
                if attempt == 0 and not data:
                    self._stop()  # it died: start it again once
                    continue
                raise JudgeError("unavailable",
                                 f"no judge process: {reply.get('error') or 'zygote gone'}")
        raise AssertionError("unreachable")

    @property
    def pid(self) -> int | None:
        process = self._process
        return None if process is None or process.poll() is not None else process.pid

    def close(self) -> None:
        """Kill the zygote (its judge processes die with it: PR_SET_PDEATHSIG)."""
        self.closed = True
        for process in {self._starting, self._process} - {None}:
            process.kill()
            process.wait()
        if self._control is not None:
            self._control.close()

    def forget(self) -> None:
        """In a forked copy of the server process: drop our copy of the control socket."""
        self._lock = threading.Lock()
        self.closed = True
        if self._control is not None:
            self._control.close()
        self._process = self._control = None


class Judge:
    """A pool of ``size`` judge processes, forked from a zygote (its own, or one shared
    with the other pools of this app process); see ``call``. ``nice``: the
    processes run at that lower priority (staff work). ``wait_s``: how long a call
    that finds every process busy waits for one before it is refused (``busy``); None:
    until its deadline. A short wait keeps the threads of the server waiting on the
    pool few (staff work: the others stay free for students)."""

    def __init__(self, size: int = 2, timeout_s: float = 5.0, memory_mb: int = 512,
                 tasks: str = TASKS, *, zygote: Zygote | None = None, nice: int = 0,
                 wait_s: float | None = None) -> None:
        if size < 1 or not 0 < timeout_s <= 600 or memory_mb < 64 or not 0 <= nice <= 19:
            raise ValueError(f"bad judge settings: size={size}, timeout_s={timeout_s}, "
                             f"memory_mb={memory_mb}, nice={nice}")
        self.size, self.timeout_s, self.memory_mb, self.nice = size, timeout_s, memory_mb, nice
        self.wait_s = wait_s
        self.tasks = tasks if zygote is None else zygote.tasks
        self._owns_zygote = zygote is None
        self.zygote = Zygote(tasks) if zygote is None else zygote
        self._cond = threading.Condition()
        self._idle: list[_Process] = []
        self._live = 0  # idle + busy + being spawned
        self._closed = False
        self.spawned = 0  # judge processes started
        self.killed = 0  # judge processes killed at the deadline

    @property
    def zygote_starts(self) -> int:
        return self.zygote.starts

    def _spawn(self) -> _Process:
        if self._closed:
            raise JudgeError("unavailable", "the judge is closed")
        process = self.zygote.spawn(self.memory_mb, self.nice)
        self.spawned += 1
        return process

    # ---- the pool

    def start(self) -> None:
        """Start the zygote and fill the pool (otherwise done on first use)."""
        processes = []
        with self._cond:
            wanted = self.size - self._live
            self._live += max(0, wanted)
        try:
            for _ in range(max(0, wanted)):
                processes.append(self._spawn())
        finally:
            with self._cond:
                self._live -= max(0, wanted) - len(processes)
                self._idle.extend(processes)
                self._cond.notify_all()

    def _acquire(self, deadline: float) -> _Process:
        with self._cond:
            while True:
                if self._closed:
                    raise JudgeError("unavailable", "the judge is closed")
                while self._idle:
                    process = self._idle.pop()
                    if process.idle_and_alive():
                        return process
                    process.close()
                    self._live -= 1
                if self._live < self.size:
                    self._live += 1
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise JudgeError("busy", "every judge process stayed busy")
                self._cond.wait(remaining)
        try:
            return self._spawn()
        except BaseException:
            with self._cond:
                self._live -= 1
                self._cond.notify()
            raise

    def _release(self, process: _Process) -> None:
        with self._cond:
            if self._closed:
                self._live -= 1
                process.kill()
                process.close()
            else:
                self._idle.append(process)
            self._cond.notify()

    def _discard(self, process: _Process) -> None:
        process.kill()
        process.close()
        with self._cond:
            self._live -= 1
            self._cond.notify()
            if self._closed:
                return
            self._live += 1  # fork its replacement now, not on the next request
        threading.Thread(target=self._replace, name="nabla-judge-spawn", daemon=True).start()

    def _replace(self) -> None:
        try:
            process = self._spawn()
        except JudgeError as exc:
            log.warning("could not replace a judge process: %s", exc)
            with self._cond:
                self._live -= 1
                self._cond.notify()
            return
        self._release(process)

    def call(self, message: dict, *, follow: Callable[[dict], dict | None] | None = None,
             timeout_s: float | None = None) -> dict:
        """Send ``message`` to a judge process and return its answer.

        ``follow(answer)`` may return a next message for the same process (within
        the same deadline), e.g. the texts it asked for; None ends the exchange.
        Raises JudgeError.
        """
        limit = self.timeout_s if timeout_s is None else timeout_s
        process = self._acquire(time.monotonic() + (limit if self.wait_s is None
                                                    else min(limit, self.wait_s)))
        deadline = time.monotonic() + limit  # waiting for a free process is not counted
        stage = None
        try:
            while True:
                wire.send(process.sock, message)
                answer = wire.receive(process.sock, deadline)
                while "progress" in answer and "status" not in answer:
                    stage = str(answer["progress"])  # a stage started; the answer follows
                    answer = wire.receive(process.sock, deadline)
                following = follow(answer) if follow is not None else None
                if following is None:
                    break
                message = following
        except wire.FrameTimeout:
            self.killed += 1
            self._discard(process)
            raise JudgeError("timeout", f"no answer within {limit:g} s", stage) from None
        except wire.FrameError as exc:
            self._discard(process)
            raise JudgeError("crashed", f"the judge process died ({exc})", stage) from None
        except BaseException:
            self._discard(process)
            raise
        if answer.get("recycle"):
            self._discard(process)  # it exits by itself; the pool forks another
        else:
            self._release(process)
        status = answer.get("status")
        if status == "memory":
            limit_mb = message.get("memory_mb") or self.memory_mb
            raise JudgeError("memory", f"the judge process exceeded {limit_mb} MB", stage)
        if status == "error":
            raise JudgeError("error", str(answer.get("message", "")), stage)
        return answer

    def close(self) -> None:
        """Kill every process of this pool (and the zygote, if it is the pool's own:
        busy judges die with it). Does not wait for a zygote being started or a
        judge being forked: it runs at the server's exit."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._live -= len(idle)
            self._cond.notify_all()
        for process in idle:
            process.kill()
            process.close()
        if self._owns_zygote:
            self.zygote.close()

    def forget(self) -> None:
        """In a forked copy of the server process: drop our copies of the parent's
        descriptors without touching its processes."""
        self._cond = threading.Condition()
        for process in self._idle:
            process.close()
        self._idle, self._live, self._closed = [], 0, True
        self.zygote.forget()

    def status(self) -> dict:
        with self._cond:
            idle, live = [p.pid for p in self._idle], self._live
        return {"size": self.size, "timeout_s": self.timeout_s, "memory_mb": self.memory_mb,
                "idle": idle, "live": live, "spawned": self.spawned, "killed": self.killed,
                "zygote_pid": self.zygote.pid, "zygote_starts": self.zygote_starts}
