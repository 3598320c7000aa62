"""The database as the bank of record: sync, versions, ownership, previews."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from server.engine.bank import BANK_DIR
from server.models import Problem, ProblemVersion
from server.services import bank

pytestmark = pytest.mark.usefixtures("db_backend")



def tiny(title: str = "A relu layer") -> str:
    """The editor's example spec as problem ``tiny``."""
    return bank.EXAMPLE_SPEC.replace('id = "my-problem"', 'id = "tiny"').replace(
        'title = "A title"', f'title = "{title}"')


def counts(session) -> tuple[int, int]:
    return (session.scalar(select(func.count()).select_from(Problem)),
            session.scalar(select(func.count()).select_from(ProblemVersion)))


def test_sync_twice_creates_nothing_the_second_time(session, tmp_path):
    (tmp_path / "tiny.toml").write_text(tiny())
    (tmp_path / "mlp-relu.toml").write_text((BANK_DIR / "mlp-relu.toml").read_text())
    first = bank.sync_folder(session, tmp_path)
    assert sorted(first.new_versions) == ["mlp-relu", "tiny"] and not first.refused
    before = counts(session)
    second = bank.sync_folder(session, tmp_path)
    assert second.new_versions == [] and sorted(second.unchanged) == ["mlp-relu", "tiny"]
    assert counts(session) == before == (2, 2)
    (tmp_path / "tiny.toml").write_text(tiny("Changed"))
    third = bank.sync_folder(session, tmp_path)
    assert third.new_versions == ["tiny"]
    assert [v.version for v in bank.problem_versions(session, session.get(Problem, "tiny"))] \
        == [2, 1]


def test_a_refused_file_changes_nothing(session, tmp_path):
    (tmp_path / "tiny.toml").write_text(tiny())
    bank.sync_folder(session, tmp_path)
    before = counts(session)
    (tmp_path / "tiny.toml").write_text(tiny().replace("z2 = relu(z1)", "z2 = relu(z9)"))
    (tmp_path / "other.toml").write_text(tiny())  # id 'tiny' in other.toml
    report = bank.sync_folder(session, tmp_path)
    assert report.new_versions == [] and counts(session) == before
    refused = {r["file"].rsplit("/", 1)[1]: r["errors"] for r in report.refused}
    assert refused["tiny.toml"][0]["line"] == 9 and "z9" in refused["tiny.toml"][0]["message"]
    assert refused["other.toml"][0]["line"] == 1
    assert "file name" in refused["other.toml"][0]["message"]
    assert bank.export_text(session, "tiny") == tiny()


def test_a_model_solution_below_100_percent_is_refused(session):
    from server.judge import Judge

    # the check runs in the judge: its processes get a wrong model answer on purpose
    judge = Judge(size=1, timeout_s=30, tasks="tests.judge.tasks_wrong_model")
    try:
        with pytest.raises(bank.SpecRefused, match="model solution scores"):
            bank.save_version(session, tiny(), judge=judge)
    finally:
        judge.close()
    assert counts(session) == (0, 0)


def test_course_problems_are_unique_per_owner(session, make_course, make_user):
    a = make_course(session, "A101")
    b = make_course(session, "B101")
    ta = make_user(session, "ta@example.edu")
    shared = bank.save_version(session, tiny(), origin="sync").version
    copy = bank.copy_to_course(session, a, "tiny", ta).version
    assert (shared.problem_id, copy.problem_id) == ("tiny", f"tiny.c{a.id}")
    assert copy.spec_text == shared.spec_text and copy.author_id == ta.id
    assert copy.origin == "copy"
    own_b = bank.save_version(session, tiny("B's"), course=b).version
    assert own_b.problem_id == f"tiny.c{b.id}"
    assert [r.key for r in bank.course_problems(session, a)] == [f"tiny.c{a.id}", "tiny"]
    with pytest.raises(bank.NotFound):
        bank.staff_problem(session, a, own_b.problem_id)
    with pytest.raises(bank.Forbidden):
        bank.editable_problem(session, a, "tiny")
    assert set(bank.DatabaseBank(session, a)) == {"tiny", f"tiny.c{a.id}"}
    assert bank.DatabaseBank(session, a).get(own_b.problem_id) is None


