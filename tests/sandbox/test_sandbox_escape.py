"""The escape battery (issue 4, section 3).

Each hostile answer reports what its attack achieved (through stdout or its
result); each test asserts that the attack failed, that the status is
sensible, and that this process (the "server") and the worker are unharmed
and that no sandboxed process outlives its job. Where it is safe, a control
runs the same answer without the sandbox to show that the attack is real.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    SECRET,
    assert_no_stray_processes,
    call_args,
    own_processes,
    run_unsandboxed,
)

from server.sandbox import Sandbox, run_job

ARGS = call_args()


def attack(sb, body: str, *, time_limit_s: float = 1.0, prelude: str = "", **kw):
    """Run an answer whose backward() executes ``body`` and returns {"ok": x}."""
    indented = "\n".join("    " + line for line in body.strip("\n").splitlines())
    src = (f"import os, sys\nimport numpy as np\n{prelude}\ndef backward(x, W, dy):\n"
           f"{indented}\n    return {{'ok': x}}\n")
    worker = sb.worker_pid()
    r = run_job(src, [ARGS], time_limit_s=time_limit_s, **kw)
    assert r.status in ("ok", "time_limit", "memory_limit", "runtime_error", "invalid"), r
    if worker is not None:
        assert sb.worker_pid() == worker, "the attack took the worker down"
    assert_no_stray_processes(sb)
    return r


def report(expr: str) -> str:
    """Body that prints ``expr`` or the exception it raised."""
    return f"""
try:
    print("GOT", repr({expr}))
except BaseException as e:
    print("DENIED", type(e).__name__, e)
"""


def assert_denied(r, *needles_absent: str) -> None:
    assert "DENIED" in r.stdout, r
    assert "GOT" not in r.stdout, r
    for needle in (SECRET, *needles_absent):
        assert needle not in r.stdout + r.stderr + r.message


# ------------------------------------------------------------------ files

def test_read_etc_passwd(sandbox):
    assert "root:" in run_unsandboxed_text("__import__('pathlib').Path('/etc/passwd').read_text()")
    r = attack(sandbox, report("open('/etc/passwd').read()"))
    assert_denied(r, "root:")
    assert r.calls[0].status == "ok"


def test_read_the_database(sandbox, server_files):
    db = server_files["db"]
    assert SECRET.encode() in Path(db).read_bytes()  # the control: the file holds it
    r = attack(sandbox, report(f"open({str(db)!r}, 'rb').read()"))
    assert_denied(r)
    r = attack(sandbox, report(
        f"__import__('sqlite3').connect({str(db)!r}).execute('select * from secrets').fetchall()"
    ))
    assert_denied(r)


def test_read_the_instance_folder(sandbox, server_files):
    inst = server_files["instance"]
    r = attack(sandbox, report(f"os.listdir({str(inst)!r})"))
    assert_denied(r, "nabla.sqlite")
    r = attack(sandbox, report(f"open({str(server_files['upload'])!r}).read()"))
    assert_denied(r)


def test_read_the_server_config_and_source(sandbox, server_files):
    r = attack(sandbox, report(f"open({str(server_files['config'])!r}).read()"))
    assert_denied(r)
    r = attack(sandbox, report("open(np.__file__).read()[:50]"))
    assert_denied(r)


def test_the_root_directory_is_empty(sandbox):
    r = attack(sandbox, report("[os.listdir('/'), os.listdir('/tmp')]"))
    assert_denied(r)


def test_write_outside_the_sandbox(sandbox, server_files):
    targets = [server_files["base"] / "pwned.txt", Path("/tmp/nabla-sandbox-pwned.txt")]
    for target in targets:
        r = attack(sandbox, report(f"open({str(target)!r}, 'w').write('pwned')"))
        assert_denied(r)
        r = attack(sandbox, report(f"os.mkdir({str(target)!r})"))
        assert_denied(r)
        assert not target.exists()
    r = attack(sandbox, report("open('/pwned', 'w')"))
    assert_denied(r)


# ------------------------------------------------------------------ network

@pytest.fixture
def listener():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.3)
    yield srv
    srv.close()


def assert_nothing_arrived(srv: socket.socket) -> None:
    with pytest.raises(TimeoutError):
        conn, _ = srv.accept()
        conn.close()


def test_connect_to_a_tcp_listener(sandbox, listener):
    port = listener.getsockname()[1]
    body = report(f"__import__('socket').create_connection(('127.0.0.1', {port}), timeout=0.5)")
    run_unsandboxed_text(f"__import__('socket').create_connection(('127.0.0.1', {port})).close()")
    listener.accept()[0].close()  # the control connection arrived
    r = attack(sandbox, body)
    assert_denied(r)
    assert_nothing_arrived(listener)


def test_ctypes_socket_and_connect(sandbox, listener):
    port = listener.getsockname()[1]
    body = f"""
