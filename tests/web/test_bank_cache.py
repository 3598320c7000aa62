"""The app checks the problem folder for edits at most once a second per process."""

import pytest

from server.web import bank


@pytest.fixture
def engine_bank_calls(app, monkeypatch):
    from server.engine import bank as engine_bank

    calls = []
    monkeypatch.setattr(engine_bank, "load_bank", lambda: calls.append(1) or {"v": len(calls)})
    monkeypatch.setattr(bank, "_loaded", None)
    app.config.pop("NABLA_PROBLEM_BANK")
    return calls


def test_the_bank_is_checked_for_edits_at_most_once_a_second(app, engine_bank_calls,
                                                             monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(bank.time, "monotonic", lambda: clock[0])
    with app.app_context():
        assert bank.get_bank() == {"v": 1}
        clock[0] += 0.5
        assert bank.get_bank() == {"v": 1} and engine_bank_calls == [1]
        clock[0] += 0.6  # an edit is seen a second after the last check
        assert bank.get_bank() == {"v": 2}


def test_a_bank_that_breaks_is_not_served_from_before(app, engine_bank_calls, monkeypatch):
    from server.engine import bank as engine_bank

    clock = [100.0]
    monkeypatch.setattr(bank.time, "monotonic", lambda: clock[0])
    with app.app_context():
        assert bank.get_bank() == {"v": 1}

        def broken():
            raise ValueError("problems/bad.toml: line 3: unknown name 'W9'")

        monkeypatch.setattr(engine_bank, "load_bank", broken)
        clock[0] += 1.5
        for _ in range(2):  # each request looks again: nothing broken is kept
            assert bank.get_bank_for_students() == {}
