"""Isolating a sandbox child: what it imports before the door closes, and the layers
(network namespace, chroot to an empty directory, its own uid, no_new_privs,
capabilities dropped, rlimits, the seccomp filter) it enters before it reads a job.

Runs in the worker process and in its children; imports nothing of the server
but ``server.sandbox.{seccomp,wire}``.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal

from server.sandbox import seccomp

# numpy and everything an answer may reasonably import: once open() is denied
# and the root is empty, only modules already in sys.modules can be imported.
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


libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]
libc.prctl.restype = ctypes.c_int
libc.unshare.argtypes = [ctypes.c_int]
libc.unshare.restype = ctypes.c_int
CLONE_NEWNET = 0x40000000


def _prctl(option: int, arg: int) -> None:
    if libc.prctl(option, arg, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


def unshare_network() -> str | None:
    """Move the calling process (and all later children) into an empty netns."""
    if libc.unshare(CLONE_NEWNET) != 0:
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
        # (os.open, not open(): building a text file object costs a fresh child ~70
        # copy-on-write page faults, bench/bench_child_cost.py)
        fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
        try:
            os.write(fd, b"1000")
        finally:
            os.close(fd)
    except OSError:
        pass
    vm_bytes = int(cfg.get("baseline_vm") or 0) or vm_size()
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


def vm_size() -> int:
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
    if nr is None or libc.syscall(nr, ctypes.byref(hdr), ctypes.byref(data)) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")