import ctypes, struct
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.socket(2, 1, 0)
print("socket", fd, ctypes.get_errno())
addr = struct.pack("<HH4s8x", 2, __import__('socket').htons({port}), bytes([127, 0, 0, 1]))
print("connect", libc.connect(3, addr, 16), libc.connect(fd, addr, 16))
"""
    r = attack(sandbox, body)
    assert "socket -1 1\n" in r.stdout, r  # EPERM from seccomp
    assert "connect -1 -1" in r.stdout, r
    assert_nothing_arrived(listener)


# ------------------------------------------------------------------ processes

def test_os_system(sandbox, server_files):
    target = server_files["base"] / "system-was-here"
    r = attack(sandbox, f"print('status', os.system('touch {target}'))")
    assert "status" in r.stdout and "status 0" not in r.stdout, r
    assert not target.exists()


def test_subprocess(sandbox, server_files):
    target = server_files["base"] / "subprocess-was-here"
    r = attack(sandbox, report(f"__import__('subprocess').run(['/usr/bin/touch', '{target}'])"))
    assert_denied(r)
    assert not target.exists()
    r = attack(sandbox, report("os.execv('/bin/sh', ['sh', '-c', 'echo hi'])"))
    assert_denied(r)
    r = attack(sandbox, report("os.posix_spawn('/bin/sh', ['sh'], {})"))
    assert_denied(r)


def test_os_fork_and_fork_bomb(sandbox):
    r = attack(sandbox, report("os.fork()"))
    assert_denied(r)
    r = attack(sandbox, "while True:\n    os.fork()")
    assert r.status == "ok" and r.calls[0].status == "runtime_error"
    assert "PermissionError" in r.calls[0].message


def test_threads_cannot_be_started(sandbox):
    r = attack(sandbox, report("__import__('threading').Thread(target=print).start()"))
    assert_denied(r)


def test_double_fork_and_setsid_to_outlive_the_job(sandbox):
    body = """
import time
try:
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(30)
        os._exit(0)
    print("GOT fork")
except BaseException as e:
    print("DENIED", type(e).__name__)
"""
    before = {p for p, _, _ in own_processes(sandbox)}
    r = attack(sandbox, body)
    assert_denied(r)
    time.sleep(0.1)
    assert_no_stray_processes(sandbox)
    after = {p for p, _, _ in own_processes(sandbox)}
    assert len(after - before) <= sandbox.pool_size  # only fresh pool children


def test_ctypes_execve_ptrace_process_vm_readv_unshare_fsetown(sandbox):
    body = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
argv = (ctypes.c_char_p * 2)(b"/bin/sh", None)
print("execve", libc.execve(b"/bin/sh", argv, None))
print("ptrace", libc.ptrace(16, os.getppid(), None, None))
buf = ctypes.create_string_buffer(64)
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
local = iovec(ctypes.addressof(buf), 64)
remote = iovec(0x400000, 64)
print("process_vm_readv", libc.process_vm_readv(os.getppid(), ctypes.byref(local), 1,
                                                ctypes.byref(remote), 1, 0))
print("unshare", libc.unshare(0x10000000))
print("setuid", libc.setuid(0))
print("chroot", libc.chroot(b".."))
print("fork", libc.fork())
r, w = os.pipe()
print("F_SETOWN", libc.fcntl(r, 8, os.getppid()))
print("F_SETSIG", libc.fcntl(r, 10, 9))
print("F_GETFL ok", libc.fcntl(r, 3) >= 0)
print("pidfd_open", libc.syscall(434, os.getppid(), 0))
print("prctl", libc.prctl(1, 0, 0, 0, 0))
"""
    r = attack(sandbox, body)
    assert "F_GETFL ok True" in r.stdout, r
    for name in ("execve", "ptrace", "process_vm_readv", "unshare", "setuid", "chroot", "fork",
                 "F_SETOWN", "F_SETSIG", "pidfd_open", "prctl"):
        assert f"{name} -1\n" in r.stdout, r
    assert r.calls[0].status == "ok"


