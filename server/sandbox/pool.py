"""The sandbox worker process: a pool of sandboxed children forked ahead of time.

Started by ``server.sandbox.client`` with an empty environment as
``python -I -c <bootstrap> --control FD ...``. It imports the standard library,
numpy (and the numpy submodules that numpy would otherwise import lazily), and
``server.sandbox.{seccomp,wire,isolation,child}``; nothing else from the server. It never reads
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

import gc
import json
import os
import selectors
import signal
import socket
import sys
import tempfile
import time

from server.sandbox import seccomp
from server.sandbox.child import (
    child_main,
    run_job,
    use_config,
)
from server.sandbox.isolation import (
    JOB_FD,
    READY,
    enter_sandbox,
    libc,
    preload,
    unshare_network,
    vm_size,
)

WARM_UP_IDLE_S = 1.0  # a child warms up only if no child was leased for this long
BACKGROUND_NICE = 19  # children prepare (and end) at this niceness: idle CPU only
URGENT_READY = 3  # fewer ready children than one numpy grade leases: prepare at full speed


def should_warm_up(callers_waiting: bool, idle_s: float = float("inf")) -> bool:
    """Whether a new child runs the warm-up job before it says ready. Warming up
    costs ~1.1 ms of CPU and saves ~0.2 ms of the job's (bench/bench_child_cost.py):
    worth it only when the child will wait in an idle pool: not when callers are
    queueing, not while children are being leased (a child was leased in the last
    WARM_UP_IDLE_S: submissions come back to back and the refill competes with
    them), and not while every CPU is busy (1-minute load average at or above the
    CPU count), where that CPU would be taken from the jobs themselves."""
    if callers_waiting or idle_s < WARM_UP_IDLE_S:
        return False
    try:
        return os.getloadavg()[0] < (os.cpu_count() or 1)
    except OSError:
        return True


class _Child:
    __slots__ = ("pid", "pidfd", "sock", "uid", "state", "lease", "deadline", "wall", "buf",
                 "background")

    def __init__(self, pid: int, pidfd: int, sock: socket.socket, uid: int) -> None:
        self.pid, self.pidfd, self.sock, self.uid = pid, pidfd, sock, uid
        self.state = "preparing"
        self.lease: socket.socket | None = None
        self.deadline: float | None = None
        self.wall = False
        self.buf = b""
        self.background = False  # runs at BACKGROUND_NICE (preparing, or ending)


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
        self.last_lease = float("-inf")
        self.nice = os.getpriority(os.PRIO_PROCESS, 0)
        self.can_boost = False  # lowering a child's niceness again needs root

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
        self.can_boost = uid_mode == "setuid" and self.nice < BACKGROUND_NICE
        self.cfg = {
            "insecure": insecure, "root_dir": root, "uid_mode": uid_mode, "uid": 0,
            "host_uid": host_uid, "worker_pid": os.getpid(), "netns": netns,
            "seccomp_error": seccomp_error, "max_memory_mb": self.opts["max_memory_mb"],
            "max_cpu_s": self.opts["max_cpu_s"], "baseline_vm": vm_size() + (16 << 20),
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
        # While a grade's worth of children is ready, a new one prepares in the
        # background (idle CPU only): it is not on anyone's critical path yet.
        background = (self.can_boost and not self.waiting
                      and len(self.ready) >= URGENT_READY)
        cfg = dict(self.cfg, uid=uid,
                   warm_up=should_warm_up(bool(self.waiting),
                                          time.monotonic() - self.last_lease),
                   end_nice=BACKGROUND_NICE if self.can_boost else None)
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
        if background:
            # Set here, not by the child itself: a boost (prioritize) may come before
            # the child has run a single instruction, and must not be undone by it.
            self.set_nice(pid, BACKGROUND_NICE)
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            os.kill(pid, signal.SIGKILL)  # still our unreaped child: the pid cannot be reused
            os.waitpid(pid, 0)
            ours.close()
            self.free_uids.append(uid)
            raise
        child = _Child(pid, pidfd, ours, uid)
        child.background = background
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

    def boost(self, child: _Child) -> None:
        """Back to the worker's niceness (root may lower a niceness again)."""
        child.background = False
        self.set_nice(child.pid, self.nice)

    @staticmethod
    def set_nice(pid: int, nice: int) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, pid, nice)
        except OSError:
            pass  # it has just exited

    def prioritize(self) -> None:
        """Background children get full priority when someone needs them: callers
        wait, or fewer than a grade's worth are ready (preparing ones); too many
        ending ones pile up and hold uids and memory (ending ones)."""
        if not self.can_boost:
            return
        urgent = bool(self.waiting) or len(self.ready) < URGENT_READY
        ending = [c for c in self.children.values() if c.state == "ending"]
        for child in self.children.values():
            if child.background and (
                (urgent and child.state == "preparing")
                or (child.state == "ending" and len(ending) > self.pool_size)
            ):
                self.boost(child)

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
            if child.background:  # the job runs at the worker's priority
                self.boost(child)
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
            self.last_lease = time.monotonic()
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
            child.state = "ending"  # its exit runs at BACKGROUND_NICE (child.run_job)
            child.background = self.can_boost

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
        self.prioritize()
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
    if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
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
    use_config(cfg)
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        enter_sandbox(cfg, seccomp.build_filter(), job_fd, devnull)
        run_job(JOB_FD)
    finally:
        os._exit(70)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("start the worker through server.sandbox.client")
