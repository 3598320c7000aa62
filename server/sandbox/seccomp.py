"""A seccomp-BPF allowlist for sandboxed children, built with plain ctypes.

Imported by the sandbox worker (a process that imports only the standard
library and numpy), so this module must not import anything from ``server``.

The filter is built once per worker; each child patches its own pid into the
few instructions that compare a pid argument (kill/tgkill may only target the
child itself) and loads it with ``prctl(PR_SET_SECCOMP)``: about 0.2 ms.

Policy: an allowlist of the system calls a running CPython + numpy process
needs (memory, signals on itself, time, reading and writing already open
descriptors). ``open``/``openat``/``openat2``/``creat`` fail with EACCES,
``ioctl`` with ENOTTY, ``clone3`` with ENOSYS (glibc then falls back to
``clone``, which is denied), everything else with EPERM. A call made through a
foreign ABI (x32, or i386 via ``int 0x80``) kills the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import platform

# struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6]
_OFF_NR = 0
_OFF_ARCH = 4


def _arg_lo(i: int) -> int:  # low 32 bits of args[i] (little-endian)
    return 16 + 8 * i


_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K

RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_MODE_FILTER = 2

AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_X32_SYSCALL_BIT = 0x40000000

# x86_64 numbers (arch/x86/entry/syscalls/syscall_64.tbl). Other architectures
# resolve names through libseccomp when it is installed.
X86_64 = {
    "read": 0, "write": 1, "open": 2, "close": 3, "stat": 4, "fstat": 5, "lstat": 6,
    "poll": 7, "lseek": 8, "mmap": 9, "mprotect": 10, "munmap": 11, "brk": 12,
    "rt_sigaction": 13, "rt_sigprocmask": 14, "rt_sigreturn": 15, "ioctl": 16,
    "pread64": 17, "pwrite64": 18, "readv": 19, "writev": 20, "access": 21, "pipe": 22,
    "select": 23, "sched_yield": 24, "mremap": 25, "msync": 26, "mincore": 27,
    "madvise": 28, "dup": 32, "dup2": 33, "pause": 34, "nanosleep": 35,
    "getitimer": 36, "alarm": 37, "setitimer": 38, "getpid": 39, "socket": 41,
    "connect": 42, "sendto": 44, "recvfrom": 45, "sendmsg": 46, "recvmsg": 47,
    "shutdown": 48, "getsockname": 51, "getpeername": 52, "getsockopt": 55,
    "clone": 56, "fork": 57, "vfork": 58, "execve": 59, "exit": 60, "kill": 62,
    "uname": 63, "fcntl": 72, "getdents": 78, "getcwd": 79, "readlink": 89,
    "umask": 95, "gettimeofday": 96, "getrlimit": 97, "getrusage": 98, "sysinfo": 99,
    "times": 100, "ptrace": 101, "getuid": 102, "getgid": 104, "geteuid": 107,
    "getegid": 108, "getppid": 110, "getpgrp": 111, "getgroups": 115,
    "getresuid": 118, "getresgid": 120, "getpgid": 121, "getsid": 124,
    "rt_sigpending": 127, "rt_sigtimedwait": 128, "rt_sigsuspend": 130,
    "sigaltstack": 131, "statfs": 137, "fstatfs": 138, "getpriority": 140,
    "setpriority": 141,
    "sched_getparam": 143, "sched_getscheduler": 145, "sched_get_priority_max": 146,
    "sched_get_priority_min": 147, "arch_prctl": 158, "setrlimit": 160, "gettid": 186,
    "tkill": 200, "time": 201, "futex": 202, "sched_getaffinity": 204,
    "getdents64": 217, "set_tid_address": 218, "restart_syscall": 219,
    "clock_gettime": 228, "clock_getres": 229, "clock_nanosleep": 230,
    "exit_group": 231, "tgkill": 234, "openat": 257, "newfstatat": 262,
    "readlinkat": 267, "faccessat": 269, "pselect6": 270, "ppoll": 271,
    "set_robust_list": 273, "get_robust_list": 274, "eventfd2": 290, "dup3": 292,
    "pipe2": 293, "prlimit64": 302, "getcpu": 309, "process_vm_readv": 310,
    "process_vm_writev": 311, "getrandom": 318, "memfd_create": 319,
    "execveat": 322, "membarrier": 324, "statx": 332, "rseq": 334, "clone3": 435,
    "close_range": 436, "openat2": 437, "faccessat2": 439, "creat": 85,
}

ALLOWED = (
    # memory
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "mincore", "msync",
    # descriptors that are already open (the result socket, /dev/null)
    "read", "write", "readv", "writev", "pread64", "close", "close_range", "lseek",
    "fstat", "stat", "lstat", "newfstatat", "statx", "statfs", "fstatfs",
    "dup", "dup2", "dup3", "pipe", "pipe2", "eventfd2",
    "sendto", "recvfrom", "sendmsg", "recvmsg", "shutdown", "getsockname",
    "getpeername", "getsockopt",
    "poll", "ppoll", "select", "pselect6",
    # paths inside the empty root: harmless, and CPython probes them
    "access", "faccessat", "faccessat2", "readlink", "readlinkat", "getcwd",
    "getdents", "getdents64", "umask",
    # signals (delivery to itself only: see kill/tgkill below)
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending",
    "rt_sigtimedwait", "rt_sigsuspend", "sigaltstack", "pause", "alarm",
    "setitimer", "getitimer", "restart_syscall",
    # time, identity, limits, scheduling queries
    "nanosleep", "clock_nanosleep", "clock_gettime", "clock_getres", "gettimeofday",
    "time", "times", "getrusage", "getrlimit", "setrlimit", "sysinfo", "uname",
    "getpid", "gettid", "getppid", "getuid", "geteuid", "getgid", "getegid",
    "getresuid", "getresgid", "getgroups", "getpgrp", "getpgid", "getsid",
    "getpriority", "sched_yield", "sched_getaffinity", "sched_getparam",
    "sched_getscheduler", "sched_get_priority_max", "sched_get_priority_min",
    "getcpu", "getrandom",
    # threads/runtime plumbing of glibc (no thread can be created: clone is denied)
    "futex", "set_robust_list", "get_robust_list", "set_tid_address", "rseq",
    "arch_prctl", "membarrier",
    "exit", "exit_group",
)
ERRNO_RULES = {
    "open": errno.EACCES, "openat": errno.EACCES, "openat2": errno.EACCES,
    "creat": errno.EACCES, "ioctl": errno.ENOTTY, "clone3": errno.ENOSYS,
}
# Allowed only when the given argument equals the child's own pid (or 0 for
# prlimit64: "this process").
SELF_ONLY = {"kill": 0, "tgkill": 0}
# Allowed only for these values of one argument. fcntl: F_DUPFD, F_GETFD, F_SETFD,
# F_GETFL, F_SETFL, F_DUPFD_CLOEXEC; not F_SETOWN/F_SETSIG, which would make the
# kernel signal another process on I/O.
ARG_ALLOWLIST = {"fcntl": (1, (0, 1, 2, 3, 4, 1030))}
# Allowed only when every listed argument is 0: setpriority(PRIO_PROCESS, 0, n)
# changes the calling process's own niceness (raising it is all an unprivileged
# process may do: RLIMIT_NICE is 0); a child lowers its priority once its result is
# sent (its exit is nobody's critical path). Never another process's.
ARGS_ZERO = {"setpriority": (0, 1)}
PID_PLACEHOLDER = 0x7FFFFFF0


class SeccompUnavailable(RuntimeError):
    pass


def machine() -> str:
    m = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


def syscall_table(arch: str | None = None) -> dict[str, int]:
    """Name -> number for the running architecture."""
    arch = arch or machine()
    if arch == "x86_64":
        return dict(X86_64)
    if arch not in AUDIT_ARCH:
        raise SeccompUnavailable(f"seccomp filter: architecture {arch!r} is not supported")
    return _table_from_libseccomp()


def _table_from_libseccomp() -> dict[str, int]:
    path = ctypes.util.find_library("seccomp")
    if not path:
        raise SeccompUnavailable(
            f"seccomp filter: no built-in syscall table for {machine()} and "
            "libseccomp.so.2 is not installed to resolve syscall numbers"
        )
    lib = ctypes.CDLL(path)
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    names = set(X86_64)
    table = {}
    for name in names:
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr >= 0:  # negative: does not exist on this architecture
            table[name] = nr
    return table


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


class Filter:
    """A compiled filter; ``load(pid)`` installs it on the calling process."""

    def __init__(self, instructions: list[tuple[int, int, int, int]], pid_slots: list[int]):
        self.instructions = instructions
        self._array = (_SockFilter * len(instructions))(
            *[_SockFilter(*ins) for ins in instructions]
        )
        self._prog = _SockFprog(len(instructions), self._array)
        self._pid_slots = pid_slots
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p,
                                     ctypes.c_ulong, ctypes.c_ulong]
        self._libc.prctl.restype = ctypes.c_int

    def load(self, pid: int) -> None:
        for i in self._pid_slots:
            self._array[i].k = pid
        if self._libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER,
                            ctypes.addressof(self._prog), 0, 0) != 0:
            err = ctypes.get_errno()
            raise SeccompUnavailable(f"prctl(PR_SET_SECCOMP): {errno.errorcode.get(err, err)}")


def _actions(table: dict[str, int]) -> dict[int, tuple[int, ...] | list[tuple]]:
    """System call number -> what the filter does with it: ``(ret_value,)``, or a
    block of instructions that looks at the arguments and returns (the number is
    known when a block runs). Numbers not listed are denied with EPERM."""
    eperm = RET_ERRNO | errno.EPERM
    out: dict[int, tuple[int, ...] | list[tuple]] = {}
    for name in ALLOWED:
        if name in table:
            out[table[name]] = (RET_ALLOW,)
    for name, err in ERRNO_RULES.items():
        if name in table:
            out[table[name]] = (RET_ERRNO | err,)
    for name, arg in SELF_ONLY.items():
        if name in table:
            out[table[name]] = [(_LD_W_ABS, 0, 0, _arg_lo(arg)),
                                (_JEQ_K, 0, 1, PID_PLACEHOLDER),
                                (_RET_K, 0, 0, RET_ALLOW), (_RET_K, 0, 0, eperm)]
    for name, (arg, values) in ARG_ALLOWLIST.items():
        if name in table:
            block: list[tuple] = [(_LD_W_ABS, 0, 0, _arg_lo(arg))]
            for value in values:
                block += [(_JEQ_K, 0, 1, value), (_RET_K, 0, 0, RET_ALLOW)]
            out[table[name]] = [*block, (_RET_K, 0, 0, eperm)]
    zero_args = dict(ARGS_ZERO)
    zero_args["prlimit64"] = (0,)  # prlimit64(0, ...) is setrlimit/getrlimit on itself
    for name, args in zero_args.items():
        if name in table:
            block = []
            for k, arg in enumerate(args):  # arg != 0: jump to the EPERM at the end
                block += [(_LD_W_ABS, 0, 0, _arg_lo(arg)),
                          (_JEQ_K, 0, 2 * (len(args) - k) - 1, 0)]
            out[table[name]] = [*block, (_RET_K, 0, 0, RET_ALLOW), (_RET_K, 0, 0, eperm)]
    return out


def _search(segments: list[tuple[int, object]]) -> list[tuple[int, int, int, int]]:
    """A binary search over ``segments`` (first number, action), sorted, each
    running up to the next one's first number: ``nr >= first of the middle one``
    jumps to the upper half, else falls through to the lower half."""
    if len(segments) == 1:
        action = segments[0][1]
        return list(action) if isinstance(action, list) else [(_RET_K, 0, 0, action[0])]
    mid = len(segments) // 2
    lower, upper = _search(segments[:mid]), _search(segments[mid:])
    if len(lower) > 255:  # a classic BPF jump offset is one byte
        raise ValueError("seccomp program too large for a binary search")
    return [(_JGE_K, len(lower), 0, segments[mid][0]), *lower, *upper]


def build_filter(arch: str | None = None) -> Filter:
    """The allowlist as a binary search on the call number (~8 comparisons per
    call, instead of up to 120 in a linear list): the kernel emulates the program
    once per call number when loading it (to cache constant answers), so a
    linear list made each child's load cost ~0.2 ms more (bench/bench_child_cost.py)."""
    arch = arch or machine()
    table = syscall_table(arch)
    audit_arch = AUDIT_ARCH[arch]
    kill = RET_KILL_PROCESS
    prog: list[tuple[int, int, int, int]] = [
        (_LD_W_ABS, 0, 0, _OFF_ARCH),
        (_JEQ_K, 1, 0, audit_arch),
        (_RET_K, 0, 0, kill),
        (_LD_W_ABS, 0, 0, _OFF_NR),
    ]
    if arch == "x86_64":
        prog.append((_JGE_K, 0, 1, _X32_SYSCALL_BIT))
        prog.append((_RET_K, 0, 0, kill))
    deny = (RET_ERRNO | errno.EPERM,)
    points: list[tuple[int, object]] = [(0, deny)]  # (first number, action) from there on
    for nr, action in sorted(_actions(table).items()):
        if points[-1][0] == nr:  # right after the previous number
            points.pop()
        points += [(nr, action), (nr + 1, deny)]
    segments: list[tuple[int, object]] = []
    for first, action in points:  # merge runs of one answer; a block is for one number
        if not (segments and segments[-1][1] == action and not isinstance(action, list)):
            segments.append((first, action))
    prog += _search(segments)
    pid_slots = [i for i, ins in enumerate(prog) if ins[0] == _JEQ_K and ins[3] == PID_PLACEHOLDER]
    return Filter(prog, pid_slots)
