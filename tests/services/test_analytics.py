"""services.verdicts and services.analytics: known verdicts give known counts, on
SQLite and PostgreSQL; real grading and regrades write the verdicts table."""

from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import select

from server.engine.problem import draw as engine_draw
from server.engine.problem import model_answer
from server.models import Instance, ProblemVersion, Submission, SubmissionVerdict
from server.services import analytics, grading, jobs, regrade
from server.services.verdicts import normalise_line, record_verdicts

pytestmark = pytest.mark.usefixtures("db_backend")
SECRET = b"analytics-test-secret-" + b"x" * 20
SPEC = "mlp-random"  # its source is the stored spec text of the fake "mlp-relu"


def test_normalise_line_drops_numbering_comments_and_whitespace():
    assert normalise_line(" 12)  dW2 = ( z3 @ dz4 ).T   # why") == "dW2=(z3@dz4).T"
    assert normalise_line("3. dx += dz @ W") == "dx+=dz@W"


def model_steps_by_hand(engine_bank, choices):
    """gradient -> step, read off the numbered model answer (independently of
    services.verdicts): the first line writing the gradient."""
    spec = engine_bank[SPEC]
    for seed in range(200):
        inst = engine_draw(spec, seed)
        if inst.choices == choices:
            break
    steps = {}
    for line in model_answer(spec, inst).splitlines():
        number, target = re.match(r"(\d+)\. (\w+)", line).groups()
        steps.setdefault(target, int(number))
    return steps


RELU = {"act1": "relu", "act2": "relu", "depth": "two"}
TANH = {"act1": "tanh", "act2": "relu", "depth": "two"}


def _result(score, gradients, wrong=()):
    """A result as the engine gives it: ``wrong`` is [(line, target, verdict)]."""
    return {"valid": True, "score": score, "errors": [],
            "equations": [{"line": line, "target": target, "verdict": verdict,
                           "rule_correct": False, "message": ""}
                          for line, target, verdict in wrong],
            "gradients": {g: {"verdict": v, "message": ""} for g, v in gradients.items()}}


# (student, choices, [(status, score, gradients, answer, wrong lines)])
STUDENTS = {
    "s1": (RELU, [
        ("graded", 0.5, {"dW2": "transposed", "dx": "correct"},
         "1. dz7 = doutput\n2. dW2 = (z3 @ dz4).T", [(2, "dW2", "transposed")]),
        ("graded", 1.0, {"dW2": "correct", "dx": "correct"}, "dW2 = z3 @ dz4", []),
    ]),
    "s2": (RELU, [
        ("graded", 0.0, {"dW2": "wrong_shape", "dx": "missing"},
         "dx = dz1 @ W1.T\ndW2 = z4", [(1, "dx", "wrong_shape"), (2, "dW2", "wrong_shape")]),
        ("invalid", None, {}, "dx = ???", []),
    ]),
    "s3": (TANH, [
        ("graded", 0.5, {"dW2": "transposed", "dx": "correct"},
         "2)  dW2 = ( z3 @ dz4 ).T  # hm", [(1, "dW2", "transposed")]),
    ]),
    "s4": (TANH, []),  # started (an instance), never submitted
}


def build_known(session, make_user, make_course, make_assignment, make_instance,
                make_submission, engine_bank):
    """A course whose submissions have the verdicts of STUDENTS (and a staff one)."""
    teacher = make_user(session, "teacher@example.edu", "Teacher")
    users = {name: make_user(session, f"{name}@example.edu", name) for name in STUDENTS}
    course = make_course(session, members={teacher: "instructor",
                                           **{u: "student" for u in users.values()}})
    hw = make_assignment(session, course, problems=("mlp-relu",))
    ap = hw.problems[0]
    version = session.scalar(select(ProblemVersion).where(ProblemVersion.problem_id == "mlp-relu"))
    version.spec_text = engine_bank[SPEC].source
    version.spec_hash = f"analytics-{id(session)}-{session.bind.dialect.name}"
    for name, (choices, subs) in STUDENTS.items():
        user = users[name]
        make_instance(session, user, ap, choices=choices)
        for status, score, gradients, answer, wrong in subs:
            sub = make_submission(session, user, ap, answer, score=score)
            sub.status = status
            sub.result_json = json.dumps(_result(score, gradients, wrong)) \
                if status == "graded" else json.dumps({"valid": False})
            if status != "graded":
                sub.attempt = None
            session.flush()
            record_verdicts(session, sub)
    # Staff trying the problem do not count.
    make_instance(session, teacher, ap, choices=RELU)
    staff = make_submission(session, teacher, ap, "dW2 = z4", score=0.0)
    staff.result_json = json.dumps(_result(0.0, {"dW2": "transposed", "dx": "missing"},
                                           [(1, "dW2", "transposed")]))
    record_verdicts(session, staff)
    session.commit()
    return {"course": course, "hw": hw, "ap": ap, "users": users, "teacher": teacher}


