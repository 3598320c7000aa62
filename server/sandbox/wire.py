"""Byte formats between the server (client) and a sandboxed child.

Job (client -> child; the child trusts it):
    b"NBJ2" | u64 header_len | header (marshal) | u64 blob_len | blob
    header: source, function, limits, "arrays": [[dtype, shape, offset], ...],
    "calls": [{name: ["a", i] | ["l", [i, ...]] | ["f", float]}, ...],
    "code": [offset, length] of the server-compiled module (marshal) in the blob

Result frames (child -> client; the client trusts NOTHING in them):
    b"NBR1" | u32 header_len | u64 payload_len | header JSON | payload
    header "k" is "call" (one per call, in order) or "done" (last frame).
    A call frame lists its arrays as [[name, dtype, shape], ...]; the payload is
    their raw little-endian bytes, concatenated. The client decodes with a
    dtype allowlist, explicit shape/size checks and numpy.frombuffer (never
    pickle, never numpy.dtype() of a string from the child).
"""

from __future__ import annotations

import json
import marshal
import math
import struct
from collections.abc import Collection

import numpy as np

JOB_MAGIC = b"NBJ2"
RESULT_MAGIC = b"NBR1"
FRAME_HEAD = struct.Struct("<4sIQ")
U64 = struct.Struct("<Q")
MAX_FRAME_HEADER = 1 << 20  # JSON header of one result frame
MAX_NDIM = 32

# dtype string (as numpy.dtype.str on a little-endian machine) -> dtype.
# Real numbers only: no complex, no object, no structured, no datetime.
ALLOWED_DTYPES: dict[str, np.dtype] = {
    d.str: d
    for d in map(
        np.dtype,
        ["<f8", "<f4", "<f2", "<i8", "<i4", "<i2", "|i1", "<u8", "<u4", "<u2", "|u1", "|b1"],
    )
}


class WireError(ValueError):
    """A result stream that does not follow the protocol."""


# ---------------------------------------------------------------- job (client side)

def encode_job(
    source: str,
    calls: list[dict[str, object]],
    function: str,
    limits: dict[str, object],
    code: bytes | None = None,
) -> bytes:
    """Serialize a job. Raises TypeError/ValueError naming the bad call/argument.
    ``code``: the source compiled by the server (``marshal``), after the arrays in
    the blob; without it the child compiles the source itself."""
    if not isinstance(source, str):
        raise TypeError(f"source must be str, not {type(source).__name__}")
    if not isinstance(function, str) or not function.isidentifier():
        raise ValueError(f"function must be an identifier, got {function!r}")
    arrays: list[list[object]] = []
    chunks: list[bytes] = []
    offset = 0

    def add(value: object, where: str) -> int:
        nonlocal offset
        if not isinstance(value, np.ndarray):
            raise TypeError(f"{where}: expected a numpy array, got {type(value).__name__}")
        if value.dtype.kind not in "biuf":
            raise TypeError(f"{where}: dtype {value.dtype} is not a real numeric dtype")
        arr = np.ascontiguousarray(value, dtype=np.float64)
        data = arr.tobytes()
        arrays.append(["<f8", list(arr.shape), offset])
        chunks.append(data)
        offset += len(data)
        return len(arrays) - 1

    encoded_calls = []
    for ci, call in enumerate(calls):
        if not isinstance(call, dict):
            raise TypeError(f"calls[{ci}]: expected a dict of keyword arguments")
        enc: dict[str, object] = {}
        for name, value in call.items():
            where = f"calls[{ci}][{name!r}]"
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"{where}: argument names must be identifiers")
            if isinstance(value, np.ndarray):
                enc[name] = ["a", add(value, where)]
            elif isinstance(value, list | tuple):
                enc[name] = ["l", [add(v, f"{where}[{i}]") for i, v in enumerate(value)]]
            elif isinstance(value, int | float | np.floating | np.integer) and not isinstance(
                value, bool
            ):
                enc[name] = ["f", float(value)]
            else:
                raise TypeError(
                    f"{where}: expected ndarray, list of ndarrays or float, "
                    f"got {type(value).__name__}"
                )
        encoded_calls.append(enc)
    header = dict(limits)
    header.update(source=source, function=function, calls=encoded_calls, arrays=arrays)
    if code is not None:
        header["code"] = [offset, len(code)]
        chunks.append(code)
    # marshal, not JSON: this direction is trusted (the server writes it), and a
    # fresh child's first json.loads costs it ~120 copy-on-write page faults
    # (bench/bench_child_cost.py). Results (child -> server) stay JSON.
    head = marshal.dumps(header)
    blob = b"".join(chunks)
    return b"".join([JOB_MAGIC, U64.pack(len(head)), head, U64.pack(len(blob)), blob])


