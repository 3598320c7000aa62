"""Runs untrusted student code; knows nothing about the web, the DB or grading.

    from server.sandbox import run_job, JobResult, CallResult, SandboxUnavailable
    result = run_job(source, [{"x": x, "W1": W1, ...}, ...], function="backward")

See docs/sandbox.md for the layers, the protocol and the limits.
"""

from server.sandbox.client import (
    CALL_STATUSES,
    JOB_STATUSES,
    CallResult,
    JobResult,
    Sandbox,
    SandboxUnavailable,
    get_sandbox,
    run_job,
    sandbox_status,
)
from server.sandbox.source import check_source, exception_name, source_line

__all__ = [
    "CALL_STATUSES",
    "JOB_STATUSES",
    "CallResult",
    "JobResult",
    "Sandbox",
    "SandboxUnavailable",
    "check_source",
    "exception_name",
    "get_sandbox",
    "run_job",
    "sandbox_status",
    "source_line",
]