@pytest.fixture
def known(session, make_user, make_course, make_assignment, make_instance, make_submission,
          engine_bank):
    return build_known(session, make_user, make_course, make_assignment, make_instance,
                       make_submission, engine_bank)


def expected_numbers(engine_bank):
    """Every number of the problem analytics, counted directly from STUDENTS."""
    subs = [(name, choices, s) for name, (choices, ss) in STUDENTS.items() for s in ss]
    graded = [(n, c, s) for n, c, s in subs if s[0] == "graded"]
    best = {}
    for name, _, s in graded:
        best[name] = max(best.get(name, 0.0), s[1])
    histogram = [0] * 10
    for score in best.values():
        histogram[min(9, int(score * 10 + 1e-9))] += 1
    attempts = {}
    for _, ss in STUDENTS.values():
        numbered = [s for s in ss if s[0] == "graded"]
        for k, s in enumerate(numbered, 1):
            if s[1] == 1.0:
                attempts[k] = attempts.get(k, 0) + 1
                break
    verdicts = {}
    for _, _, s in graded:
        for g, v in s[2].items():
            verdicts.setdefault(g, {}).setdefault(v, 0)
            verdicts[g][v] += 1
    mistakes = {}
    for name, choices, s in graded:
        if s[4]:
            line, target, _ = min(s[4])
            step = model_steps_by_hand(engine_bank, choices)[target]
            text = normalise_line(s[3].split("\n")[line - 1])
            entry = mistakes.setdefault(str(step), {"step": step, "target": target,
                                                    "submissions": 0, "names": set(),
                                                    "texts": {}})
            entry["submissions"] += 1
            entry["names"].add(name)
            entry["texts"].setdefault(text, set()).add(name)
    by_choice = {}
    for _, choices, s in graded:
        for key, label in choices.items():
            e = by_choice.setdefault(key, {}).setdefault(label, {"submissions": 0, "full": 0,
                                                                "scores": [], "mistakes": {}})
            e["submissions"] += 1
            e["full"] += s[1] == 1.0
            e["scores"].append(s[1])
            for v in s[2].values():
                if v != "correct":
                    e["mistakes"][v] = e["mistakes"].get(v, 0) + 1
    return {
        "students": {"started": len(STUDENTS), "submitted": len({n for n, _, _ in subs}),
                     "reached_100": len({n for n, _, s in graded if s[1] == 1.0})},
        "submissions": len(subs), "graded": len(graded), "score_histogram": histogram,
        "attempts_to_full": attempts, "gradient_verdicts": verdicts,
        "first_mistake_lines": {
            k: {"step": e["step"], "target": e["target"], "submissions": e["submissions"],
                "students": len(e["names"]),
                "lines": [{"text": t, "students": len(ns),
                           "submissions": sum(1 for _, _, s in graded if s[4] and
                                              normalise_line(s[3].split("\n")[min(s[4])[0] - 1])
                                              == t)}
                          for t, ns in e["texts"].items()]}
            for k, e in mistakes.items()},
        "by_choice": {k: {label: {"submissions": e["submissions"], "full": e["full"],
                                  "mean_score": round(sum(e["scores"]) / len(e["scores"]), 6),
                                  "mistakes": e["mistakes"]}
                          for label, e in options.items()}
                      for k, options in by_choice.items()},
    }


def test_problem_analytics_match_the_directly_counted_numbers(session, known, engine_bank):
    got = analytics.problem_analytics(session, known["course"], "mlp-relu")
    want = expected_numbers(engine_bank)
    for key, value in want.items():
        assert got[key] == value, key
    # Spot checks by hand, in case both sides share a mistake.
    assert got["students"] == {"started": 4, "submitted": 3, "reached_100": 1}
    assert got["gradient_verdicts"]["dW2"] == {"transposed": 2, "wrong_shape": 1, "correct": 1}
    assert got["score_histogram"] == [1, 0, 0, 0, 0, 1, 0, 0, 0, 1]
    assert got["by_choice"]["act1"]["tanh"]["mistakes"] == {"transposed": 1}
    assert sorted((step["target"], line["text"], line["students"])
                  for step in got["first_mistake_lines"].values() for line in step["lines"]) \
        == [("dW2", "dW2=(z3@dz4).T", 2), ("dx", "dx=dz1@W1.T", 1)]
    same = analytics.problem_analytics(session, known["course"], "mlp-relu",
                                       known["hw"].id)
    assert same["gradient_verdicts"] == got["gradient_verdicts"]
    with pytest.raises(analytics.NotFound):
        analytics.problem_analytics(session, known["course"], "mlp-relu", known["hw"].id + 999)


