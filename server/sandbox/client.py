"""Server side of the sandbox: start and supervise the worker, run jobs.

One worker per server process, started lazily on first use, shared by all
threads of that process (gunicorn workers each get their own). See
docs/sandbox.md for the design and figures.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from server.sandbox import wire
from server.sandbox.source import (
    check_source,
    compiled_source,
    exception_name,
    source_line,
)

JOB_STATUSES = ("ok", "invalid", "time_limit", "memory_limit", "runtime_error", "error")
CALL_STATUSES = ("ok", "runtime_error", "invalid_result")
REQUIRED_LAYERS = ("descriptors", "rlimits", "chroot", "uid", "no_new_privs", "seccomp",
                   "network")
INSECURE_ENV = "NABLA_SANDBOX_INSECURE"
POOL_ENV = "NABLA_SANDBOX_POOL"
DEBUG_ENV = "NABLA_SANDBOX_DEBUG"
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The worker's first statements. ``threading`` is imported while
# os.register_at_fork is a no-op, so that its after-fork handler (which walks the
# thread tables in every forked child, ~120 copy-on-write page faults and
# 0.3-0.6 ms of CPU per child: bench/bench_child_cost.py) never runs in the
# sandboxed children: the worker has one thread, holds no lock when it forks, and
# a child can start no thread (seccomp denies clone). Other handlers (``random``'s
# reseed) stay.
WORKER_PRELUDE = (
    "import os; _register = os.register_at_fork; "
    "os.register_at_fork = lambda **hooks: None; import threading; "
    "os.register_at_fork = _register; del _register; "
)
_BOOTSTRAP = (
    WORKER_PRELUDE + "import sys; sys.path.insert(0, sys.argv[1]); "
    "from server.sandbox.pool import main; main(sys.argv[2:])"
)
HELLO_TIMEOUT_S = 30.0
QUEUE_TIMEOUT_S = 30.0
REPORT_TIMEOUT_S = 3.0
MAX_STREAM_CHARS = 10_000


class SandboxUnavailable(RuntimeError):
    """The isolation layers cannot be set up here; untrusted code is refused."""


@dataclass(frozen=True)
class CallResult:
    """One call's outcome as the child reported it: all of it untrusted data.

    ``error_type`` is the exception's type name only if it is a builtin (or
    numpy) exception's name, else ''; ``line`` is a line number of the source,
    else None. ``message`` and ``traceback`` are the child's text (scrubbed,
    capped): show them only to whoever may see the call's inputs.
    """

    status: str  # "ok" | "runtime_error" | "invalid_result"
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    message: str = ""
    traceback: str = ""
    error_type: str = ""
    line: int | None = None


@dataclass(frozen=True)
class JobResult:
    """A job's outcome. ``invalid`` and ``error`` are decided in this process (the
    source does not compile or lacks the function; the sandbox failed before the job
    reached a child, or its worker died); every other status once the child had
    the job, whatever the child sent. ``error_type``/``line`` as in CallResult, for
    an error while the module loaded."""

    status: str  # one of JOB_STATUSES
    calls: list[CallResult] = field(default_factory=list)
    stdout: str = ""
    stderr: str = ""
    elapsed_ms: float = 0.0
    message: str = ""
    traceback: str = ""
    error_type: str = ""
    line: int | None = None


def clean_environment() -> dict[str, str]:
    """The worker's whole environment: nothing from the server's."""
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                 "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "GOTO_NUM_THREADS"):
        env[name] = "1"
    return env


def worker_command(args: list[str]) -> list[str]:
    return [sys.executable, "-I", "-B", "-c", _BOOTSTRAP, _ROOT, *args]


def _scrub_paths() -> list[tuple[str, str]]:
    paths = {_ROOT: "<server>"}
    for p in (sys.prefix, sys.base_prefix, sys.exec_prefix):
        paths[p] = "<python>"
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        p = sysconfig.get_paths().get(key)
        if p:
            paths[p] = "<python>"
    return sorted(paths.items(), key=lambda kv: -len(kv[0]))


_SCRUB = _scrub_paths()


def scrub(text: object, limit: int = 4000) -> str:
    if not isinstance(text, str):
        return ""
    text = text[: limit * 2]
    for path, repl in _SCRUB:
        if path and len(path) > 1:
            text = text.replace(path, repl)
    return text if len(text) <= limit else text[: limit - 16] + "\n... (truncated)"


UID_FIRST = 1_900_000_000
UID_BLOCK = 64
_uid_blocks = 0


def _next_uid_block() -> int:
    """A block of unprivileged uids for one worker, distinct per process and start.

    Pool children never share a uid with a live child of the same worker; blocks
    of different server processes are spread by pid (seccomp, not uids, is what
    keeps children of different workers from signalling each other).
    """
    global _uid_blocks
    _uid_blocks += 1
    return UID_FIRST + ((os.getpid() * 16 + _uid_blocks) % (1 << 20)) * UID_BLOCK


class _WorkerGone(Exception):
    pass


class _Worker:
    """One worker process and the control socket to it."""

    def __init__(self, pool_size: int, insecure: bool, extra_args: list[str]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        uid_base = _next_uid_block()
        self.uids = range(uid_base, uid_base + UID_BLOCK)
        args = ["--control", str(theirs.fileno()), "--pool-size", str(pool_size),
                "--uid-base", str(uid_base), "--uid-count", str(UID_BLOCK),
                "--insecure", "1" if insecure else "0", *extra_args]
        debug = os.environ.get(DEBUG_ENV) == "1"
        try:
            self.proc = subprocess.Popen(
                worker_command(args), env=clean_environment(), cwd="/",
                pass_fds=[theirs.fileno()], close_fds=True, start_new_session=True,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=None if debug else subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        self.ctrl = ours
        self.pid = self.proc.pid
        ours.settimeout(HELLO_TIMEOUT_S)
        try:
            raw = ours.recv(65536)
            self.hello = json.loads(raw) if raw else None
        except (OSError, ValueError):
            self.hello = None
        ours.settimeout(None)
        if not isinstance(self.hello, dict):
            self.stop()
            raise SandboxUnavailable(
                f"the sandbox worker did not start (exit status {self.proc.poll()}); "
                f"run with {DEBUG_ENV}=1 to see its errors"
            )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def lease(self, time_limit_s: float) -> tuple[socket.socket, socket.socket]:
        """Ask for a ready child; return (lease socket, child socket)."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            socket.send_fds(self.ctrl, [json.dumps({"time_limit_s": time_limit_s}).encode()],
                            [theirs.fileno()])
        except OSError as exc:
            mine.close()
            raise _WorkerGone(f"cannot reach the worker: {exc}") from None
        finally:
            theirs.close()
        mine.settimeout(QUEUE_TIMEOUT_S)
        try:
            msg, fds, _, _ = socket.recv_fds(mine, 4096, 1)
        except (OSError, TimeoutError) as exc:
            mine.close()
            raise _WorkerGone(f"no sandboxed child became available: {exc}") from None
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            mine.close()
            try:
                reason = json.loads(msg).get("error") if msg else None
            except (ValueError, AttributeError):
                reason = None
            raise _WorkerGone(reason or "the worker closed the lease")
        return mine, socket.socket(fileno=fds[0])

    def stop(self) -> None:
        try:
            self.ctrl.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class _Stream:
    """Reads frames from a child with a deadline and a byte budget."""

    def __init__(self, sock: socket.socket, deadline: float, budget: int,
                 max_payload: int) -> None:
        self.sock, self.deadline, self.budget = sock, deadline, budget
        self.max_payload = max_payload

    def exact(self, n: int) -> bytes | None:
        """n bytes, or None at EOF; raises TimeoutError past the deadline."""
        buf = bytearray(n)
        view = memoryview(buf)
        pos = 0
        while pos < n:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self.sock.settimeout(remaining)
            try:
                got = self.sock.recv_into(view[pos:])
            except TimeoutError:
                raise
            except OSError:
                return None
            if got == 0:
                return None
            pos += got
        return bytes(buf)

    def frame(self) -> tuple[dict[str, object], bytes] | None:
        head = self.exact(wire.FRAME_HEAD.size)
        if head is None:
            return None
        header_len, payload_len = wire.parse_frame_head(head, min(self.budget,
                                                                  self.max_payload))
        self.budget -= payload_len + header_len
        raw = self.exact(header_len)
        if raw is None:
            return None
        header = wire.parse_frame_header(raw)
        payload = self.exact(payload_len) if payload_len else b""
        if payload is None:
            return None
        return header, payload


