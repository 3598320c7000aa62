"""Unit tests of the seccomp program builder and the result decoder."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.sandbox import seccomp, wire


def test_x86_64_numbers_agree_with_libseccomp():
    path = ctypes.util.find_library("seccomp")
    assert path, "libseccomp.so.2 is expected on this machine kind"
    lib = ctypes.CDLL(path)
    lib.seccomp_syscall_resolve_name_arch.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
    lib.seccomp_syscall_resolve_name_arch.restype = ctypes.c_int
    arch = seccomp.AUDIT_ARCH["x86_64"]
    for name, nr in seccomp.X86_64.items():
        assert lib.seccomp_syscall_resolve_name_arch(arch, name.encode()) == nr, name


def test_program_is_well_formed_and_denies_by_default():
    filt = seccomp.build_filter("x86_64")
    prog = filt.instructions
    assert len(prog) < 4096
    for i, (code, jt, jf, _k) in enumerate(prog):
        if code & 0x07 == 0x05:  # BPF_JMP: both targets inside the program
            assert i + 1 + max(jt, jf) < len(prog)
    eperm = seccomp.RET_ERRNO | 1
    unlisted = {"unshare": 272, "setns": 308, "mount": 165, "chroot": 161, "setuid": 105,
                "prctl": 157, "bpf": 321}  # x86_64 numbers the builder's table lacks
    for name in ("socket", "execve", "execveat", "fork", "vfork", "clone", "ptrace",
                 "process_vm_readv", "process_vm_writev", "connect", "memfd_create", "tkill",
                 *unlisted):
        nr = unlisted.get(name, seccomp.X86_64.get(name))
        for args in [(0,) * 6, (1, 2, 3, 4, 5, 6)]:
            assert _run_bpf(prog, nr, args) == eperm, name
    assert _run_bpf(prog, 999, (0,) * 6) == eperm  # a number nobody listed
    assert _run_bpf(prog, seccomp.X86_64["read"]) == seccomp.RET_ALLOW
    assert len(filt._pid_slots) == 2  # kill and tgkill compare against the child's pid
    # a binary search: no call number takes more than a few comparisons
    assert max(_steps(prog, nr) for nr in range(470)) <= 16


def _steps(prog, nr: int) -> int:
    pc = steps = 0
    data = {0: nr, 4: seccomp.AUDIT_ARCH["x86_64"]}
    while prog[pc][0] != 0x06 and steps < len(prog):
        code, jt, jf, k = prog[pc]
        if code == 0x20:
            if k not in data:  # an argument check: the number is decided
                return steps
            acc = data[k]
            pc += 1
        else:
            pc += 1 + (jt if (acc == k if code == 0x15 else acc >= k) else jf)
        steps += 1
    return steps


def test_unsupported_architecture_is_refused_clearly():
    with pytest.raises(seccomp.SeccompUnavailable, match="'mips' is not supported"):
        seccomp.syscall_table("mips")


def _frame(header: bytes, payload_len: int, magic: bytes = wire.RESULT_MAGIC) -> bytes:
    return wire.FRAME_HEAD.pack(magic, len(header), payload_len)


def test_frame_head_checks():
    assert wire.parse_frame_head(_frame(b"{}", 8), 8) == (2, 8)
    with pytest.raises(wire.WireError, match="magic"):
        wire.parse_frame_head(_frame(b"{}", 0, b"NBX1"), 10)
    with pytest.raises(wire.WireError, match="budget"):
        wire.parse_frame_head(_frame(b"{}", 9), 8)
    with pytest.raises(wire.WireError, match="header"):
        wire.parse_frame_head(wire.FRAME_HEAD.pack(wire.RESULT_MAGIC, 1 << 30, 0), 8)
    with pytest.raises(wire.WireError):
        wire.parse_frame_header(b"[1, 2]")
    with pytest.raises(wire.WireError):
        wire.parse_frame_header(b"\xff\xfe")
    with pytest.raises(wire.WireError):
        wire.parse_frame_header(b"[" * 100_000 + b"]" * 100_000)


def _decode(specs, payload=b"", **kw):
    kw.setdefault("max_arrays", 4)
    kw.setdefault("max_elements", 100)
    return wire.decode_arrays(specs, payload, **kw)


def test_decoder_accepts_real_arrays_and_returns_owned_float64():
    raw = np.arange(6, dtype="<i4").tobytes() + np.array([True, False]).tobytes()
    out = _decode([["a", "<i4", [2, 3]], ["b", "|b1", [2]]], raw)
    assert out["a"].dtype == np.float64 and out["a"].shape == (2, 3)
    assert out["a"].flags.writeable and out["a"].flags.owndata
    np.testing.assert_array_equal(out["b"], [1.0, 0.0])


@pytest.mark.parametrize(
    "specs, payload, match",
    [
        ([["a", "|O", [1]]], b"x" * 8, "not a real numeric dtype"),
        ([["a", "<c16", [1]]], b"x" * 16, "not a real numeric dtype"),
        ([["a", ">f8", [1]]], b"x" * 8, "not a real numeric dtype"),
        ([["a", "<f8", [1]]], b"x" * 4, "payload too short"),
        ([["a", "<f8", [1]]], b"x" * 16, "payload longer"),
        ([["a", "<f8", [-1]]], b"", "malformed shape"),
        ([["a", "<f8", [True]]], b"x" * 8, "malformed shape"),
        ([["a", "<f8", [1.0]]], b"x" * 8, "malformed shape"),
        ([["a", "<f8", [10, 11]]], b"", "110 elements exceed the limit of 100"),
        ([["a", "<f8", [100] * 40]], b"", "malformed shape"),
        ([["a", "<f8", [0]], ["a", "<f8", [0]]], b"", "duplicate"),
        ([[f"a{i}", "<f8", [0]] for i in range(5)], b"", "too many arrays"),
        ([[1, "<f8", [0]]], b"", "short strings"),
        ({"a": 1}, b"", "array list missing"),
        ([["a", "<f8"]], b"", "malformed array entry"),
        ([["a", "|b1", [50]]], b"x" * 50, "exceed 256 bytes as float64"),
    ],
)
def test_decoder_rejects(specs, payload, match):
    with pytest.raises(wire.WireError, match=match):
        _decode(specs, payload, max_bytes=256)


def test_libseccomp_name_resolution_matches_the_builtin_table():
    """The path other architectures take gives the built-in numbers on x86_64."""
    assert seccomp.machine() == "x86_64"
    assert seccomp._table_from_libseccomp() == seccomp.X86_64


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=4),
    max_leaves=20,
)
dtype_names = st.sampled_from(["<f8", "|b1", "<i4", "|O", "<c8", ">f8", "V8", "", "<f8\x00"])
specs = st.lists(
    st.one_of(json_values, st.tuples(st.text(max_size=4), dtype_names,
                                     st.lists(st.integers(-3, 40), max_size=4)).map(list)),
    max_size=5,
)


@settings(max_examples=300, deadline=None)
@given(specs=st.one_of(json_values, specs), payload=st.binary(max_size=300))
def test_decoder_never_fails_other_than_with_wire_error(specs, payload):
    try:
        out = _decode(specs, payload, max_bytes=4096)
    except wire.WireError:
        return
    for arr in out.values():
        assert arr.dtype == np.float64 and arr.size <= 100


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=200))
def test_frame_parsing_never_fails_other_than_with_wire_error(raw):
    head = (raw + bytes(wire.FRAME_HEAD.size))[: wire.FRAME_HEAD.size]
    for blob in (head, wire.RESULT_MAGIC + head[4:]):
        try:
            wire.parse_frame_head(blob, 1000)
        except wire.WireError:
            pass
    try:
        wire.parse_frame_header(raw)
    except wire.WireError:
        pass


def test_children_warm_up_only_when_nobody_waits_and_a_cpu_is_idle(monkeypatch):
    from server.sandbox import pool as worker

    cpus = os.cpu_count() or 1
    monkeypatch.setattr(worker.os, "getloadavg", lambda: (cpus - 0.5, 0.0, 0.0))
    assert worker.should_warm_up(False)
    assert not worker.should_warm_up(True)  # callers queue for children: no extra CPU
    monkeypatch.setattr(worker.os, "getloadavg", lambda: (cpus + 0.0, 0.0, 0.0))
    assert not worker.should_warm_up(False)  # every CPU busy: the jobs need it

    def unavailable():
        raise OSError("no load average")

    monkeypatch.setattr(worker.os, "getloadavg", unavailable)
    assert worker.should_warm_up(False)
    # children were leased a moment ago (submissions back to back): no warm-up
    assert not worker.should_warm_up(False, idle_s=worker.WARM_UP_IDLE_S / 2)
    assert worker.should_warm_up(False, idle_s=worker.WARM_UP_IDLE_S)


def test_background_children_are_boosted_when_someone_needs_them(monkeypatch):
    """Children prepare and end at BACKGROUND_NICE; preparing ones get the worker's
    priority when callers wait or fewer than a grade's worth are ready, ending ones
    when more than a pool's worth pile up."""
    import socket

    from server.sandbox import pool as worker

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    w = worker.Worker(a.detach(), {"pool_size": 4, "uid_base": 10, "uid_count": 8,
                                   "insecure": False})
    w.can_boost = True
    boosted: list[int] = []
    monkeypatch.setattr(w, "boost", lambda c: (boosted.append(c.pid),
                                               setattr(c, "background", False)))

    def child(pid: int, state: str) -> worker._Child:
        c = worker._Child(pid, -1, None, pid)  # type: ignore[arg-type]
        c.state, c.background = state, True
        w.children[pid] = c
        return c

    ready = [child(pid, "ready") for pid in (1, 2, 3)]
    w.ready = list(ready)
    child(4, "preparing")
    child(5, "ending")
    w.prioritize()
    assert boosted == []  # a grade's worth ready, one child ending: nobody needs them
    w.ready.pop()
    w.prioritize()
    assert boosted == [4]  # two ready: the preparing child is needed
    for pid in (6, 7, 8, 9):
        child(pid, "ending")
    w.prioritize()
    assert sorted(boosted) == [4, 5, 6, 7, 8, 9]  # five ending > a pool of four
    w.sel.close()
    w.ctrl.close()
    os.close(w.devnull)
    b.close()