def decode_job_header(raw: bytes | bytearray) -> dict[str, object]:
    """The job header, in the child (from the server: trusted)."""
    header = marshal.loads(raw)
    if not isinstance(header, dict):
        raise ValueError("job header is not a dict")
    return header


# ---------------------------------------------------------------- result (client side)

def parse_frame_head(raw: bytes, payload_budget: int) -> tuple[int, int]:
    """Check a frame's fixed-size head; return (header_len, payload_len)."""
    magic, header_len, payload_len = FRAME_HEAD.unpack(raw)
    if magic != RESULT_MAGIC:
        raise WireError("bad frame magic")
    if header_len > MAX_FRAME_HEADER:
        raise WireError(f"frame header of {header_len} bytes exceeds {MAX_FRAME_HEADER}")
    if payload_len > payload_budget:
        raise WireError(f"frame payload of {payload_len} bytes exceeds the remaining budget")
    return header_len, payload_len


def parse_frame_header(raw: bytes) -> dict[str, object]:
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise WireError(f"frame header is not JSON: {type(exc).__name__}") from None
    if not isinstance(header, dict) or header.get("k") not in ("call", "done"):
        raise WireError("frame header is not a call/done object")
    return header


def decode_arrays(
    specs: object, payload: bytes, *, max_arrays: int, max_elements: int,
    max_bytes: int | None = None, names: Collection[str] | None = None,
) -> dict[str, np.ndarray]:
    """Turn a call frame's array list + payload into float64 arrays.

    Raises WireError with a student-readable reason for anything that is not a
    bounded dict of real numeric arrays. With ``names``, arrays by other names
    are checked and skipped (the child is asked to send only those).
    """
    if not isinstance(specs, list):
        raise WireError("array list missing")
    if len(specs) > max_arrays:
        raise WireError(f"too many arrays: {len(specs)} > {max_arrays}")
    out: dict[str, np.ndarray] = {}
    pos = 0
    total = 0
    for spec in specs:
        if not (isinstance(spec, list) and len(spec) == 3):
            raise WireError("malformed array entry")
        name, dtype_str, shape = spec
        if not isinstance(name, str) or len(name) > 200:
            raise WireError("array names must be short strings")
        if name in out:
            raise WireError(f"duplicate array name {name!r}")
        dtype = ALLOWED_DTYPES.get(dtype_str) if isinstance(dtype_str, str) else None
        if dtype is None:
            raise WireError(f"{name!r}: dtype {str(dtype_str)[:40]!r} is not a real numeric dtype")
        if not (
            isinstance(shape, list)
            and len(shape) <= MAX_NDIM
            and all(type(d) is int and 0 <= d <= max_elements for d in shape)
        ):
            raise WireError(f"{name!r}: malformed shape")
        count = math.prod(shape)
        if count > max_elements:
            raise WireError(f"{name!r}: {count} elements exceed the limit of {max_elements}")
        total += count * 8  # what the float64 copies will take
        if max_bytes is not None and total > max_bytes:
            raise WireError(f"the arrays returned exceed {max_bytes} bytes as float64")
        nbytes = count * dtype.itemsize
        if pos + nbytes > len(payload):
            raise WireError(f"{name!r}: payload too short")
        if names is None or name in names:
            arr = np.frombuffer(payload, dtype=dtype, count=count, offset=pos).reshape(shape)
            out[name] = arr.astype(np.float64)  # always a fresh, owned, writeable copy
        pos += nbytes
    if pos != len(payload):
        raise WireError("payload longer than its arrays")
    return out