_SIGNAL_TEXT = {
    signal.SIGSEGV: "crashed (segmentation fault, e.g. from very deep recursion or ctypes)",
    signal.SIGBUS: "crashed (bus error)",
    signal.SIGABRT: "aborted",
    signal.SIGILL: "crashed (illegal instruction)",
    signal.SIGFPE: "crashed (arithmetic fault)",
    signal.SIGSYS: "was killed for a forbidden system call",
    signal.SIGKILL: "was killed",
}


class Sandbox:
    """Per-process entry point; thread-safe."""

    def __init__(self, pool_size: int | None = None, insecure: bool | None = None,
                 worker_args: list[str] | None = None) -> None:
        # A numpy grade leases one child per instance (three) at once.
        self.pool_size = pool_size or int(os.environ.get(POOL_ENV) or
                                          min(12, 3 * (os.cpu_count() or 1)))
        self.insecure = (os.environ.get(INSECURE_ENV) == "1") if insecure is None else insecure
        self._lock = threading.Lock()
        self._worker: _Worker | None = None
        self._unavailable: tuple[float, str] | None = None
        self.restarts = 0
        self._worker_args = list(worker_args or [])  # tests: --simulate-missing LAYER,...

    # ---- worker lifecycle
    def _missing(self, hello: dict[str, object]) -> list[str]:
        layers = hello.get("layers") or {}
        return [name for name in REQUIRED_LAYERS
                if not (isinstance(layers, dict) and layers.get(name))]

    def _get_worker(self) -> _Worker:
        with self._lock:
            w = self._worker
            if w is not None and w.alive():
                return w
            if w is not None:
                w.stop()
                self._worker = None
                self.restarts += 1
            if self._unavailable and time.monotonic() - self._unavailable[0] < 60:
                raise SandboxUnavailable(self._unavailable[1])
            if not sys.platform.startswith("linux") or not hasattr(os, "pidfd_open"):
                raise SandboxUnavailable(
                    f"the sandbox needs Linux >= 5.3 (seccomp, namespaces, pidfd); this is "
                    f"{sys.platform}: numpy answers cannot be run here")
            try:
                w = _Worker(self.pool_size, self.insecure, self._worker_args)
            except SandboxUnavailable as exc:
                self._unavailable = (time.monotonic(), str(exc))
                raise
            hello = w.hello
            missing = self._missing(hello)
            if not hello.get("ok") or (missing and not self.insecure):
                w.stop()
                reason = hello.get("error") or "missing " + ", ".join(missing)
                msg = (f"the sandbox cannot isolate untrusted code here ({reason}); "
                       f"needs root or user namespaces, seccomp and Linux "
                       f"(set {INSECURE_ENV}=1 only for local development)")
                self._unavailable = (time.monotonic(), msg)
                raise SandboxUnavailable(msg)
            self._unavailable = None
            self._worker = w
            return w

    def _discard(self, w: _Worker) -> None:
        with self._lock:
            if self._worker is w:
                self._worker = None
                self.restarts += 1
        w.stop()

    def uid_range(self) -> range | None:
        """The uids the current worker gives its children."""
        w = self._worker
        return w.uids if w is not None else None

    def worker_pid(self) -> int | None:
        w = self._worker
        return w.pid if w is not None and w.alive() else None

    def after_fork(self) -> None:
        w, self._worker = self._worker, None
        self._lock = threading.Lock()
        if w is not None:
            try:
                w.ctrl.close()  # our copy only; the parent keeps its worker
            except OSError:
                pass

    def close(self) -> None:
        with self._lock:
            w, self._worker = self._worker, None
        if w is not None:
            w.stop()

    def status(self) -> dict[str, object]:
        try:
            w = self._get_worker()
        except SandboxUnavailable as exc:
            return {"available": False, "insecure": self.insecure, "layers": {},
                    "missing": list(REQUIRED_LAYERS), "message": str(exc)}
        hello = w.hello
        missing = self._missing(hello)
        return {
            "available": not missing, "insecure": self.insecure,
            "layers": dict(hello.get("layers") or {}), "missing": missing,
            "message": ("all layers active" if not missing
                        else "INSECURE development mode: missing " + ", ".join(missing)),
            "worker_pid": w.pid, "pool_size": hello.get("pool_size"), "arch": hello.get("arch"),
        }

    # ---- jobs
    def run_job(
        self,
        source: str,
        calls: list[dict[str, object]],
        *,
        function: str = "backward",
        time_limit_s: float = 2.0,
        memory_mb: int = 512,
        max_output_arrays: int = 64,
        max_array_elements: int = 1_000_000,
        max_output_bytes: int = 64 << 20,
        max_stream_chars: int = MAX_STREAM_CHARS,
        outputs: Sequence[str] | None = None,
    ) -> JobResult:
        """``outputs``: the names of the returned dict to keep (others are ignored,
        whatever their values); None keeps every name."""
        started = time.perf_counter()
        if not (0 < time_limit_s <= 60):
            raise ValueError(f"time_limit_s must be in (0, 60], got {time_limit_s}")
        if not (16 <= memory_mb <= 4096):
            raise ValueError(f"memory_mb must be in [16, 4096], got {memory_mb}")
        if outputs is not None and not all(isinstance(n, str) for n in outputs):
            raise TypeError("outputs must be a sequence of names (str)")
        limits = {
            "time_limit_s": float(time_limit_s), "memory_mb": int(memory_mb),
            "max_output_arrays": int(max_output_arrays),
            "max_array_elements": int(max_array_elements),
            "max_output_bytes": int(max_output_bytes), "max_stream_chars": int(max_stream_chars),
            "outputs": None if outputs is None else list(outputs),
        }
        # Decided here, before any child is involved: compile() runs nothing. The
        # code object goes to the child with the job (compiled once, not per child).
        problem = code = None
        if isinstance(source, str) and isinstance(function, str):
            problem = check_source(source, function)
            code = compiled_source(source, function)
        job = wire.encode_job(source, list(calls), function, limits, code)

        def result(status: str, **kw: object) -> JobResult:
            return JobResult(status=status, elapsed_ms=(time.perf_counter() - started) * 1e3,
                             **kw)  # type: ignore[arg-type]

        if problem is not None:
            return result("invalid", message=problem.message, line=problem.line)

        lease = child = None
        for attempt in range(2):  # a job not yet handed to a child is safe to retry
            w = self._get_worker()
            try:
                lease, child = w.lease(time_limit_s)
                break
            except _WorkerGone as exc:
                if w.alive() and "no sandboxed child" in str(exc):
                    return result("error", message=f"sandbox busy: {exc}")
                self._discard(w)
                if attempt:
                    return result("error", message=f"sandbox worker unavailable: {exc}")
        assert lease is not None and child is not None
        deadline = time.monotonic() + time_limit_s
        try:
            return self._converse(w, lease, child, job, deadline, limits, len(calls), result,
                                  source)
        finally:
            child.close()
            lease.close()  # the worker kills the child if it still runs

    def _converse(self, w, lease, child, job, deadline, limits, ncalls, result,
                  source) -> JobResult:
        """Send the job, read its frames. From here on the student's code may run:
        the outcome is the student's (time_limit, memory_limit, runtime_error, or
        ok with per-call results), whatever the child sends; only a worker that
        died during the job is ours (``error``). Children cannot kill the worker
        (seccomp allows signals to themselves only; docs/sandbox.md)."""
        budget = ncalls * (limits["max_output_bytes"] + (1 << 20)) + (4 << 20)
        stream = _Stream(child, deadline, budget, limits["max_output_bytes"])
        cap = limits["max_stream_chars"]
        out: list[str] = []
        err: list[str] = []
        totals = {"out": 0, "err": 0}
        calls: list[CallResult] = []

        def add_text(header: dict[str, object]) -> None:
            for key, acc in (("out", out), ("err", err)):
                text = header.get(key)
                have = sum(map(len, acc))
                if isinstance(text, str) and have < cap:
                    acc.append(text[: cap - have])
                n = header.get(key + "_n")
                if type(n) is int and n >= 0:
                    totals[key] = n

        def texts() -> dict[str, str]:
            res = {}
            for key, acc in (("stdout", out), ("stderr", err)):
                text = "".join(acc)
                total = totals["out" if key == "stdout" else "err"]
                if total > len(text):
                    text += f"\n... [output truncated: {total - len(text)} more characters]"
                res[key] = text
            return res

        def fill_missing(message: str) -> None:
            while len(calls) < ncalls:
                calls.append(CallResult("invalid_result", message=message))

        try:
            child.settimeout(max(0.001, deadline - time.monotonic()))
            child.sendall(job)
        except TimeoutError:
            return result("time_limit", message=_time_message(limits), **texts())
        except OSError:
            pass  # the child died before reading everything; its exit report says why
        malformed = None
        done: dict[str, object] | None = None
        try:
            while True:
                frame = stream.frame()
                if frame is None:
                    break
                header, payload = frame
                add_text(header)
                if header["k"] == "done":
                    done = header
                    break
                if header.get("i") != len(calls) or len(calls) >= ncalls:
                    raise wire.WireError("call results out of order")
                calls.append(self._call_result(header, payload, limits, source))
        except TimeoutError:
            return result("time_limit", calls=calls, message=_time_message(limits), **texts())
        except wire.WireError as exc:
            malformed = str(exc)
        if malformed is not None:
            fill_missing(f"the result stream was malformed ({malformed}); "
                         "the answer must only return its dict")
            return result("ok", calls=calls, **texts())
        if done is not None:
            status = done.get("s")
            if status not in ("ok", "runtime_error", "memory_limit"):
                fill_missing("malformed final frame")
                return result("ok", calls=calls, **texts())
            if status == "ok":
                fill_missing("no result was reported for this call")
                return result("ok", calls=calls, **texts())
            if status == "memory_limit":
                msg = f"memory limit of {limits['memory_mb']} MB exceeded ({scrub(done.get('m'))})"
            else:
                msg = scrub(done.get("m"))
            return result(status, calls=calls, message=msg, traceback=scrub(done.get("tb")),
                          **_error_facts(done, source), **texts())
        # EOF without a final frame: the worker tells how the child ended, at the
        # latest when its deadline kill has happened (the child may close its
        # socket and live on).
        lease.settimeout(max(0.0, deadline - time.monotonic()) + REPORT_TIMEOUT_S)
        try:
            raw = lease.recv(4096)
            report = json.loads(raw) if raw else None
        except (OSError, ValueError):
            report = None
        if not isinstance(report, dict):
            try:  # the lease closes as the worker exits: give it a moment to be reaped
                w.proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                pass
            if not w.alive():
                self._discard(w)
                return result("error", calls=calls, **texts(),
                              message="the sandbox worker stopped during the job; it is restarted")
            report = {}
        sig, code = report.get("signal"), report.get("exit")
        if report.get("wall") or sig == signal.SIGXCPU:
            return result("time_limit", calls=calls, message=_time_message(limits), **texts())
        if sig is not None:
            try:
                text = _SIGNAL_TEXT.get(signal.Signals(sig), f"was killed by signal {sig}")
            except ValueError:
                text = f"was killed by signal {sig}"
            return result("runtime_error", calls=calls, message=f"the answer's process {text}",
                          **texts())
        ended = f"exited (status {code})" if type(code) is int else "ended"
        return result("runtime_error", calls=calls, **texts(),
                      message=f"the answer's process {ended} before returning all results")

    @staticmethod
    def _call_result(header: dict[str, object], payload: bytes,
                     limits: dict[str, object], source: str) -> CallResult:
        status = header.get("s")
        if status == "ok":
            try:
                outputs = wire.decode_arrays(header.get("a"), payload,
                                             max_arrays=limits["max_output_arrays"],
                                             max_elements=limits["max_array_elements"],
                                             max_bytes=limits["max_output_bytes"],
                                             names=limits["outputs"])
            except wire.WireError as exc:
                return CallResult("invalid_result", message=str(exc))
            return CallResult("ok", outputs=outputs)
        if status == "runtime_error":
            return CallResult(status, message=scrub(header.get("m")),
                              traceback=scrub(header.get("tb")), **_error_facts(header, source))
        if status == "invalid_result":
            return CallResult(status, message=scrub(header.get("m")))
        return CallResult("invalid_result", message="malformed call result")


