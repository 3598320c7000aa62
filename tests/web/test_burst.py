"""A deadline burst of 30 students against a real `nabla serve` (bench/burst.py, which
plays 300 for the figures): the invariants, not the times."""

from __future__ import annotations

import collections
import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("db_backend")

BURST = Path(__file__).resolve().parents[2] / "bench" / "burst.py"


def load_burst():
    spec = importlib.util.spec_from_file_location("burst", BURST)
    module = importlib.util.module_from_spec(spec)
    sys.modules["burst"] = module  # (dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


def test_a_burst_of_30_students_keeps_every_submission_once(database_url, tmp_path, session):
    # (``session``: its teardown deletes the rows this test leaves in the shared database)
    burst = load_burst()
    outcome = burst.run(database_url, tmp_path, students=30, seconds=3, workers=2, threads=2,
                        think=0.2)
    assert outcome.problems == []
    statuses = collections.Counter(s.status for s in outcome.sent)
    assert not [s for s in statuses if s >= 500 or s == 0], statuses
    assert len(outcome.sent) == 30 * 4  # 3 submissions, the last one sent twice
    # Each double click stored one submission; every student's right answer was graded
    # or refused for want of attempts, and the refusals happened.
    assert outcome.counts["stored"] == 30 * 3
    assert outcome.counts["graded"] >= 30 and outcome.counts["refused"] > 0
    assert outcome.counts.get("pending", 0) == 0
    by_label = collections.defaultdict(set)
    for s in outcome.sent:
        by_label[s.label].add(s.outcome)
    assert by_label["invalid"] == {"invalid"}
    assert by_label["right, double click"] <= {"graded", "refused", "pending"}