def test_the_cli_syncs_and_exports(session, tmp_path, database_url, monkeypatch):
    from server.cli import main

    monkeypatch.setenv("NABLA_DATABASE_URL", database_url)
    (tmp_path / "tiny.toml").write_text(tiny())
    runner = CliRunner()
    first = runner.invoke(main, ["problems", "sync", str(tmp_path), "--json"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.output) == {"new_versions": ["tiny"], "unchanged": [],
                                        "refused": []}
    exported = runner.invoke(main, ["problems", "export", "tiny"])
    assert exported.output == tiny()
    (tmp_path / "tiny.toml").write_text(exported.output)
    (tmp_path / "bad.toml").write_text("id = 'bad'\ntitle = \n")
    again = runner.invoke(main, ["problems", "sync", str(tmp_path), "--json"])
    assert again.exit_code == 1
    report = json.loads(again.output)
    assert report["new_versions"] == [] and report["unchanged"] == ["tiny"]
    assert report["refused"][0]["file"].endswith("bad.toml")
    assert report["refused"][0]["errors"][0]["line"] == 2
    (tmp_path / "bad.toml").unlink()
    course = runner.invoke(main, ["problems", "sync", str(tmp_path), "--course", "C101"])
    assert course.exit_code == 1 and "there is no course C101" in course.output


def test_preview_of_a_draft_grades_like_a_submission_and_its_references_are_fd_checked():
    model = bank.preview(tiny(), 3)
    spec = model.spec
    graded = bank.preview(tiny(), 3, model.solution)
    assert graded.outcome.status == "graded" and graded.outcome.score == 1.0
    transposed = bank.preview(tiny(), 3, model.solution.replace("dW = x @ dz1",
                                                                "dW = dz1.T @ x.T"))
    assert transposed.grade_json()["gradients"]["dW"]["verdict"] == "transposed"
    assert transposed.outcome.score < 1
    invalid = bank.preview(tiny(), 3, "dW = = 1")
    assert invalid.outcome.status == "invalid" and invalid.grade_json()["errors"][0]["line"] == 1
    assert "reference" in model.document and "reference" not in model.public
    # The references are the engine's, and agree with central differences of L.
    doc = model.document
    W, x = np.array(doc["values"]["W"]), np.array(doc["values"]["x"])
    z2 = np.maximum(W @ x, 0)
    dz2 = np.array(doc["values"]["dz2"]).reshape(z2.shape[::-1]).T

    def loss(W_: np.ndarray) -> float:
        return float(np.sum(dz2 * np.maximum(W_ @ x, 0)))

    h = 1e-6
    fd = np.zeros_like(W)
    for i in np.ndindex(W.shape):
        e = np.zeros_like(W)
        e[i] = h
        fd[i] = (loss(W + e) - loss(W - e)) / (2 * h)
    assert np.allclose(np.array(doc["reference"]["dW"]), fd.T, atol=1e-6)  # numerator layout
    from server.engine.problem import draw

    assert doc["reference"] == draw(spec, 3).to_json()["reference"]


def test_draw_statistics_spread_dims_and_choices():
    stats = bank.draw_statistics((BANK_DIR / "mlp-random.toml").read_text(), seeds=30)
    assert stats.seeds == 30 and stats.mean_redraws is not None and stats.draw_ms_median > 0
    assert stats.dims and all(0 < sum(n for _, n in c) <= 30 for c in stats.dims.values())
    assert sum(n for _, n in stats.choices["depth"]) == 30  # nested choices: fewer
    assert {v for v, _ in stats.choices["act1"]} == {"relu", "sigmoid", "tanh"}


def test_the_cli_syncs_a_course_folder(session, tmp_path, database_url, monkeypatch,
                                       make_course):
    from server.cli import main

    monkeypatch.setenv("NABLA_DATABASE_URL", database_url)
    course = make_course(session, "C101")
    session.commit()
    (tmp_path / "tiny.toml").write_text(tiny("Course copy"))
    runner = CliRunner()
    result = runner.invoke(main, ["problems", "sync", str(tmp_path), "--course", "C101",
                                  "--json"])
    key = f"tiny.c{course.id}"
    assert json.loads(result.output)["new_versions"] == [key]
    exported = runner.invoke(main, ["problems", "export", "tiny", "--course", "C101"])
    assert exported.output == tiny("Course copy")
    missing = runner.invoke(main, ["problems", "export", "tiny"])
    assert missing.exit_code == 1 and "no problem 'tiny' in the shared bank" in missing.output
