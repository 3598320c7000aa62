"""The job, inside a sandboxed child: read the job frame, run the student's
``backward`` under the job's limits, send back arrays or an error
(``server.sandbox.wire``'s frames, never pickle).
"""

from __future__ import annotations

import builtins
import io
import json
import linecache
import marshal
import os
import resource
import signal
import sys
import traceback
import types

import numpy as np

from server.sandbox import seccomp, wire
from server.sandbox.isolation import (
    FAILED,
    JOB_FD,
    MAX_JOB_BYTES,
    MAX_TEXT,
    READY,
    STUDENT_FILE,
    TRACEBACK_FRAMES,
    SetupError,
    enter_sandbox,
)


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
    header = wire.decode_job_header(_read_exact(fd, hlen))
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
    # The result is sent: tearing this process down (~1 ms of CPU) is nobody's
    # critical path, so it runs on idle CPU (the worker raises the priority again
    # if ending children pile up). seccomp allows setpriority on itself only.
    end_nice = _CFG.get("end_nice")
    if end_nice:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, int(end_nice))  # type: ignore[call-overload]
        except OSError:
            pass
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
        if header.get("code"):  # compiled by the server (server/sandbox/source.py)
            start, length = header["code"]
            code = marshal.loads(bytes(blob[start:start + length]))
        else:
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
    header = wire.decode_job_header(data[12:12 + hlen])
    blob = bytearray(data[12 + hlen + 8:])
    sink: list[bytes] = []

    def send(head: dict[str, object], payload: list[bytes] | None = None) -> None:
        body = json.dumps(head).encode()
        sink.append(wire.FRAME_HEAD.pack(wire.RESULT_MAGIC, len(body), 0) + body)
        sink.append(b"".join(payload or []))

    execute_job(header, blob, send)


_CFG: dict[str, object] = {}


def use_config(cfg: dict[str, object]) -> None:
    """The child's settings (limits, uid, root), as the worker prepared them."""
    global _CFG
    _CFG = cfg


def child_main(cfg: dict[str, object], filt: seccomp.Filter | None, job_fd: int,
               devnull: int) -> None:
    """Body of a pooled child: sandbox, warm up, say ready, run one job, exit."""
    code = 0
    try:
        use_config(cfg)
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