def test_kill_the_parent_and_everyone(sandbox):
    pool = {p for p, _, _ in own_processes(sandbox)}
    r = attack(sandbox, report("os.kill(os.getppid(), 9)"))
    assert_denied(r)
    r = attack(sandbox, report("os.kill(-1, 9)"))
    assert_denied(r)
    r = attack(sandbox, report(f"os.kill({os.getpid()}, 9)"))  # the server itself
    assert_denied(r)
    r = attack(sandbox, report("os.killpg(os.getpgid(os.getppid()), 9)"))
    assert_denied(r)
    still = {p for p, _, _ in own_processes(sandbox)}
    # four pool children were used by the four jobs; the others were not killed
    assert len(pool & still) >= len(pool) - 4


def test_priorities_only_of_itself_and_only_lower(sandbox):
    """seccomp allows setpriority(PRIO_PROCESS, 0, n) (a child lowers its own
    priority once its result is sent): not on the worker, the server or a process
    group, and never back up; the job itself runs at the server's niceness, even
    when the child was prepared in the background."""
    server_nice = os.getpriority(os.PRIO_PROCESS, 0)
    r = attack(sandbox, "print('NICE', os.getpriority(os.PRIO_PROCESS, 0))")
    assert f"NICE {server_nice}\n" in r.stdout, r
    for target in ("os.PRIO_PROCESS, os.getppid()", f"os.PRIO_PROCESS, {os.getpid()}",
                   "os.PRIO_PGRP, 0", "os.PRIO_USER, 0"):
        r = attack(sandbox, report(f"os.setpriority({target}, 19)"))
        assert_denied(r)
    r = attack(sandbox, report("os.setpriority(os.PRIO_PROCESS, 0, 10) or "
                               "os.setpriority(os.PRIO_PROCESS, 0, 0)"))
    assert_denied(r)  # raising it back needs a privilege the child does not have
    assert "PermissionError" in r.stdout, r
    assert os.getpriority(os.PRIO_PROCESS, 0) == server_nice
    assert os.getpriority(os.PRIO_PROCESS, sandbox.worker_pid()) == server_nice


# ------------------------------------------------------------------ resources

# A time limit far above what the memory tests need: the loop fills ~512 MB of pages
# before the limit stops it, which took 0.45-6.5 s of wall time at load average 8.6 (with
# the old 3 s limit the result was sometimes time_limit: the flakiness this removes). What
# is proved is unchanged: memory, not time, stops each of them.
MEMORY_TEST_TIME_LIMIT_S = 30.0


def test_allocate_20_gb(sandbox):
    patient = {"time_limit_s": MEMORY_TEST_TIME_LIMIT_S}
    r = attack(sandbox, "a = np.ones(20 * 2**30 // 8)\nprint(a.sum())", **patient)
    assert r.status == "memory_limit", r
    assert "512 MB" in r.message
    r = attack(sandbox, "b = bytearray(20 * 2**30)", **patient)
    assert r.status == "memory_limit", r
    r = attack(sandbox, "keep = []\nwhile True:\n    keep.append(np.ones(2**24))", **patient)
    assert r.status == "memory_limit", r


