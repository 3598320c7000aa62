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
    assert prog[-1] == (0x06, 0, 0, seccomp.RET_ERRNO | 1)  # default: EPERM
    allowed = {k for code, _, _, k in prog if code == 0x15}
    for name in ("socket", "execve", "execveat", "fork", "vfork", "clone", "ptrace",
                 "process_vm_readv", "process_vm_writev", "connect", "memfd_create", "tkill"):
        nr = seccomp.X86_64[name]
        # a denied call is never compared-and-allowed
        idx = [i for i, ins in enumerate(prog) if ins[0] == 0x15 and ins[3] == nr]
        for i in idx:
            assert prog[i + 1][3] != seccomp.RET_ALLOW, name
    assert seccomp.X86_64["read"] in allowed
    assert len(filt._pid_slots) == 2  # kill and tgkill compare against the child's pid


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