def _error_facts(header: dict[str, object], source: str) -> dict[str, object]:
    """The two facts of a reported error that may be shown for any call: a builtin
    exception's type name and a line of the student's file (else '' and None)."""
    return {"error_type": exception_name(header.get("type")),
            "line": source_line(header.get("line"), source)}


def _time_message(limits: dict[str, object]) -> str:
    return f"time limit of {float(limits['time_limit_s']):g} s exceeded"  # type: ignore[arg-type]


# ---------------------------------------------------------------- process-wide instance

_instance: Sandbox | None = None
_instance_lock = threading.Lock()


def get_sandbox() -> Sandbox:
    global _instance
    if _instance is None:
        with _instance_lock:
            if _instance is None:
                _instance = Sandbox()
                atexit.register(_instance.close)
    return _instance


def _after_fork_in_child() -> None:
    global _instance_lock
    _instance_lock = threading.Lock()
    if _instance is not None:
        _instance.after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def run_job(source: str, calls: list[dict[str, object]], **kwargs: object) -> JobResult:
    """Run ``source``'s ``function`` once per call in a sandboxed child. See docs/sandbox.md."""
    return get_sandbox().run_job(source, calls, **kwargs)  # type: ignore[arg-type]


def sandbox_status() -> dict[str, object]:
    return get_sandbox().status()
