"""services.grading: store, commit, grade, record, on the real problem bank."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading

import pytest
from sqlalchemy import select

from server.models import Submission, User
from server.services import feedback, grading, submissions
from server.services.errors import Forbidden, NotFound, ValidationError

SECRET = b"grading-test-secret-" + b"x" * 20
MINUTE = dt.timedelta(minutes=1)


@pytest.fixture
def fake_bank(engine_bank):
    """make_assignment draws problems from the real bank in this module."""
    return engine_bank


# --- the answer text (no database) --------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (None, "must be a string, got NoneType"),
        (["dx = 1"], "must be a string, got list"),
        ("", "is empty"),
        (" \n\t\n", "is empty"),
        ("dx = 1\x00", "NUL character"),
        ("dx = 1 # \ud800", "not valid Unicode at position 9"),
        ("x" * (grading.MAX_ANSWER_CHARS + 1), "the limit is 20000"),
    ],
)
def test_bad_answer_text_names_the_field_and_the_reason(answer, reason):
    with pytest.raises(ValidationError) as info:
        grading.clean_answer(answer)
    assert info.value.field == "answer" and reason in info.value.reason
    assert isinstance(info.value, grading.AnswerTooLarge) == reason.startswith("the limit")


def test_line_ends_are_normalized():
    cleaned = grading.clean_answer("dz7 = doutput\r\ndb3 = doutput\r")
    assert cleaned == "dz7 = doutput\ndb3 = doutput\n"


@pytest.mark.parametrize("key", ["short", "x" * 65, "nøn-ascii-key", "tab\there-key"])
def test_bad_submission_keys_are_refused(key):
    with pytest.raises(ValidationError, match="submission_key"):
        grading.clean_client_key(key)


def test_feedback_lines_mark_correct_wrong_and_carried():
    result = {"errors": [], "equations": [
        {"line": 1, "target": "dz7", "verdict": "correct", "rule_correct": True, "message": ""},
        {"line": 2, "target": "dz5", "verdict": "wrong_shape", "rule_correct": False,
         "message": "mask from the wrong variable"},
        {"line": 3, "target": "dz4", "verdict": "incorrect", "rule_correct": True,
         "message": "right rule; the value carries the mistake from line 2"},
    ]}
    lines = feedback.annotated_lines("dz7 = doutput\ndz5 = x\ndz4 = dz5\n# done", result)
    assert [(line["verdict"], line["mark"]) for line in lines] == [
        ("correct", "✓"), ("wrong", "✗"), ("carried", "✗"), (None, "")]
    assert lines[1]["messages"] == ["mask from the wrong variable"]
    assert "carries the mistake from line 2" in lines[2]["messages"][0]


# --- with a database ----------------------------------------------------------------------


@pytest.fixture
def people(session, make_user, make_course):
    student = make_user(session, "student1@example.edu", "Student One")
    other = make_user(session, "student2@example.edu", "Student Two")
    course = make_course(session, members={student: "student", other: "student"})
    return student, other, course


def _submit(session, bank, user, assignment, problem_id, answer, *, now=None, key=None,
            run_job=None, judge=None):
    return grading.submit_answer(
        session, user=user, assignment_id=assignment.id, problem_id=problem_id, answer=answer,
        now=now or assignment.open_at + MINUTE, bank=bank, secret=SECRET,
        commit=session.commit, client_ip="203.0.113.7", client_key=key, run_job=run_job,
        judge=judge)


@pytest.fixture(scope="module")
def misbehaving_judge():
    """Real judge processes whose answers ``#test:ACTION`` misbehave on purpose
    (tests/judge/tasks_for_tests.py); other answers are graded for real."""
    from server.judge import Judge

    judge = Judge(size=1, timeout_s=1.0, memory_mb=256, tasks="tests.judge.tasks_for_tests")
    yield judge
    judge.close()


def _model_answer(session, bank, user, assignment, problem_id):
    from server.engine.problem import model_answer

    ap = next(p for p in assignment.problems if p.problem_id == problem_id)
    row = grading.ensure_instance(session, user, ap, bank, SECRET)
    spec = grading.spec_for_version(bank, row.problem_version)
    return model_answer(spec, grading.engine_instance(spec, json.loads(row.reference_json)))


def _in_db(db_engine, submission_id):
    """The stored row as another connection sees it (what a crash would leave)."""
    from server.db import make_sessionmaker

    with make_sessionmaker(db_engine)() as other:
        row = other.get(Submission, submission_id)
        return None if row is None else (row.status, row.attempt, row.answer)


@pytest.mark.usefixtures("db_backend")
class TestEquations:
    def test_model_answer_scores_one_and_uses_an_attempt(self, session, engine_bank, people,
                                                         make_assignment):
        student, _, course = people
        hw = make_assignment(session, course, problems=("mlp-relu",), max_attempts=3)
        answer = _model_answer(session, engine_bank, student, hw, "mlp-relu")
        result = _submit(session, engine_bank, student, hw, "mlp-relu", answer)
        sub = result.submission
        assert result.created and (sub.status, sub.attempt, sub.score) == ("graded", 1, 1.0)
        assert (sub.kind, sub.client_ip, sub.late, sub.answer) == (
            "equations", "203.0.113.7", False, answer)
        assert sub.graded_at is not None
        assert set(sub.result) >= {"valid", "score", "errors", "equations", "gradients"}
        assert all(g["verdict"] == "correct" for g in sub.result["gradients"].values())
        assert submissions.attempts_left(session, sub, student.id) == 2

    def test_a_wrong_mask_is_named_once_and_later_lines_are_carried(
            self, session, engine_bank, people, make_assignment):
        student, _, course = people
        hw = make_assignment(session, course, problems=("mlp-relu",))
        answer = _model_answer(session, engine_bank, student, hw, "mlp-relu")
        wrong = answer.replace("dz6 * (z5 > 0).T", "dz6 * (z2 > 0).T")
        assert wrong != answer
        sub = _submit(session, engine_bank, student, hw, "mlp-relu", wrong).submission
        assert sub.status == "graded" and 0 < sub.score < 1
        lines = feedback.annotated_lines(sub.answer, sub.result)
        verdicts = [line["verdict"] for line in lines if line["verdict"]]
        assert verdicts[:4] == ["correct"] * 4 and verdicts[4] == "wrong"
        assert "carried" in verdicts[5:]

    def test_invalid_answers_cost_no_attempt(self, session, engine_bank, people,
                                             make_assignment):
        student, _, course = people
        hw = make_assignment(session, course, problems=("mlp-relu",), max_attempts=1)
        invalid = _submit(session, engine_bank, student, hw, "mlp-relu", "dz7 = = doutput")
        sub = invalid.submission
        assert (sub.status, sub.attempt, sub.score) == ("invalid", None, None)
        assert sub.result["valid"] is False and sub.result["errors"][0]["line"] == 1
        answer = _model_answer(session, engine_bank, student, hw, "mlp-relu")
        graded = _submit(session, engine_bank, student, hw, "mlp-relu", answer).submission
        assert (graded.status, graded.attempt) == ("graded", 1)
        refused = _submit(session, engine_bank, student, hw, "mlp-relu", answer).submission
        assert refused.status == "refused" and "no attempts left" in refused.result["refused"]
        assert session.query(Submission).count() == 3  # every text is kept

    def test_late_credit_applies_and_after_late_until_the_text_is_stored_refused(
            self, session, engine_bank, people, make_assignment):
        student, _, course = people
        hw = make_assignment(session, course, problems=("mlp-relu",), open_offset_h=-48,
                             due_offset_h=-1, late_offset_h=1, late_credit=40)
        answer = _model_answer(session, engine_bank, student, hw, "mlp-relu")
        late = _submit(session, engine_bank, student, hw, "mlp-relu", answer,
                       now=hw.due_at + MINUTE).submission
        assert (late.status, late.late, late.score) == ("graded", True, 0.4)
        assert late.result["score"] == 1.0 and late.result["credit"] == 0.4
        closed = _submit(session, engine_bank, student, hw, "mlp-relu", answer + "\n# again",
                         now=hw.late_until + MINUTE).submission
        assert (closed.status, closed.attempt, closed.score) == ("refused", None, None)
        assert "closed" in closed.result["refused"] and closed.answer.endswith("# again")

    def test_the_answer_is_committed_before_grading_and_no_lock_is_held(
            self, session, engine_bank, people, make_assignment, db_engine, monkeypatch):
        student, _, course = people
        hw = make_assignment(session, course, problems=("mlp-relu",))
        session.commit()
        seen = []
        real_grade_job = grading.grade_job

        def grade_job(job, **kwargs):
            # Another connection can read (and, on SQLite, lock) the database
            # while grading runs, and finds the answer stored and pending.
            seen.append(_in_db(db_engine, job.submission_id))
            return real_grade_job(job, **kwargs)

        monkeypatch.setattr(grading, "grade_job", grade_job)
        sub = _submit(session, engine_bank, student, hw, "mlp-relu", "dz7 = doutput").submission
        assert seen == [("pending", 1, "dz7 = doutput")]
        assert sub.status == "graded"

    @pytest.mark.parametrize("action", ["raise", "crash"])
    def test_an_engine_crash_is_recorded_as_an_error_that_costs_no_attempt(
            self, session, engine_bank, people, make_assignment, misbehaving_judge, caplog,
            action):
        student, _, course = people
        hw = make_assignment(session, course, problems=("mlp-relu",), max_attempts=1)
        sub = _submit(session, engine_bank, student, hw, "mlp-relu", f"#test:{action}",
                      judge=misbehaving_judge).submission
        assert (sub.status, sub.attempt, sub.score) == ("error", None, None)
        assert "costs no attempt" in sub.result["error"]
        assert "grading submission" in caplog.text
        assert ("engine bug" if action == "raise" else "died") in caplog.text
        assert submissions.attempts_left(session, sub, student.id) == 1

    @pytest.mark.parametrize(("action", "words"), [
        ("regex", "took too long to grade (more than 1 s)"),
        ("tower", "took too long to grade (more than 1 s)"),
        ("allocate", "needed more memory to grade than allowed"),
    ])
    def test_grading_that_takes_too_long_or_too_much_memory_is_stopped_and_costs_no_attempt(
            self, session, engine_bank, people, make_assignment, misbehaving_judge, caplog,
            action, words, request):
        student, _, course = people
        hw = make_assignment(session, course, problems=("mlp-relu",), max_attempts=1)
        if action == "allocate":
            # Memory must stop it, not the clock: under a loaded machine, allocating
            # 256 MB 64 MB at a time once took longer than the 1 s limit of the others.
            from server.judge import Judge

            misbehaving_judge = Judge(size=1, timeout_s=30.0, memory_mb=256,
                                      tasks="tests.judge.tasks_for_tests")
            request.addfinalizer(misbehaving_judge.close)
        result = _submit(session, engine_bank, student, hw, "mlp-relu", f"#test:{action}",
                         judge=misbehaving_judge)
        sub = result.submission
        assert (sub.status, sub.attempt, sub.score) == ("error", None, None)
        assert words in sub.result["error"] and "costs no attempt" in sub.result["error"]
        assert sub.result["reason"] in ("timeout", "memory")
        assert result.attempts_left == 1 and f"submission {sub.id}" in caplog.text
        # the judge carries on: the next answer is graded, and takes the one attempt
        answer = _model_answer(session, engine_bank, student, hw, "mlp-relu")
        sub = _submit(session, engine_bank, student, hw, "mlp-relu", answer,
                      judge=misbehaving_judge).submission
        assert (sub.status, sub.attempt, sub.score) == ("graded", 1, 1.0)

    def test_the_same_form_key_stores_one_submission(self, session, engine_bank, people,
                                                     make_assignment):
        student, _, course = people
        hw = make_assignment(session, course, problems=("mlp-relu",))
        first = _submit(session, engine_bank, student, hw, "mlp-relu", "dz7 = doutput",
                        key="k" * 22)
        second = _submit(session, engine_bank, student, hw, "mlp-relu", "dz7 = doutput",
                         key="k" * 22)
        assert first.created and not second.created
        assert second.submission.id == first.submission.id
        assert session.query(Submission).count() == 1
        third = _submit(session, engine_bank, student, hw, "mlp-relu", "dz7 = doutput",
                        key="m" * 22)
        assert third.created and third.submission.attempt == 2

    def test_grading_uses_the_spec_version_the_instance_was_drawn_from(
            self, session, engine_bank, people, make_assignment):
        student, _, course = people
        hw = make_assignment(session, course, problems=("mlp-relu",))
        answer = _model_answer(session, engine_bank, student, hw, "mlp-relu")
        # The bank's spec changes after the student started (a TA edited it).
        edited = dataclasses.replace(engine_bank["mlp-relu"], version="edited")
        bank = {**engine_bank, "mlp-relu": edited}
        sub = _submit(session, bank, student, hw, "mlp-relu", answer).submission
        assert sub.score == 1.0
        version = sub.instance.problem_version
        assert grading.spec_for_version(bank, version).version == version.spec_hash

    def test_the_bank_is_asked_once_per_spec_version(
            self, session, engine_bank, people, make_assignment, monkeypatch):
        student, _, course = people
        hw = make_assignment(session, course, problems=("mlp-relu",))
        answer = _model_answer(session, engine_bank, student, hw, "mlp-relu")
        monkeypatch.setattr(grading, "_SPEC_CACHE", type(grading._SPEC_CACHE)())
        asked = []

        class CountingBank(dict):
            def get(self, key, default=None):
                asked.append(key)
                return super().get(key, default)

        bank = CountingBank(engine_bank)
        for _ in range(3):
            assert _submit(session, bank, student, hw, "mlp-relu", answer).submission.score == 1
        assert asked == ["mlp-relu"]  # a version's text never changes: its spec is kept

    def test_a_problem_outside_my_courses_is_not_found_and_nothing_is_stored(
            self, session, engine_bank, people, make_user, make_course, make_assignment):
        student, _, _ = people
        stranger = make_user(session, "stranger@example.edu", "Stranger")
        elsewhere = make_course(session, "CS999", members={stranger: "student"})
        hw = make_assignment(session, elsewhere, problems=("mlp-relu",))
        with pytest.raises(NotFound, match="mlp-relu"):
            _submit(session, engine_bank, student, hw, "mlp-relu", "dz7 = doutput")
        with pytest.raises(NotFound):
            _submit(session, engine_bank, stranger, hw, "no-such-problem", "dz7 = doutput")
        assert session.query(Submission).count() == 0


@pytest.mark.usefixtures("db_backend")
def test_numpy_answers_run_in_the_sandbox(session, engine_bank, people, make_assignment):
    student, _, course = people
    hw = make_assignment(session, course, problems=("mlp-relu-numpy",), max_attempts=2)
    answer = _model_answer(session, engine_bank, student, hw, "mlp-relu-numpy")
    sub = _submit(session, engine_bank, student, hw, "mlp-relu-numpy", answer).submission
    assert (sub.kind, sub.status, sub.attempt, sub.score) == ("numpy", "graded", 1, 1.0)
    broken = "import numpy as np\n\ndef backward(**kw)\n    return {}\n"
    invalid = _submit(session, engine_bank, student, hw, "mlp-relu-numpy", broken).submission
    assert (invalid.status, invalid.attempt) == ("invalid", None)
    assert invalid.result["errors"][0]["line"] == 3
    transposed = answer.replace("dW3 = z6 @ dz7", "dW3 = (z6 @ dz7).T")
    assert transposed != answer
    sub = _submit(session, engine_bank, student, hw, "mlp-relu-numpy", transposed).submission
    assert sub.result["gradients"]["dW3"]["verdict"] == "transposed" and sub.attempt == 2


@pytest.mark.usefixtures("db_backend")
def test_hidden_instances_are_drawn_per_submission_and_stored(session, engine_bank, people,
                                                              make_assignment):
    student, _, course = people
    hw = make_assignment(session, course, problems=("mlp-relu-numpy",), max_attempts=5)
    answer = _model_answer(session, engine_bank, student, hw, "mlp-relu-numpy")
    seen_dims: list[list[tuple[int, ...]]] = []

    stored_while_graded: list[set[str | None]] = []

    def recording_sandbox(source, calls, **kwargs):
        from server.sandbox import run_job

        seen_dims[-1].extend(tuple(call["W1"].shape) for call in calls)
        # The pending row, as committed before grading, already carries its seeds.
        with session.get_bind().connect() as connection:
            stored_while_graded[-1].add(connection.scalar(
                select(Submission.hidden_seeds_json).order_by(Submission.id.desc()).limit(1)))
        return run_job(source, calls, **kwargs)

    subs = []
    for _ in range(2):
        seen_dims.append([])
        stored_while_graded.append(set())
        subs.append(_submit(session, engine_bank, student, hw, "mlp-relu-numpy", answer,
                            run_job=recording_sandbox).submission)
    first, second = subs
    assert first.score == second.score == 1.0
    assert len(first.hidden_seeds) == len(second.hidden_seeds) == grading.HIDDEN_INSTANCES
    assert first.hidden_seeds != second.hidden_seeds
    # Drawn from the secret and a nonce before the row was stored, and stored with it.
    assert all(0 <= seed < 2**31 for seed in first.hidden_seeds + second.hidden_seeds)
    assert [[json.loads(text) for text in texts] for texts in stored_while_graded] == [
        [first.hidden_seeds], [second.hidden_seeds]]
    # The same own instance, other hidden instances for each submission; one
    # instance per sandbox job (the jobs of one submission run concurrently).
    from server.engine.instance import ArrayInstance, draw_hidden_instances

    spec = engine_bank["mlp-relu-numpy"]
    own = ArrayInstance.from_json(json.loads(first.instance.reference_json))
    for sub, dims in zip((first, second), seen_dims):
        hidden = draw_hidden_instances(spec, own, grading.hidden_seeds_of(
            sub, json.loads(sub.instance.reference_json)))
        assert sorted(dims) == sorted(tuple(i.values["W1"].shape) for i in [own, *hidden])


@pytest.mark.usefixtures("db_backend")
def test_a_sandbox_failure_costs_no_attempt(session, engine_bank, people, make_assignment,
                                            caplog):
    from server.sandbox import JobResult

    student, _, course = people
    hw = make_assignment(session, course, problems=("mlp-relu-numpy",), max_attempts=1)

    def broken_sandbox(*args, **kwargs):
        return JobResult(status="error", message="sandbox worker unavailable: gone")

    sub = _submit(session, engine_bank, student, hw, "mlp-relu-numpy",
                  "def backward(**kw):\n    return {}\n", run_job=broken_sandbox).submission
    assert (sub.status, sub.attempt) == ("error", None)
    assert "costs no attempt" in sub.result["error"] and "gone" not in sub.result["error"]
    assert "sandbox worker unavailable" in caplog.text
    assert submissions.attempts_left(session, sub, student.id) == 1


@pytest.mark.usefixtures("db_backend")
def test_expression_answers(session, engine_bank, people, make_assignment):
    student, _, course = people
    pid = "rule-4a-generalized-chain"
    hw = make_assignment(session, course, problems=(pid,))
    answer = _model_answer(session, engine_bank, student, hw, pid)
    sub = _submit(session, engine_bank, student, hw, pid, answer).submission
    assert (sub.kind, sub.status, sub.score) == ("expression", "graded", 1.0)
    sub = _submit(session, engine_bank, student, hw, pid, f"-({answer})").submission
    assert sub.score == 0.0 and sub.result["gradients"]["dx"]["verdict"] == "sign"
    sub = _submit(session, engine_bank, student, hw, pid, "x +").submission
    assert (sub.status, sub.attempt) == ("invalid", None)


@pytest.mark.usefixtures("db_backend")
def test_students_see_only_their_submissions_and_staff_see_all(
        session, engine_bank, people, make_assignment, make_course):
    student, other, course = people
    hw = make_assignment(session, course, problems=("mlp-relu",), max_attempts=1)
    mine = _submit(session, engine_bank, student, hw, "mlp-relu", "dz7 = doutput").submission
    refused = _submit(session, engine_bank, student, hw, "mlp-relu", "db3 = doutput").submission
    assert submissions.own_submission(session, student, mine.id) is mine
    with pytest.raises(Forbidden, match="not yours"):
        submissions.own_submission(session, other, mine.id)
    with pytest.raises(NotFound):
        submissions.own_submission(session, student, mine.id + 1000)
    listed = submissions.course_submissions(session, course, hw.id)
    assert [s.id for s in listed] == [refused.id, mine.id]
    assert submissions.course_submission_counts(session, course) == {
        hw.id: {"graded": 1, "refused": 1}}
    assert submissions.course_submissions(session, course, hw.id, status="refused") == [refused]
    assert submissions.course_submission(session, course, mine.id) is mine
    elsewhere = make_course(session, "CS999")
    with pytest.raises(NotFound):  # staff of another course do not see it
        submissions.course_submission(session, elsewhere, mine.id)
    assert submissions.course_submissions(session, elsewhere) == []


# --- concurrency ----------------------------------------------------------------------------


def _race(db_backend, db_engine, engine_bank, monkeypatch, user_id, assignment_id, keys):
    """Submit once per key from as many threads, each with its own session."""
    from server.db import make_sessionmaker

    factory = make_sessionmaker(db_engine)
    barrier = threading.Barrier(len(keys))
    real_store = grading.store_submission_once

    def store_together(*args, **kwargs):
        if db_backend == "postgresql":
            # Every racer has read the attempts before any inserts.
            # (SQLite's BEGIN IMMEDIATE serializes them instead.)
            barrier.wait(timeout=10)
        return real_store(*args, **kwargs)

    monkeypatch.setattr(grading, "store_submission_once", store_together)
    outcomes, errors = [], []

    def submit(key):
        try:
            with factory() as sess:
                user = sess.get(User, user_id)
                result = grading.submit_answer(
                    sess, user=user, assignment_id=assignment_id, problem_id="mlp-relu",
                    answer="dz7 = doutput", now=grading._utcnow(), bank=engine_bank,
                    secret=SECRET, commit=sess.commit, client_key=key)
                sess.commit()
                outcomes.append((result.submission.id, result.submission.status,
                                 result.submission.attempt, result.created))
        except Exception as exc:  # pragma: no cover - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=submit, args=(key,)) for key in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    return outcomes


def _prepare_race(session, engine_bank, people, make_assignment, max_attempts):
    student, _, course = people
    hw = make_assignment(session, course, problems=("mlp-relu",), max_attempts=max_attempts)
    grading.ensure_instance(session, student, hw.problems[0], engine_bank, SECRET)
    session.commit()
    return student.id, hw.id


def test_two_submissions_racing_for_the_last_attempt(db_backend, db_engine, session,
                                                     engine_bank, people, make_assignment,
                                                     monkeypatch):
    user_id, hw_id = _prepare_race(session, engine_bank, people, make_assignment, 1)
    outcomes = _race(db_backend, db_engine, engine_bank, monkeypatch, user_id, hw_id,
                     ["a" * 16, "b" * 16])
    assert sorted((status, attempt) for _, status, attempt, _ in outcomes) == [
        ("graded", 1), ("refused", None)]
    session.expire_all()
    assert session.query(Submission).count() == 2


def test_a_double_click_racing_with_itself_stores_once(db_backend, db_engine, session,
                                                       engine_bank, people, make_assignment,
                                                       monkeypatch):
    user_id, hw_id = _prepare_race(session, engine_bank, people, make_assignment, 5)
    outcomes = _race(db_backend, db_engine, engine_bank, monkeypatch, user_id, hw_id,
                     ["same-key-" + "x" * 10] * 2)
    assert len({sub_id for sub_id, *_ in outcomes}) == 1
    assert sorted(created for *_, created in outcomes) == [False, True]
    session.expire_all()
    assert session.query(Submission).count() == 1


def test_cached_engine_instances_follow_the_stored_document_not_the_row_id(engine_bank):
    # SQLite may give a new instance the id of a deleted one: grading must use
    # the new document, not an engine instance cached for the old one.
    from server.engine.problem import draw

    spec = engine_bank["mlp-relu"]
    for seed in (1, 2):
        inst = draw(spec, seed)
        n = inst.dims["N"]
        job = grading.GradingJob(1, spec, json.dumps(inst.to_json()), "dx = x")
        (line,) = grading.grade_job(job).result["equations"]
        assert f"dx is {n}×1 but should be 1×{n}" in line["message"], seed


def test_feedback_groups_loop_steps_and_keeps_errors_past_the_last_line():
    result = {"errors": [{"line": 0, "message": "time limit"}, {"line": 9, "message": "eof"}],
              "equations": [
                  {"line": 2, "target": f"dz1[{t}]", "verdict": "sign", "rule_correct": False,
                   "message": "wrong sign"} for t in range(3)]}
    lines = feedback.annotated_lines("for t in range(3):\n    dz1[t] = -dz2[t]", result)
    assert lines[1]["messages"] == ["dz1[0], dz1[1], dz1[2]: wrong sign"]
    assert feedback.general_errors(result, "a\nb") == ["time limit", "eof"]


@pytest.mark.usefixtures("db_backend")
def test_an_attempt_number_given_back_is_taken_again(session, engine_bank, people,
                                                     make_assignment):
    """The store reads the attempts' count and highest number with the problem; a gap
    (an attempt given back below a used one) makes it look at the numbers themselves."""
    student, _, course = people
    hw = make_assignment(session, course, problems=("mlp-relu",), max_attempts=3)
    first, second = (_submit(session, engine_bank, student, hw, "mlp-relu",
                             "dz7 = doutput").submission for _ in range(2))
    assert (first.attempt, second.attempt) == (1, 2)
    first.attempt = None  # given back, as an invalid answer's or our error's is
    session.commit()
    third = _submit(session, engine_bank, student, hw, "mlp-relu", "dz7 = doutput")
    assert (third.submission.attempt, third.attempts_left) == (1, 1)
    fourth = _submit(session, engine_bank, student, hw, "mlp-relu", "dz7 = doutput")
    assert (fourth.submission.attempt, fourth.attempts_left) == (3, 0)
    fifth = _submit(session, engine_bank, student, hw, "mlp-relu", "dz7 = doutput")
    assert fifth.submission.status == "refused" and fifth.attempts_left == 0
