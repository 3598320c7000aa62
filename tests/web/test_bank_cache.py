"""The app reads the bank from the database: a version saved by another process
(here: another session) is used at the next request, and a text is parsed once
per process and hash."""

from server.services import bank as bank_service
from server.web import bank
from tests.services.test_bank import tiny


def test_a_new_version_is_used_at_once_and_parsed_once(app, app_session, monkeypatch):
    app.config.pop("NABLA_PROBLEM_BANK")
    bank_service.save_version(app_session, tiny("First"))
    app_session.commit()
    parsed = []
    real_parse = bank_service.spec_of_text

    def counting(spec_hash, load_text):
        parsed.append(spec_hash)
        return real_parse(spec_hash, load_text)

    monkeypatch.setattr(bank_service, "spec_of_text", counting)
    with app.test_request_context():
        assert bank.get_bank()["tiny"].title == "First"
    bank_service.save_version(app_session, tiny("Second"))
    app_session.commit()
    with app.test_request_context():
        assert bank.get_bank()["tiny"].title == "Second"
        assert bank.get_bank()["tiny"].title == "Second"
    assert len(set(parsed)) == 2
    assert bank_service._SPECS  # cached by hash for the next request


def test_a_broken_configured_bank_gives_students_an_empty_bank(app):
    def broken():
        raise ValueError("problems/bad.toml: line 3: unknown name 'W9'")

    app.config["NABLA_PROBLEM_BANK"] = broken
    with app.test_request_context():
        assert bank.get_bank_for_students() == {}