# ---- the seccomp program, run by a small classic-BPF interpreter

def _run_bpf(prog, nr: int, args=(0,) * 6, arch: int | None = None) -> int:
    """The action ``prog`` returns for one system call (the instructions the
    builder emits: load word, jump if equal / greater or equal, return)."""
    arch = seccomp.AUDIT_ARCH["x86_64"] if arch is None else arch
    data = {0: nr, 4: arch}
    for i, value in enumerate(args):
        data[16 + 8 * i] = value & 0xFFFFFFFF
        data[20 + 8 * i] = value >> 32
    pc, acc = 0, 0
    for _ in range(len(prog) + 1):
        code, jt, jf, k = prog[pc]
        if code == 0x20:
            acc = data[k]
            pc += 1
        elif code in (0x15, 0x35):
            taken = acc == k if code == 0x15 else acc >= k
            pc += 1 + (jt if taken else jf)
        elif code == 0x06:
            return k
        else:
            raise AssertionError(f"unexpected instruction {code:#x} at {pc}")
    raise AssertionError("the program did not return")


def _policy(nr: int, args, pid: int) -> int:
    """What the allowlist in seccomp.py says about a call, written out directly."""
    names = {v: k for k, v in seccomp.X86_64.items()}
    name = names.get(nr)
    if nr >= 0x40000000:
        return seccomp.RET_KILL_PROCESS
    if name in seccomp.ALLOWED:
        return seccomp.RET_ALLOW
    if name in seccomp.ERRNO_RULES:
        return seccomp.RET_ERRNO | seccomp.ERRNO_RULES[name]
    eperm = seccomp.RET_ERRNO | 1
    if name in seccomp.SELF_ONLY:
        return seccomp.RET_ALLOW if args[seccomp.SELF_ONLY[name]] == pid else eperm
    if name in seccomp.ARG_ALLOWLIST:
        arg, values = seccomp.ARG_ALLOWLIST[name]
        return seccomp.RET_ALLOW if args[arg] in values else eperm
    if name in seccomp.ARGS_ZERO:
        ok = all(args[a] == 0 for a in seccomp.ARGS_ZERO[name])
        return seccomp.RET_ALLOW if ok else eperm
    if name == "prlimit64":
        return seccomp.RET_ALLOW if args[0] == 0 else eperm
    return eperm