def test_memory_limit_is_a_parameter(sandbox):
    body = "a = np.ones(200 * 2**20 // 8)\na[:] = 2"
    patient = {"time_limit_s": MEMORY_TEST_TIME_LIMIT_S}
    assert attack(sandbox, body, memory_mb=512, **patient).status == "ok"
    assert attack(sandbox, body, memory_mb=64, **patient).status == "memory_limit"


def test_infinite_loop(sandbox):
    r = attack(sandbox, "while True:\n    pass", time_limit_s=0.5)
    assert r.status == "time_limit", r
    assert "0.5 s" in r.message
    assert r.elapsed_ms < 1500


def test_sleep_1000(sandbox):
    t = time.monotonic()
    r = attack(sandbox, "import time\ntime.sleep(1000)", time_limit_s=0.5)
    assert r.status == "time_limit", r
    assert time.monotonic() - t < 1.5


def test_ignore_sigterm_and_spin(sandbox):
    body = """
import signal
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGXCPU, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
while True:
    pass
"""
    r = attack(sandbox, body, time_limit_s=0.5)
    assert r.status == "time_limit", r


def test_time_limit_covers_the_whole_job(sandbox):
    src = "import time\ndef backward(x, W, dy):\n    time.sleep(0.2)\n    return {'a': x}\n"
    r = run_job(src, [ARGS] * 10, time_limit_s=0.5)
    assert r.status == "time_limit"
    assert 1 <= len(r.calls) <= 3 and all(c.status == "ok" for c in r.calls)


def test_one_gb_of_stdout(sandbox):
    body = (
        "chunk = 'x' * 5000\nfor _ in range(200_000):\n    print(chunk)\nos.write(1, b'y' * 10**7)"
    )
    r = attack(sandbox, body, time_limit_s=3)
    assert r.status == "ok", r
    assert len(r.stdout) < 10_200
    assert "output truncated" in r.stdout


def test_deep_recursion(sandbox):
    r = attack(sandbox, "def f(n):\n    return f(n + 1)\nf(0)", prelude="")
    assert r.status == "ok" and r.calls[0].status == "runtime_error"
    assert "RecursionError" in r.calls[0].message
    assert r.calls[0].traceback.count("\n") < 60  # trimmed
    r = attack(sandbox, "sys.setrecursionlimit(10**7)\ndef f(n):\n    return f(n + 1) + 1\nf(0)")
    # a crash, a MemoryError, the time limit, or CPython catching it: never a hang
    assert r.status in ("runtime_error", "memory_limit", "time_limit", "ok"), r
    if r.status == "ok":
        assert r.calls[0].status == "runtime_error"


# ------------------------------------------------------------------ /proc and memory

def test_proc_environ_and_parent_memory(sandbox):
    for path in ("/proc/self/environ", "/proc/1/environ", "/proc/self/maps"):
        r = attack(sandbox, report(f"open({path!r}, 'rb').read()"))
        assert_denied(r)
    r = attack(sandbox, report("open(f'/proc/{os.getppid()}/mem', 'rb').read(16)"))
    assert_denied(r)
    r = attack(sandbox, report(f"open('/proc/{os.getpid()}/environ', 'rb').read()"))
    assert_denied(r)


