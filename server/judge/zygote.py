"""The judge's zygote, and the judge processes it forks (this module runs there).

The server starts the zygote once per app process with an empty environment
(``python -I -B -c BOOTSTRAP ROOT FD TASKS``). It imports the tasks module (for
grading: numpy, sympy and the engine) once, then waits on its control socket
(FD, a SOCK_SEQPACKET socket to the server). Each ``spawn`` request forks a
judge process, which gets one end of a new socket pair; the zygote sends the
other end and a pidfd of the judge to the server (SCM_RIGHTS) and forgets
both. A judge process answers frames (``server.judge.wire``) with the tasks
module's ``handle(message, report) -> dict`` until the server closes its socket;
``report(frame)`` sends a frame ahead of the answer (progress).

A judge process runs under RLIMIT_AS (its size at fork plus ``memory_mb``; a
message's own ``memory_mb`` lowers it, for that message, to so much more than
the process holds when it starts) and dies with the
zygote (PR_SET_PDEATHSIG); ``nice`` in the spawn request lowers its priority
(staff work). The zygote exits when the server closes the control socket (the
server exiting, too). The wall-clock limit is the server's: it kills a judge
process through its pidfd.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import json
import os
import resource
import signal
import socket
import sys
import threading
import traceback

BOOTSTRAP = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from server.judge.zygote import main; main(sys.argv[2:])"
)
PR_SET_PDEATHSIG = 1
MAX_CONTROL_BYTES = 4096


def main(argv: list[str]) -> None:
    control_fd, tasks_name = int(argv[0]), argv[1]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when we stop
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # judge processes are reaped by the kernel
    control = socket.socket(fileno=control_fd)
    try:
        tasks = importlib.import_module(tasks_name)
        preload = getattr(tasks, "preload", None)
        if preload is not None:
            preload()
    except Exception:
        control.send(json.dumps({"ready": False, "error": traceback.format_exc(limit=-3)})
                     .encode()[:MAX_CONTROL_BYTES])
        os._exit(1)
    gc.collect()
    gc.freeze()  # what the judges inherit is never scanned, so its pages stay shared
    control.send(json.dumps({"ready": True, "pid": os.getpid()}).encode())
    while True:
        try:
            data = control.recv(MAX_CONTROL_BYTES)
        except InterruptedError:
            continue
        if not data:
            break  # the server closed the socket, or exited
        try:
            request = json.loads(data)
            memory_mb = int(request["memory_mb"])
            niceness = int(request.get("nice", 0))
        except (ValueError, KeyError, TypeError):
            control.send(json.dumps({"error": "malformed request"}).encode())
            continue
        _spawn(control, tasks, memory_mb, niceness)
    os._exit(0)


def _spawn(control: socket.socket, tasks, memory_mb: int, niceness: int = 0) -> None:
    ours, theirs = socket.socketpair()
    zygote = os.getpid()
    pid = os.fork()
    if pid == 0:  # the judge process
        try:
            control.close()
            ours.close()
            if niceness > 0:
                os.nice(niceness)  # staff work yields the CPU to the web workers
            _judge(theirs, tasks, zygote, memory_mb)
        finally:
            os._exit(1)
    theirs.close()
    try:
        pidfd = os.pidfd_open(pid)
    except OSError as exc:  # it died at once (reaped already)
        ours.close()
        control.send(json.dumps({"error": f"judge process {pid} is gone: {exc}"}).encode())
        return
    try:
        socket.send_fds(control, [json.dumps({"pid": pid}).encode()], [ours.fileno(), pidfd])
    finally:
        ours.close()
        os.close(pidfd)


def _die_with_parent(parent: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the zygote died before prctl
        os._exit(0)


def _address_space_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _judge(sock: socket.socket, tasks, zygote: int, memory_mb: int) -> None:
    from server.judge import wire

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    _die_with_parent(zygote)
    limit = _address_space_bytes() + (memory_mb << 20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    handle = tasks.handle

    def report(frame: dict) -> None:  # a frame before the answer (progress)
        wire.send(sock, frame)

    while True:
        try:
            message = wire.receive(sock)
        except wire.FrameError:
            os._exit(0)  # the server closed our socket
        # A message may allow itself less than the process may use (a student's draw):
        # so much more than the process holds now
        wanted = message.get("memory_mb") if isinstance(message, dict) else None
        soft = (min(limit, _address_space_bytes() + (wanted << 20))
                if isinstance(wanted, int) and wanted > 0 else limit)
        try:
            if soft != limit:
                resource.setrlimit(resource.RLIMIT_AS, (soft, limit))
            reply = handle(message, report)
        except MemoryError:
            reply = {"status": "memory", "recycle": True}
        except wire.FrameError:
            os._exit(0)  # the server stopped listening (it killed us, or closed)
        except Exception:
            text = traceback.format_exc(limit=-8)
            reply = {"status": "error", "message": text[-4000:]}
        finally:
            if soft != limit:
                resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        # A thread left running (sympy's simplify, abandoned at its time limit) would
        # slow every later job of this process: start afresh instead.
        if threading.active_count() > 1:
            reply["recycle"] = True
        try:
            wire.send(sock, reply)
        except (wire.FrameError, MemoryError):
            os._exit(0)
        if reply.get("recycle"):
            sys.stdout.flush()
            os._exit(0)
