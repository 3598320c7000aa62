"""The sandbox worker process and the code that runs inside each child.

Started by ``server.sandbox.client`` with an empty environment as
``python -I -c <bootstrap> --control FD ...``. It imports the standard library,
numpy (and the numpy submodules that numpy would otherwise import lazily), and
``server.sandbox.{seccomp,wire}``; nothing else from the server. It never reads
job bytes: it forks children ahead of time, each child sandboxes itself and
says "ready" on its own socket, and a lease request from the client is answered
with that socket's descriptor (SCM_RIGHTS). The client then talks to the child
directly. The worker reports how the child ended on the lease socket, kills the
child when the lease closes or its backstop deadline passes, and keeps the
pool full.

Wire between client and worker (all SOCK_SEQPACKET, one JSON datagram each):
  control (client -> worker): {"time_limit_s": x} + [lease socket fd]
  control (worker -> client): one hello datagram at start-up
  lease (worker -> client): {"pid": .., "uid": ..} + [child socket fd], later
                            {"exit": code|null, "signal": n|null, "wall": bool}
"""

from __future__ import annotations

import builtins
import ctypes
import gc
import io
import json
import linecache
import os
import resource
import selectors
import signal
import socket
import sys
import tempfile
import time
import traceback
import types

# numpy and everything an answer may reasonably import: once open() is denied
# and the root is empty, only modules already in sys.modules can be imported.
import numpy as np

from server.sandbox import seccomp, wire

_PRELOAD = (
    "numpy.fft", "numpy.random", "numpy.linalg", "numpy.polynomial", "numpy.ma",
    "numpy.ctypeslib", "numpy.strings", "numpy.char", "numpy.rec", "numpy.emath",
    "numpy.lib.stride_tricks", "numpy.lib.recfunctions",
    "math", "cmath", "itertools", "functools", "collections", "collections.abc",
    "operator", "typing", "dataclasses", "copy", "random", "re", "string", "numbers",
    "fractions", "decimal", "statistics", "heapq", "bisect", "time", "enum",
    "abc", "warnings", "contextlib", "encodings.latin_1", "encodings.ascii",
    "encodings.utf_16", "encodings.utf_32", "unicodedata",
)

STUDENT_FILE = "answer.py"
JOB_FD = 3
READY = b"R"
FAILED = b"E"
MAX_JOB_BYTES = 256 << 20
MAX_TEXT = 4000  # characters of a message or traceback
TRACEBACK_FRAMES = 20


def preload() -> None:
    import importlib

    for name in _PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


# ============================================================ sandbox setup

_libc = ctypes.CDLL(None, use_errno=True)
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]
_libc.prctl.restype = ctypes.c_int
_libc.unshare.argtypes = [ctypes.c_int]
_libc.unshare.restype = ctypes.c_int
CLONE_NEWNET = 0x40000000