def test_no_secret_in_the_inherited_environment(server_files):
    """A fresh worker started while the server holds secrets inherits none."""
    os.environ["NABLA_SECRET_KEY"] = SECRET
    held = open(server_files["db"], "rb")  # an open server file at start-up
    sb = Sandbox(pool_size=1)
    try:
        body = """
import ctypes
env = dict(os.environ)
libc = ctypes.CDLL(None)
environ = ctypes.POINTER(ctypes.c_char_p).in_dll(libc, "environ")
raw = []
i = 0
while environ[i] is not None:
    raw.append(environ[i])
    i += 1
fds = []
for fd in range(64):
    try:
        os.fstat(fd)
        fds.append(fd)
    except OSError:
        pass
print("ENV", env, raw, "FDS", fds)
"""
        src = "import os\ndef backward(x, W, dy):\n" + "\n".join(
            "    " + line for line in body.strip().splitlines()) + "\n    return {}\n"
        r = sb.run_job(src, [ARGS])
        assert r.status == "ok", r
        assert "ENV" in r.stdout and SECRET not in r.stdout
        assert "FDS [0, 1, 2, 3]" in r.stdout  # /dev/null x3 and the job socket
        worker = sb.worker_pid()
        env = Path(f"/proc/{worker}/environ").read_bytes()
        assert SECRET.encode() not in env
        names = {item.split(b"=")[0] for item in env.split(b"\0") if item}
        assert names <= {b"PATH", b"LANG", b"LC_ALL", b"OPENBLAS_NUM_THREADS", b"OMP_NUM_THREADS",
                         b"MKL_NUM_THREADS", b"NUMEXPR_NUM_THREADS", b"VECLIB_MAXIMUM_THREADS",
                         b"GOTO_NUM_THREADS"}
        for fd in os.listdir(f"/proc/{worker}/fd"):
            try:
                target = os.readlink(f"/proc/{worker}/fd/{fd}")
            except FileNotFoundError:
                continue  # closed meanwhile (a lease or a child's socket)
            assert not target.startswith("/") or target == "/dev/null", target
    finally:
        sb.close()
        held.close()
        del os.environ["NABLA_SECRET_KEY"]


# ------------------------------------------------------------------ results

def test_return_an_object_array(sandbox):
    r = attack(sandbox, "return {'dW': np.array([{'evil': 1}, None], dtype=object)}")
    assert r.calls[0].status == "invalid_result" and "object" in r.calls[0].message


def test_return_a_subclass_with_a_hostile_array_method(sandbox):
    prelude = """
class Evil(np.ndarray):
    def __array__(self, *a, **k):
        os.kill(os.getppid(), 9)
        raise SystemExit
    def __float__(self):
        raise SystemExit
class Duck:
    def __array__(self, *a, **k):
        return np.array([None, os], dtype=object)
    def __len__(self):
        return 10**12
class BigDuck:
    def __array__(self, *a, **k):
        return np.zeros(10**9)
"""
    r = attack(sandbox, "return {'dW': np.zeros(3).view(Evil)}", prelude=prelude)
    assert r.calls[0].status == "invalid_result" and "subclass" in r.calls[0].message
    r = attack(sandbox, "return {'dW': Duck()}", prelude=prelude)
    assert r.calls[0].status == "invalid_result"
    r = attack(sandbox, "return {'dW': [Duck()]}", prelude=prelude)
    assert r.calls[0].status == "invalid_result"
    r = attack(sandbox, "return {'dW': [BigDuck()]}", prelude=prelude)
    assert r.status == "memory_limit"


def test_return_a_huge_array(sandbox):
    r = attack(sandbox, "return {'dW': np.zeros(5 * 10**7)}")
    assert r.calls[0].status == "invalid_result" and "elements" in r.calls[0].message
    r = attack(sandbox, "return {f'g{i}': np.zeros(10**6) for i in range(16)}")
    assert r.calls[0].status == "invalid_result" and "bytes" in r.calls[0].message


