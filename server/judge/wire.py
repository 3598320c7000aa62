"""Frames between the server and a judge process: a 4-byte length, then JSON.

Both sides are ours (no student code runs in a judge process, only our parsers
and evaluators), but nothing is unpickled all the same: a frame is plain JSON,
and a frame above MAX_FRAME_BYTES is refused.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import time

MAX_FRAME_BYTES = 64 << 20
_HEADER = struct.Struct(">I")


class FrameError(Exception):
    """The peer closed the connection, sent a malformed frame, or was too slow."""


class FrameTimeout(FrameError):
    pass


def encode(message: dict) -> bytes:
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(body) > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {len(body)} bytes exceeds {MAX_FRAME_BYTES}")
    return _HEADER.pack(len(body)) + body


def send(sock: socket.socket, message: dict) -> None:
    try:
        sock.sendall(encode(message))
    except OSError as exc:
        raise FrameError(f"send failed: {exc}") from None


def _read_exact(sock: socket.socket, n: int, deadline: float | None) -> bytes:
    chunks: list[bytes] = []
    poller = None
    if deadline is not None:
        poller = select.poll()  # not select(): descriptors above 1024 are fine
        poller.register(sock, select.POLLIN)
    while n:
        if poller is not None and deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not poller.poll(remaining * 1000):
                raise FrameTimeout("no answer in time")
        try:
            chunk = sock.recv(min(n, 1 << 20))
        except OSError as exc:
            raise FrameError(f"receive failed: {exc}") from None
        if not chunk:
            raise FrameError("the peer closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def receive(sock: socket.socket, deadline: float | None = None) -> dict:
    """The next frame; waits until ``deadline`` (time.monotonic()) or forever."""
    (size,) = _HEADER.unpack(_read_exact(sock, _HEADER.size, deadline))
    if size > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {size} bytes exceeds {MAX_FRAME_BYTES}")
    try:
        message = json.loads(_read_exact(sock, size, deadline).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise FrameError("malformed frame") from None
    if not isinstance(message, dict):
        raise FrameError("malformed frame")
    return message