def _prctl(option: int, arg: int) -> None:
    if _libc.prctl(option, arg, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


def unshare_network() -> str | None:
    """Move the calling process (and all later children) into an empty netns."""
    if _libc.unshare(CLONE_NEWNET) != 0:
        return None
    return "network namespace (no interfaces)"


class SetupError(RuntimeError):
    pass


def enter_sandbox(
    cfg: dict[str, object], filt: seccomp.Filter | None, job_fd: int, devnull: int
) -> dict[str, str | None]:
    """Isolate the calling process. Returns layer name -> description (None = missing).

    With cfg["insecure"] false, any missing required layer raises SetupError.
    """
    insecure = bool(cfg["insecure"])
    layers: dict[str, str | None] = {}

    failures: list[str] = []

    def fail(layer: str, exc: BaseException) -> None:
        layers[layer] = None
        failures.append(f"{layer} ({exc})")

    try:
        os.setsid()
    except OSError:
        pass  # already a session leader (one-shot mode)
    # descriptors: 0-2 -> /dev/null, 3 -> the job socket, nothing else
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if job_fd != JOB_FD:
        os.dup2(job_fd, JOB_FD)
    os.closerange(JOB_FD + 1, 1 << 20)
    layers["descriptors"] = "only /dev/null and the job socket are open"
    try:  # under memory pressure the kernel kills a child first, never the worker or server
        with open("/proc/self/oom_score_adj", "w") as fh:
            fh.write("1000")
    except OSError:
        pass
    vm_bytes = int(cfg.get("baseline_vm") or 0) or _vm_size()
    cfg["baseline_vm"] = vm_bytes
    as_hard = vm_bytes + int(cfg["max_memory_mb"]) * (1 << 20) + (64 << 20)
    try:
        for res, value in (
            (resource.RLIMIT_CORE, 0),
            (resource.RLIMIT_FSIZE, 0),
            (resource.RLIMIT_NOFILE, 16),
            (resource.RLIMIT_NPROC, 0),
            (resource.RLIMIT_MEMLOCK, 0),
            (resource.RLIMIT_MSGQUEUE, 0),
            (resource.RLIMIT_CPU, int(cfg["max_cpu_s"])),
            (resource.RLIMIT_AS, as_hard),
        ):
            resource.setrlimit(res, (value, value))
        layers["rlimits"] = "CPU, AS, FSIZE=0, NOFILE=16, NPROC=0, CORE=0"
    except (OSError, ValueError) as exc:
        fail("rlimits", exc)
    mode = cfg["uid_mode"]
    try:
        if mode == "none":
            raise OSError("needs root (or user namespaces) to chroot")
        os.chroot(str(cfg["root_dir"]))
        os.chdir("/")
        layers["chroot"] = "empty read-only root directory"
    except OSError as exc:
        fail("chroot", exc)
    uid = int(cfg["uid"])
    try:
        if mode == "setuid":
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            layers["uid"] = f"unprivileged uid/gid {uid} (one per pool slot)"
        elif mode == "userns":
            _drop_capabilities()
            layers["uid"] = f"user namespace, host uid {cfg['host_uid']}, no capabilities"
        else:
            raise OSError("not root and no user namespace")
    except OSError as exc:
        fail("uid", exc)
    try:
        # after the uid change, which clears the parent-death signal
        _prctl(seccomp.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != int(cfg["worker_pid"]):
            os._exit(0)  # the worker is already gone
        _prctl(seccomp.PR_SET_DUMPABLE, 0)
        _prctl(seccomp.PR_SET_NO_NEW_PRIVS, 1)
        layers["no_new_privs"] = "no_new_privs, not dumpable, killed with the worker"
    except OSError as exc:
        fail("no_new_privs", exc)
    try:
        if filt is None:
            raise OSError(str(cfg.get("seccomp_error") or "no filter"))
        filt.load(os.getpid())
        layers["seccomp"] = (
            f"allowlist of {len(filt.instructions)} BPF instructions ({seccomp.machine()}): "
            "no socket, open, fork/clone, exec, kill/ptrace of others, process_vm_*"
        )
    except (OSError, seccomp.SeccompUnavailable) as exc:
        fail("seccomp", exc)
    layers["network"] = cfg.get("netns") or (
        "seccomp denies socket()" if layers.get("seccomp") else None
    )
    if failures and not insecure:
        raise SetupError("missing " + "; ".join(failures))
    return layers


def _vm_size() -> int:
    """Current address-space size in bytes (the base that memory_mb is added to)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 512 << 20


def _drop_capabilities() -> None:
    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    hdr = Header(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (Data * 2)()
    nr = {"x86_64": 126, "aarch64": 91}.get(seccomp.machine())
    if nr is None or _libc.syscall(nr, ctypes.byref(hdr), ctypes.byref(data)) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


# ============================================================ the job, inside the child

class _Capped(io.TextIOBase):
    """stdout/stderr replacement: keeps the first ``cap`` characters."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.kept = 0
        self.total = 0
        self.parts: list[str] = []

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:  # type: ignore[override]
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        self.total += len(s)
        room = self.cap - self.kept
        if room > 0:
            part = s[:room]
            self.parts.append(part)
            self.kept += len(part)
        return len(s)

    def take(self) -> str:
        text = "".join(self.parts)
        self.parts = []
        return text


class _Invalid(Exception):
    pass


def _read_exact(fd: int, n: int) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    pos = 0
    while pos < n:
        got = os.readv(fd, [view[pos:]])
        if got == 0:
            raise EOFError("job socket closed")
        pos += got
    return buf


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _send_frame(fd: int, header: dict[str, object], payload: list[bytes] | None = None) -> None:
    head = json.dumps(header).encode()
    body = b"".join(payload or [])
    _write_all(fd, wire.FRAME_HEAD.pack(wire.RESULT_MAGIC, len(head), len(body)) + head)
    if body:
        _write_all(fd, body)


def _read_job(fd: int) -> tuple[dict[str, object], bytearray]:
    magic = bytes(_read_exact(fd, 4))
    if magic != wire.JOB_MAGIC:
        raise EOFError("bad job magic")
    (hlen,) = wire.U64.unpack(_read_exact(fd, 8))
    if hlen > MAX_JOB_BYTES:
        raise EOFError("job header too large")
    header = json.loads(bytes(_read_exact(fd, hlen)))
    (blen,) = wire.U64.unpack(_read_exact(fd, 8))
    if blen > MAX_JOB_BYTES:
        raise EOFError("job too large")
    return header, _read_exact(fd, blen)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 20] + "\n... (truncated)"


def _describe(exc: BaseException) -> str:
    try:
        msg = str(exc)
    except BaseException:  # a hostile __str__
        msg = "<unprintable>"
    return _clip(f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__)


def _student_traceback(exc: BaseException) -> str:
    try:
        frames = _student_frames(exc)
        omitted = max(0, len(frames) - TRACEBACK_FRAMES)
        frames = frames[-TRACEBACK_FRAMES:]
        lines = ["Traceback (most recent call last):\n"]
        if omitted:
            lines.append(f"  ... {omitted} earlier frames omitted\n")
        lines += traceback.format_list(traceback.StackSummary.from_list(frames))
        lines += traceback.format_exception_only(type(exc), exc)
        return _clip("".join(lines))
    except BaseException:
        return _describe(exc)


def _student_frames(exc: BaseException) -> list[traceback.FrameSummary]:
    return [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == STUDENT_FILE]


def _error_fields(exc: BaseException, message: str | None = None) -> dict[str, object]:
    """A runtime error as a frame reports it: the exception's type name, the line of
    the student's file it was raised at (the innermost one), the message and the
    traceback. The server trusts none of it (docs/sandbox.md)."""
    try:
        frames = _student_frames(exc)
        line = frames[-1].lineno if frames else getattr(exc, "lineno", None)
        kind = type(exc).__name__
    except BaseException:
        line, kind = None, ""
    return {"s": "runtime_error", "type": kind, "line": line if type(line) is int else None,
            "m": message if message is not None else _describe(exc),
            "tb": _student_traceback(exc)}


def _as_array(name: str, value: object) -> np.ndarray:
    if type(value) is np.ndarray:
        arr = value
    elif isinstance(value, np.ndarray):
        raise _Invalid(f"{name!r} is a {type(value).__name__} (an ndarray subclass); "
                       "return plain numpy arrays")
    elif type(value) in (float, int) or (
        isinstance(value, np.generic) and type(value).__module__ == "numpy"
    ):
        arr = np.asarray(value)
    elif type(value) in (list, tuple):
        arr = np.array(value)
    else:
        raise _Invalid(f"{name!r} is a {type(value).__name__}, expected a numpy array")
    if arr.dtype.kind == "c":
        raise _Invalid(f"{name!r} has complex values")
    if arr.dtype.kind not in "biuf":
        raise _Invalid(f"{name!r} has dtype {arr.dtype}, expected real numbers")
    return arr


def _encode_result(result: object, limits: dict[str, object]) -> tuple[list, list[bytes]]:
    if type(result) is not dict:
        raise _Invalid(f"the function must return a dict of arrays, got {type(result).__name__}")
    wanted = limits.get("outputs")
    if wanted is not None:  # only the names asked for; anything else is ignored
        items = [(name, result[name]) for name in wanted if name in result]
    else:
        items = list(result.items())
    if len(items) > int(limits["max_output_arrays"]):
        raise _Invalid(f"{len(items)} arrays returned, the limit is {limits['max_output_arrays']}")
    specs: list[list[object]] = []
    chunks: list[bytes] = []
    total = 0
    for name, value in items:
        if type(name) is not str:
            raise _Invalid(f"dict keys must be gradient names (str), got {type(name).__name__}")
        arr = _as_array(name, value)
        if arr.size > int(limits["max_array_elements"]):
            raise _Invalid(f"{name!r} has {arr.size} elements, the limit is "
                           f"{limits['max_array_elements']}")
        if arr.dtype.str not in wire.ALLOWED_DTYPES:
            arr = arr.astype(np.float64)
        if not arr.flags.c_contiguous:  # (ascontiguousarray would turn 0-d into 1-d)
            arr = arr.copy(order="C")
        total += arr.size * 8  # counted as the float64 arrays the server will hold
        if total > int(limits["max_output_bytes"]):
            raise _Invalid(f"the arrays returned exceed {limits['max_output_bytes']} bytes "
                           "(as float64)")
        specs.append([name, arr.dtype.str, list(arr.shape)])
        chunks.append(arr.tobytes())
    return specs, chunks


class _Finished(BaseException):
    """Raised by done(): the final frame has been sent."""


def _apply_job_limits(header: dict[str, object]) -> None:
    """Lower the CPU and address-space limits to this job's values."""
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    used = cpu.ru_utime + cpu.ru_stime
    soft = int(used + float(header["time_limit_s"])) + 1
    hard_cpu = resource.getrlimit(resource.RLIMIT_CPU)[1]
    if hard_cpu == resource.RLIM_INFINITY or soft + 1 <= hard_cpu:
        resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 1))
    baseline = int(_CFG.get("baseline_vm") or 0)
    if baseline:
        want = baseline + int(header["memory_mb"]) * (1 << 20)
        hard_as = resource.getrlimit(resource.RLIMIT_AS)[1]
        if hard_as == resource.RLIM_INFINITY or want <= hard_as:
            resource.setrlimit(resource.RLIMIT_AS, (want, want))


