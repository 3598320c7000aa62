"""Fixtures for the sandbox tests: a live worker, fake server files, process checks."""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from server.sandbox import get_sandbox, sandbox_status

REPO_ROOT = Path(__file__).resolve().parents[2]
SANDBOX_UID_MIN = 1_900_000_000
SECRET = "nabla-test-secret-5f2c9e"


@pytest.fixture(scope="session")
def sandbox():
    """The process-wide sandbox; the battery needs every layer active."""
    status = sandbox_status()
    assert status["available"], f"sandbox layers missing on this machine: {status}"
    yield get_sandbox()
    get_sandbox().close()


@pytest.fixture(scope="session")
def server_files() -> Iterator[dict[str, Path]]:
    """A database, an instance folder and a config file beside the server code."""
    base = Path(tempfile.mkdtemp(prefix=".sandbox-test-", dir=REPO_ROOT))
    instance = base / "instance"
    instance.mkdir()
    db = instance / "nabla.sqlite"
    con = sqlite3.connect(db)
    con.execute("create table secrets (value text)")
    con.execute("insert into secrets values (?)", (SECRET,))
    con.commit()
    con.close()
    config = base / "config.py"
    config.write_text(f"SECRET_KEY = {SECRET!r}\n")
    upload = instance / "submission-of-another-student.py"
    upload.write_text(f"# {SECRET}\n")
    os.chmod(base, 0o755)
    yield {"base": base, "db": db, "instance": instance, "config": config, "upload": upload}
    shutil.rmtree(base, ignore_errors=True)


def sandbox_processes() -> list[tuple[int, int, int]]:
    """(pid, ppid, uid) of every live process running under a sandbox uid."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        uid = int(fields["Uid"].split()[0])
        if fields["State"].split()[0] in ("Z", "X") or fields["PPid"].strip() == "0":
            continue  # dead or exiting (the kernel shows PPid 0 once a task is not alive)
        if uid >= SANDBOX_UID_MIN:
            found.append((int(entry), int(fields["PPid"]), uid))
    return found


def own_processes(sb, uids: range | None = None) -> list[tuple[int, int, int]]:
    """Live processes under the uids of ``sb``'s worker (other test runs may share
    the machine, with their own workers and uids)."""
    uids = uids if uids is not None else sb.uid_range()
    return [p for p in sandbox_processes() if uids is not None and p[2] in uids]


def assert_no_stray_processes(sb, grace_s: float = 1.0) -> None:
    """Every process under this worker's uids is one of its pool children.

    A killed child takes a moment to tear down; anything still there after
    ``grace_s`` (an escaped process would sleep far longer) is a failure.
    """
    worker = sb.worker_pid()
    deadline = time.monotonic() + grace_s
    while True:
        strays = [p for p in own_processes(sb) if p[1] != worker]
        if not strays or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not strays, f"sandboxed processes outlived their job: {strays}"


def call_args(seed: int = 0, n: int = 3, d: int = 4, h: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((n, d)),
        "W": rng.standard_normal((d, h)),
        "dy": rng.standard_normal((n, h)),
    }


CORRECT = '''
import numpy as np

def backward(x, W, dy):
    return {"dW": x.T @ dy, "dx": dy @ W.T}
'''


def expected(call: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"dW": call["x"].T @ call["dy"], "dx": call["dy"] @ call["W"].T}


def run_unsandboxed(source: str, call: dict[str, object]) -> object:
    """Control for an attack: what the same answer does with no sandbox at all."""
    ns: dict[str, object] = {}
    exec(compile(source, "answer.py", "exec"), ns)
    return ns["backward"](**call)