def test_the_program_does_what_the_allowlist_says_for_every_call_number():
    filt = seccomp.build_filter("x86_64")
    pid = 4242
    prog = list(filt.instructions)
    for i in filt._pid_slots:
        prog[i] = (*prog[i][:3], pid)
    arg_sets = [(0,) * 6, (pid, pid, 0, 0, 0, 0), (0, 1, 0, 0, 0, 0), (1, 0, 0, 0, 0, 0),
                (7, 4, 0, 0, 0, 0), (0, 8, 0, 0, 0, 0), (pid + 1, 9, 0, 0, 0, 0)]
    for nr in [*range(0, 470), 0x40000000, 0x40000001]:
        for args in arg_sets:
            assert _run_bpf(prog, nr, args) == _policy(nr, args, pid), (nr, args)
    assert _run_bpf(prog, 0, arch=0x40000003) == seccomp.RET_KILL_PROCESS  # i386


def test_setpriority_only_on_itself():
    prog = seccomp.build_filter("x86_64").instructions
    nr = seccomp.X86_64["setpriority"]
    assert _run_bpf(prog, nr, (0, 0, 19, 0, 0, 0)) == seccomp.RET_ALLOW
    for args in [(0, 1234, 19, 0, 0, 0), (1, 0, 19, 0, 0, 0), (2, 0, 19, 0, 0, 0)]:
        assert _run_bpf(prog, nr, args) == seccomp.RET_ERRNO | 1  # another process/group/user