def test_assignment_analytics_count_scores_days_and_late_share(session, known):
    got = analytics.assignment_analytics(session, known["course"], known["hw"].id)
    assert got["score_histogram"] == [1, 0, 0, 0, 0, 1, 0, 0, 0, 1]
    assert got["students"] == 4 and got["students_scored"] == 3
    assert sum(day["submissions"] for day in got["timeline"]) == 5
    assert got["timeline"][-1]["students_full_total"] == 1
    assert (got["graded"], got["late"], got["late_share"]) == (4, 0, 0.0)
    assert got["problems"] == [{"problem": "mlp-relu", "submissions": 5, "graded": 4,
                                "students_submitted": 3, "students_100": 1}]


# --- real grading and a regrade ------------------------------------------------------

PROBLEM = "rule-1b-matmul"
HALF = "1. dW = dz @ x\n2. dx = dz @ W\n"  # dW wrong


@pytest.fixture
def real(session, make_user, make_course, make_assignment, engine_bank):
    teacher = make_user(session, "teacher@example.edu", "Teacher")
    student = make_user(session, "s@example.edu", "S")
    course = make_course(session, members={teacher: "instructor", student: "student"})
    hw = make_assignment(session, course, problems=(PROBLEM,))
    session.commit()
    result = grading.submit_answer(
        session, user=student, assignment_id=hw.id, problem_id=PROBLEM, answer=HALF,
        now=grading._utcnow(), bank=engine_bank, secret=SECRET, commit=session.commit)
    session.commit()
    return {"course": course, "hw": hw, "teacher": teacher, "sub": result.submission}


@pytest.fixture
def fake_bank(engine_bank):
    return engine_bank


def test_grading_writes_the_verdicts_and_a_regrade_that_changes_one_changes_analytics(
        session, db_engine, real, engine_bank):
    sub = real["sub"]
    rows = list(session.scalars(select(SubmissionVerdict).where(
        SubmissionVerdict.submission_id == sub.id).order_by(SubmissionVerdict.position)))
    result = sub.result
    assert [(r.gradient, r.verdict) for r in rows] == [
        (g, v["verdict"]) for g, v in result["gradients"].items()]
    wrong = rows[0] if rows[0].gradient == "dW" else rows[1]
    assert wrong.verdict != "correct"
    assert (rows[0].first_line, rows[0].first_target, rows[0].first_text) == (
        1, "dW", "dW=dz@x")
    instance = session.get(Instance, sub.instance_id)
    spec = engine_bank[PROBLEM]
    model = model_answer(spec, engine_draw(spec, instance.seed))
    step = next(int(line.split(".")[0]) for line in model.splitlines()
                if re.match(r"\d+\. dW ", line))
    assert rows[0].first_step == step
    before = analytics.problem_analytics(session, real["course"], PROBLEM)
    assert before["gradient_verdicts"]["dW"] == {wrong.verdict: 1}

    # An older engine had called it something else: a regrade puts it right.
    stale = dict(result, gradients={**result["gradients"],
                                    "dW": {"verdict": "sign", "message": ""}})
    sub.result_json = json.dumps(stale)
    record_verdicts(session, sub)
    session.commit()
    assert analytics.problem_analytics(session, real["course"], PROBLEM)[
        "gradient_verdicts"]["dW"] == {"sign": 1}
    job = regrade.start_regrade(session, real["course"], actor=real["teacher"],
                                reason="engine fix", assignment_id=real["hw"].id)
    session.commit()
    for thread in jobs.dispatch(db_engine, job, {"threads": 1, "bank": engine_bank}):
        thread.join(120)
    session.expire_all()
    assert session.get(Submission, sub.id).result["gradients"]["dW"]["verdict"] == wrong.verdict
    after = analytics.problem_analytics(session, real["course"], PROBLEM)
    assert after["gradient_verdicts"]["dW"] == {wrong.verdict: 1}
    assert after["first_mistake_lines"] == before["first_mistake_lines"]


def test_the_migration_backfill_rebuilds_the_rows_from_stored_results(session, known):
    import importlib.util
    from pathlib import Path

    from sqlalchemy import delete

    path = Path(__file__).parents[2] / "migrations/versions/0008_submission_verdicts.py"
    loader = importlib.util.spec_from_file_location("migration_0008", path)
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    columns = [c for c in SubmissionVerdict.__table__.columns]
    written = sorted(session.execute(select(*columns)).all())
    session.execute(delete(SubmissionVerdict))
    module.backfill(session.connection())
    assert sorted(session.execute(select(*columns)).all()) == written
    assert len(written) == 4 * 2 + 2  # four graded student submissions and the staff's
    session.rollback()