@pytest.mark.parametrize(
    "forgery",
    [
        # a frame that announces an enormous payload
        "os.write(3, struct.pack('<4sIQ', b'NBR1', 2, 2**62) + b'{}')",
        # a well-formed 'ok' frame for an object array
        "h = json.dumps({'k': 'call', 'i': 0, 's': 'ok', 'a': [['dW', '|O', [2]]]}).encode()\n"
        "os.write(3, struct.pack('<4sIQ', b'NBR1', len(h), 16) + h + b'x' * 16)",
        # a shape whose element count overflows
        "h = json.dumps({'k': 'call', 'i': 0, 's': 'ok',\n"
        "                'a': [['dW', '<f8', [2**40, 2**40]]]}).encode()\n"
        "os.write(3, struct.pack('<4sIQ', b'NBR1', len(h), 8) + h + b'x' * 8)",
        # an .npy/pickle blob instead of a frame
        "os.write(3, b'\\x93NUMPY\\x01\\x00' + b'cos\\nsystem\\n(S\"id\"\\ntR.')",
        # a deeply nested JSON header
        "h = b'[' * 100000 + b']' * 100000\n"
        "os.write(3, struct.pack('<4sIQ', b'NBR1', len(h), 0) + h)",
        # a forged final frame claiming success, then garbage
        "h = json.dumps({'k': 'done', 's': 'ok'}).encode()\n"
        "os.write(3, struct.pack('<4sIQ', b'NBR1', len(h), 0) + h + b'garbage' * 1000)",
    ],
)
def test_forged_result_frames(sandbox, forgery):
    prelude = "import json, struct"
    r = attack(sandbox, forgery, prelude=prelude)
    assert r.status == "ok", r
    assert len(r.calls) == 1
    assert r.calls[0].status == "invalid_result", r
    assert r.calls[0].outputs == {}


def test_monkeypatched_numpy_does_not_reach_the_parent(sandbox):
    prelude = """
np.allclose = lambda *a, **k: True
np.isclose = lambda a, b, *r, **k: np.ones(np.shape(a), dtype=bool)
np.array_equal = lambda *a, **k: True
np.core = None
"""
    r = attack(sandbox, "return {'dW': x.T @ dy * 0 + 123.0}", prelude=prelude)
    got = r.calls[0].outputs["dW"]
    want = ARGS["x"].T @ ARGS["dy"]
    assert not np.allclose(got, want)
    assert not np.isclose(got, want).all()
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(got, want)


def test_import_of_an_unavailable_module(sandbox):
    for module in ("scipy", "sqlite3", "torch", "http.client"):
        r = run_job(f"import {module}\ndef backward(**kw):\n    return {{}}\n", [ARGS])
        assert r.status == "runtime_error", r
        assert "No module named" in r.message or "PermissionError" in r.message, r
    r = attack(sandbox, report("__import__('urllib.request').request.urlopen('http://127.0.0.1')"))
    assert_denied(r)


def run_unsandboxed_text(expr: str) -> str:
    """Control: evaluate an attack expression with no sandbox (safe ones only)."""
    src = f"import os\ndef backward(**kw):\n    return repr({expr})\n"
    return str(run_unsandboxed(src, {}))


@pytest.mark.parametrize(
    "body, words",
    [
        ("import ctypes\nctypes.string_at(0)", "segmentation fault"),
        ("os.abort()", "aborted"),
        ("os._exit(0)", "exited (status 0)"),
        ("os.close(3)", "exited (status 70)"),
    ],
)
def test_crashes_only_kill_the_answers_process(sandbox, body, words):
    r = attack(sandbox, body)
    assert r.status == "runtime_error", r
    assert words in r.message
    assert run_job(CORRECT_SRC, [ARGS]).status == "ok"


CORRECT_SRC = "def backward(x, W, dy):\n    return {'dW': x.T @ dy}\n"


def test_a_forged_frame_cannot_make_the_server_buffer_more_than_the_output_limit(sandbox):
    body = ("import struct, json\n"
            "h = json.dumps({'k': 'call', 'i': 0, 's': 'ok', 'a': []}).encode()\n"
            "os.write(3, struct.pack('<4sIQ', b'NBR1', len(h), 2 * 2**20) + h)\n"
            "os.write(3, b'x' * 2**20)")
    r = attack(sandbox, body, max_output_bytes=1 << 20)
    assert r.calls[0].status == "invalid_result"
    assert "budget" in r.calls[0].message
    r = attack(sandbox, "return {'b': np.ones(2**18, dtype=bool)}", max_output_bytes=1 << 20)
    assert r.calls[0].status == "invalid_result" and "as float64" in r.calls[0].message