def run_job(fd: int) -> None:
    """Read one job from ``fd``, run it, stream result frames, exit."""
    header, blob = _read_job(fd)
    _apply_job_limits(header)
    execute_job(header, blob, lambda head, payload=None: _send_frame(fd, head, payload))
    os._exit(0)


def execute_job(header: dict[str, object], blob: bytes | bytearray, send) -> None:
    """Run a decoded job; ``send(header, payload)`` emits each frame, the last is "done"."""
    try:
        _execute(header, blob, send)
    except _Finished:
        pass


def _execute(header: dict[str, object], blob: bytes | bytearray, send) -> None:
    limits = header

    arrays = []
    for dtype_str, shape, offset in header["arrays"]:
        count = 1
        for d in shape:
            count *= d
        arrays.append(np.frombuffer(blob, dtype=wire.ALLOWED_DTYPES[dtype_str],
                                    count=count, offset=offset).reshape(shape))

    def build_kwargs(call: dict[str, list]) -> dict[str, object]:
        kwargs: dict[str, object] = {}
        for name, (kind, val) in call.items():
            if kind == "a":
                kwargs[name] = arrays[val].copy()
            elif kind == "l":
                kwargs[name] = [arrays[i].copy() for i in val]
            else:
                kwargs[name] = float(val)
        return kwargs

    cap = int(header["max_stream_chars"])
    out, err = _Capped(cap), _Capped(cap)
    sys.stdout, sys.stderr, sys.stdin = out, err, io.StringIO()

    def streams() -> dict[str, object]:
        return {"out": out.take(), "err": err.take(), "out_n": out.total, "err_n": err.total}

    def done(**fields: object) -> None:
        send({"k": "done", **fields, **streams()})
        raise _Finished

    # The server compiled the source and found the function before sending the
    # job (server/sandbox/source.py): what follows are runtime errors, whatever
    # this process reports, since from exec() on the student's code has run.
    source = header["source"]
    try:
        code = compile(source, STUDENT_FILE, "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        done(**_error_fields(exc))
    linecache.cache[STUDENT_FILE] = (len(source), None, source.splitlines(True), STUDENT_FILE)
    module = types.ModuleType("answer")
    module.__dict__["__builtins__"] = builtins
    module.__file__ = STUDENT_FILE
    try:
        exec(code, module.__dict__)
    except MemoryError as exc:
        done(s="memory_limit", m=_describe(exc))
    except ImportError as exc:
        done(**_error_fields(exc, _describe(exc) + " (answers can use numpy and common standard "
                             "modules such as math, itertools, functools, collections)"))
    except BaseException as exc:
        done(**_error_fields(exc))
    fn = module.__dict__.get(header["function"])
    if not callable(fn):
        what = "not defined" if fn is None else f"not a function (its type is {type(fn).__name__})"
        done(s="runtime_error", type="TypeError", line=None,
             m=f"TypeError: {header['function']!r} is {what} once the module has run")
    for index, call in enumerate(header["calls"]):
        frame: dict[str, object] = {"k": "call", "i": index}
        payload: list[bytes] = []
        try:
            result = fn(**build_kwargs(call))
        except MemoryError as exc:
            done(s="memory_limit", m=_describe(exc))
        except BaseException as exc:
            frame.update(_error_fields(exc))
        else:
            try:
                specs, payload = _encode_result(result, limits)
                frame.update(s="ok", a=specs)
            except _Invalid as exc:
                frame.update(s="invalid_result", m=_clip(str(exc)))
            except MemoryError as exc:
                done(s="memory_limit", m=_describe(exc))
            except BaseException as exc:  # a hostile __array__, __len__, ...
                frame.update(s="invalid_result",
                             m=_clip(f"the result could not be read: {_describe(exc)}"))
        frame.update(streams())
        send(frame, payload)
    done(s="ok")


_WARMUP_SOURCE = """
import numpy as np

def backward(x, W, z, dy):
    dz = dy * (z > 0)
    return {"dW": x.T @ dz, "dx": dz @ W.T, "s": float(np.sum(dz))}
"""


def _warm_up() -> None:
    """Run a small job through the real code path before taking a job, so that
    the copy-on-write faults it causes are paid ahead of time (only pages that a
    real job touches: no extra modules)."""
    x = np.linspace(-1.0, 1.0, 12).reshape(4, 3)
    w = np.linspace(-1.0, 1.0, 15).reshape(3, 5)
    call = {"x": x, "W": w, "z": x @ w, "dy": np.ones((4, 5))}
    limits = {"time_limit_s": 1.0, "memory_mb": 16, "max_output_arrays": 8,
              "max_array_elements": 100, "max_output_bytes": 1 << 16, "max_stream_chars": 100}
    data = wire.encode_job(_WARMUP_SOURCE, [call, call], "backward", limits)
    hlen = wire.U64.unpack_from(data, 4)[0]
    header = json.loads(data[12:12 + hlen])
    blob = bytearray(data[12 + hlen + 8:])
    sink: list[bytes] = []

    def send(head: dict[str, object], payload: list[bytes] | None = None) -> None:
        body = json.dumps(head).encode()
        sink.append(wire.FRAME_HEAD.pack(wire.RESULT_MAGIC, len(body), 0) + body)
        sink.append(b"".join(payload or []))

    execute_job(header, blob, send)


def should_warm_up(callers_waiting: bool) -> bool:
    """Whether a new child runs the warm-up job before it says ready. Warming up
    costs ~1.1 ms of CPU and saves ~0.2 ms of the job's (bench/bench_child_cost.py):
    worth it when the child will wait in an idle pool, not when callers are
    queueing for children or every CPU is busy (1-minute load average at or above
    the CPU count), where that CPU would be taken from the jobs themselves."""
    if callers_waiting:
        return False
    try:
        return os.getloadavg()[0] < (os.cpu_count() or 1)
    except OSError:
        return True


_CFG: dict[str, object] = {}


def child_main(cfg: dict[str, object], filt: seccomp.Filter | None, job_fd: int,
               devnull: int) -> None:
    """Body of a pooled child: sandbox, warm up, say ready, run one job, exit."""
    global _CFG
    code = 0
    try:
        _CFG = cfg
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        try:
            layers = enter_sandbox(cfg, filt, job_fd, devnull)
        except SetupError as exc:
            _write_all(JOB_FD, FAILED + json.dumps({"error": str(exc)}).encode() + b"\n")
            os._exit(0)
        if cfg.get("warm_up", True):
            _warm_up()
        _write_all(JOB_FD, READY + json.dumps({"layers": layers}).encode() + b"\n")
        run_job(JOB_FD)
    except BaseException:
        code = 70
    finally:
        os._exit(code)


# ============================================================ the worker

class _Child:
    __slots__ = ("pid", "pidfd", "sock", "uid", "state", "lease", "deadline", "wall", "buf")

    def __init__(self, pid: int, pidfd: int, sock: socket.socket, uid: int) -> None:
        self.pid, self.pidfd, self.sock, self.uid = pid, pidfd, sock, uid
        self.state = "preparing"
        self.lease: socket.socket | None = None
        self.deadline: float | None = None
        self.wall = False
        self.buf = b""


class Worker:
    def __init__(self, ctrl_fd: int, opts: dict[str, object]) -> None:
        self.ctrl = socket.socket(fileno=ctrl_fd)
        self.pool_size = int(opts["pool_size"])
        self.opts = opts
        self.sel = selectors.DefaultSelector()
        self.children: dict[int, _Child] = {}
        self.ready: list[_Child] = []
        self.waiting: list[tuple[socket.socket, float]] = []
        self.free_uids = list(range(int(opts["uid_base"]),
                                    int(opts["uid_base"]) + int(opts["uid_count"])))
        self.devnull = os.open(os.devnull, os.O_RDWR)
        self.first_layers: dict[str, str | None] | None = None
        self.setup_error: str | None = None
        self.failures = 0
        self.next_spawn = 0.0
        self.cfg: dict[str, object] = {}
        self.filt: seccomp.Filter | None = None

    # ---- start-up
    def prepare(self) -> None:
        insecure = bool(self.opts["insecure"])
        # test hook: behave as on a machine where these layers are unavailable
        simulate = set(str(self.opts.get("simulate_missing") or "").split(","))
        euid = os.geteuid()
        is_root = euid == 0 and "root" not in simulate
        uid_mode = "setuid" if is_root else "none"
        host_uid = euid
        root = empty_root()
        if not is_root and "userns" not in simulate and _enter_user_namespace(euid, os.getegid()):
            uid_mode = "userns"
        netns = unshare_network()  # after the user namespace, which grants the right
        self.root_dir = root
        try:
            self.filt = seccomp.build_filter()
            seccomp_error = None
        except (seccomp.SeccompUnavailable, OSError) as exc:
            self.filt, seccomp_error = None, str(exc)
        if "chroot" in simulate:
            uid_mode = "none"
        if "seccomp" in simulate:
            self.filt, seccomp_error = None, "simulated: seccomp unavailable"
        if "netns" in simulate:
            netns = None
        self.cfg = {
            "insecure": insecure, "root_dir": root, "uid_mode": uid_mode, "uid": 0,
            "host_uid": host_uid, "worker_pid": os.getpid(), "netns": netns,
            "seccomp_error": seccomp_error, "max_memory_mb": self.opts["max_memory_mb"],
            "max_cpu_s": self.opts["max_cpu_s"], "baseline_vm": _vm_size() + (16 << 20),
        }
        self.sel.register(self.ctrl, selectors.EVENT_READ, ("ctrl", None))

    def hello(self) -> dict[str, object]:
        deadline = time.monotonic() + 20
        self.fill()
        while self.first_layers is None and self.setup_error is None:
            if time.monotonic() > deadline:
                self.setup_error = "the first sandboxed child did not become ready in 20 s"
                break
            self.step(0.5)
        return {
            "ok": self.setup_error is None, "error": self.setup_error,
            "layers": self.first_layers, "pid": os.getpid(), "arch": seccomp.machine(),
            "pool_size": self.pool_size, "insecure": bool(self.opts["insecure"]),
        }

    # ---- children
    def fill(self) -> None:
        """Keep the pool full; while jobs run, only refill below half, so that
        forking and setting up a child does not compete with a running job."""
        preparing = sum(1 for c in self.children.values() if c.state in ("preparing", "ready"))
        busy = any(c.state == "leased" for c in self.children.values())
        if self.waiting:  # callers are queueing: prepare children for them too
            target = self.pool_size + min(len(self.waiting), self.pool_size)
        elif busy:
            target = max(1, self.pool_size // 2)
        else:
            target = self.pool_size
        while preparing < target and self.free_uids and time.monotonic() >= self.next_spawn:
            try:
                self.spawn()
            except OSError:  # fork or pidfd_open failed (EAGAIN, ENOMEM): retry later
                self.failures += 1
                self.next_spawn = time.monotonic() + min(5.0, 0.05 * 2 ** self.failures)
                break
            preparing += 1

    def spawn(self) -> None:
        uid = self.free_uids[0]
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        cfg = dict(self.cfg, uid=uid, warm_up=should_warm_up(bool(self.waiting)))
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            raise
        if pid:
            self.free_uids.pop(0)
        if pid == 0:  # pragma: no cover - runs in the child
            try:
                child_main(cfg, self.filt, theirs.fileno(), self.devnull)
            finally:
                os._exit(70)
        theirs.close()
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            os.kill(pid, signal.SIGKILL)  # still our unreaped child: the pid cannot be reused
            os.waitpid(pid, 0)
            ours.close()
            self.free_uids.append(uid)
            raise
        child = _Child(pid, pidfd, ours, uid)
        self.children[pid] = child
        self.sel.register(child.pidfd, selectors.EVENT_READ, ("pidfd", child))
        self.sel.register(ours, selectors.EVENT_READ, ("hello", child))

    def on_child_hello(self, child: _Child) -> None:
        try:
            data = child.sock.recv(4096)
        except OSError:
            data = b""
        child.buf += data
        if data and b"\n" not in child.buf and len(child.buf) < 65536:
            return
        self.sel.unregister(child.sock)
        line = child.buf.split(b"\n", 1)[0]
        child.buf = b""
        try:
            info = json.loads(line[1:]) if line else {}
        except ValueError:
            info = {}
        if line[:1] == READY and isinstance(info, dict):
            if self.first_layers is None:
                self.first_layers = info.get("layers")
            child.state = "ready"
            self.failures = 0
            self.ready.append(child)
            self.serve_waiting()
        else:
            self.failures += 1
            err = info.get("error") if isinstance(info, dict) else None
            if self.first_layers is None:
                self.setup_error = err or "the sandboxed child failed during set-up"
            self.next_spawn = time.monotonic() + min(5.0, 0.05 * 2 ** self.failures)
            self.kill(child)
            if self.failures >= 3:  # do not keep callers waiting for children that fail
                for lease, _ in self.waiting:
                    try:
                        lease.send(json.dumps({"error": f"children fail to start: {err}"})
                                   .encode())
                    except OSError:
                        pass
                    lease.close()
                self.waiting = []

    def kill(self, child: _Child) -> None:
        try:
            signal.pidfd_send_signal(child.pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def on_exit(self, child: _Child) -> None:
        try:
            pid, status, _ = os.wait4(child.pid, os.WNOHANG)
            if pid == 0:  # the pidfd said it exited: it is about to be a zombie
                _, status, _ = os.wait4(child.pid, 0)
        except ChildProcessError:
            status = 0
        self.sel.unregister(child.pidfd)
        os.close(child.pidfd)
        if child.sock is not None:
            if child.state == "preparing":
                try:
                    self.sel.unregister(child.sock)
                except KeyError:
                    pass
            child.sock.close()
            child.sock = None
        if child in self.ready:
            self.ready.remove(child)
        if child.lease is not None:
            report = {
                "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                "wall": child.wall,
            }
            try:
                child.lease.send(json.dumps(report).encode())
            except OSError:
                pass
            self.close_lease(child)
        del self.children[child.pid]
        self.free_uids.append(child.uid)

    def close_lease(self, child: _Child) -> None:
        if child.lease is not None:
            try:
                self.sel.unregister(child.lease)
            except KeyError:
                pass
            child.lease.close()
            child.lease = None

    # ---- leases
    def on_ctrl(self) -> bool:
        try:
            msg, fds, _, _ = socket.recv_fds(self.ctrl, 4096, 4)
        except OSError:
            return False
        if not msg:
            for fd in fds:
                os.close(fd)
            return False  # the server process is gone
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            return True
        lease = socket.socket(fileno=fds[0])
        try:
            req = json.loads(msg)
            tl = float(req["time_limit_s"])
        except (ValueError, KeyError, TypeError):
            lease.close()
            return True
        self.waiting.append((lease, tl))
        self.serve_waiting()
        return True

    def serve_waiting(self) -> None:
        while self.waiting and self.ready:
            lease, tl = self.waiting.pop(0)
            child = self.ready.pop(0)
            try:
                socket.send_fds(lease, [json.dumps({"pid": child.pid, "uid": child.uid}).encode()],
                                [child.sock.fileno()])
            except OSError:  # the caller gave up while waiting
                lease.close()
                self.ready.insert(0, child)
                continue
            child.sock.close()
            child.sock = None
            child.state = "leased"
            child.lease = lease
            child.deadline = time.monotonic() + tl + float(self.opts["grace_s"])
            self.sel.register(lease, selectors.EVENT_READ, ("lease", child))

    def on_lease(self, child: _Child) -> None:
        if child.lease is None:
            return
        try:
            data = child.lease.recv(4096)
        except OSError:
            data = b""
        if not data:  # the client is done with this child (or gave up)
            self.close_lease(child)
            self.kill(child)

    # ---- loop
    def step(self, timeout: float) -> bool:
        now = time.monotonic()
        for child in list(self.children.values()):
            if child.deadline is not None and now >= child.deadline and not child.wall:
                child.wall = True
                self.kill(child)
        deadlines = [c.deadline for c in self.children.values()
                     if c.deadline is not None and not c.wall]
        if self.next_spawn > now:
            deadlines.append(self.next_spawn)
        if deadlines:
            timeout = max(0.0, min([timeout] + [d - now for d in deadlines]))
        for key, _ in self.sel.select(timeout):
            if self.sel.get_map().get(key.fd) is not key:
                continue  # unregistered (and maybe the fd reused) by an earlier event
            kind, child = key.data
            if kind == "ctrl":
                if not self.on_ctrl():
                    return False
            elif kind == "hello":
                self.on_child_hello(child)
            elif kind == "pidfd":
                self.on_exit(child)
            elif kind == "lease":
                self.on_lease(child)
        # Forking costs the worker ~0.7 ms: serve pending requests first.
        if self.waiting or not self.ready or not self.sel.select(0):
            self.fill()
        return True

    def run(self) -> None:
        while self.step(5.0):
            pass

    def shutdown(self) -> None:
        for child in list(self.children.values()):
            self.kill(child)
        for child in list(self.children.values()):
            try:
                os.waitpid(child.pid, 0)
            except ChildProcessError:
                pass


def empty_root() -> str:
    """An empty directory, not writable by anyone, to chroot into (reused)."""
    path = os.path.join(tempfile.gettempdir(), f"nabla-sandbox-root-{os.geteuid()}")
    try:
        os.mkdir(path, 0o555)
    except FileExistsError:
        pass
    st = os.lstat(path)
    import stat as _stat

    if (
        _stat.S_ISDIR(st.st_mode)
        and st.st_uid == os.geteuid()
        and not st.st_mode & 0o222
        and not os.listdir(path)
    ):
        return path
    path = tempfile.mkdtemp(prefix="nabla-sandbox-root-")  # someone tampered: use a fresh one
    os.chmod(path, 0o555)
    return path


def _enter_user_namespace(uid: int, gid: int) -> bool:
    """Unprivileged fallback: become root of a fresh user namespace (host uid unchanged)."""
    if _libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
        return False
    try:
        with open("/proc/self/setgroups", "w") as fh:
            fh.write("deny")
        with open("/proc/self/uid_map", "w") as fh:
            fh.write(f"0 {uid} 1")
        with open("/proc/self/gid_map", "w") as fh:
            fh.write(f"0 {gid} 1")
    except OSError:
        return False
    return True


def _parse_args(argv: list[str]) -> dict[str, str]:
    opts: dict[str, str] = {}
    it = iter(argv)
    for arg in it:
        if arg.startswith("--"):
            opts[arg[2:].replace("-", "_")] = next(it)
    return opts


def main(argv: list[str] | None = None) -> None:
    raw = _parse_args(sys.argv[1:] if argv is None else argv)
    opts: dict[str, object] = {
        "pool_size": int(raw.get("pool_size", 2)),
        "uid_base": int(raw.get("uid_base", 1_900_000_000)),
        "uid_count": int(raw.get("uid_count", 64)),
        "insecure": raw.get("insecure", "0") == "1",
        "max_memory_mb": int(raw.get("max_memory_mb", 4096)),
        "max_cpu_s": int(raw.get("max_cpu_s", 120)),
        "grace_s": float(raw.get("grace_s", 0.5)),
        "simulate_missing": raw.get("simulate_missing", ""),
    }
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    preload()
    if "oneshot" in raw:
        _oneshot(int(raw["oneshot"]), opts)
        return
    worker = Worker(int(raw["control"]), opts)
    worker.prepare()
    gc.collect()
    gc.freeze()  # keep the collector from touching (and copying) inherited pages
    hello = worker.hello()
    try:
        worker.ctrl.send(json.dumps(hello).encode())
    except OSError:
        worker.shutdown()
        return
    try:
        if hello["ok"] or hello["insecure"]:
            worker.run()
        else:
            while worker.ctrl.recv(4096):
                pass  # refuse leases: the client will not send any
    finally:
        worker.shutdown()


def _oneshot(job_fd: int, opts: dict[str, object]) -> None:
    """A fresh interpreter per job with the same isolation (the benchmark baseline)."""
    netns = unshare_network()
    root = empty_root()
    cfg = {
        "insecure": opts["insecure"], "root_dir": root,
        "uid_mode": "setuid" if os.geteuid() == 0 else "none",
        "uid": int(opts["uid_base"]), "host_uid": os.geteuid(), "worker_pid": os.getppid(),
        "netns": netns, "max_memory_mb": opts["max_memory_mb"], "max_cpu_s": opts["max_cpu_s"],
    }
    global _CFG
    _CFG = cfg
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        enter_sandbox(cfg, seccomp.build_filter(), job_fd, devnull)
        run_job(JOB_FD)
    finally:
        os._exit(70)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("start the worker through server.sandbox.client")
