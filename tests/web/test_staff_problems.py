"""The staff problem pages and API: ownership, the editor, previews, versions."""

from __future__ import annotations

import html

import pytest

from server.engine.bank import BANK_DIR
from server.models import Instance, ProblemVersion
from server.services import bank
from server.services.tokens import create_token
from tests.services.test_bank import tiny

from .helpers import login, post_form

pytestmark = pytest.mark.usefixtures("db_backend")


@pytest.fixture
def people(app, app_session, make_user, make_course):
    app.config.pop("NABLA_PROBLEM_BANK")  # the database is the bank
    users = {name: make_user(app_session, f"{name}@example.edu", name.title())
             for name in ("ta", "student", "tb", "student2")}
    a = make_course(app_session, "A101", members={users["ta"]: "ta", users["student"]: "student",
                                                  users["student2"]: "student"})
    b = make_course(app_session, "B101", members={users["tb"]: "ta"})
    bank.save_version(app_session, tiny(), origin="sync")
    bank.save_version(app_session, tiny("B's own"), course=b)
    app_session.commit()
    tokens = {name: create_token(app_session, user, "t")[1] for name, user in users.items()}
    app_session.commit()
    return {"users": users, "a": a, "b": b, "tokens": tokens}


def _text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def test_the_list_shows_own_and_shared_problems_only(client, people):
    login(client, "ta@example.edu")
    page = _text(client.get("/staff/A101/problems"))
    assert "A relu layer" in page and "Copy to this course" in page
    assert "B's own" not in page
    b_key = f"tiny.c{people['b'].id}"
    for path in (f"/staff/A101/problems/{b_key}", f"/staff/A101/problems/{b_key}/edit",
                 f"/staff/A101/problems/{b_key}/preview?seed=1"):
        assert client.get(path).status_code == 404, path
    assert client.get("/staff/B101/problems").status_code == 404  # not in B101
    assert client.get("/staff/A101/problems/tiny/edit").status_code == 403  # shared


def test_students_never_see_staff_pages(client, people):
    login(client, "student@example.edu")
    for path in ("/staff/A101/problems", "/staff/A101/problems/tiny/preview?seed=0",
                 "/staff/A101/problems/tiny/spec.toml"):
        assert client.get(path).status_code == 403, path


def test_copy_edit_validate_diff_save_and_versions(client, people, app_session):
    login(client, "ta@example.edu")
    response = post_form(client, "/staff/A101/problems", "/staff/A101/problems/tiny/copy", {})
    key = f"tiny.c{people['a'].id}"
    assert response.status_code == 302 and response.headers["Location"].endswith(
        f"/staff/A101/problems/{key}/edit")
    edit = f"/staff/A101/problems/{key}/edit"
    bad = tiny().replace("z2 = relu(z1)", "z2 = relu(z9)")
    page = post_form(client, edit, edit, {"spec": bad, "action": "validate"})
    assert page.status_code == 422
    assert "line 9:" in _text(page) and "z9" in _text(page)
    changed = tiny("Edited")
    page = post_form(client, edit, edit, {"spec": changed, "action": "validate"})
    assert page.status_code == 200
    assert '+title = "Edited"' in _text(page) and "Save as a new version" in _text(page)
    stats = _text(post_form(client, edit, edit, {"spec": changed, "action": "stats"}))
    assert "Draw statistics (100 seeds)" in stats and "Mean redraws" in stats
    saved = post_form(client, edit, edit, {"spec": changed, "action": "save"})
    assert saved.status_code == 302
    page = _text(client.get(f"/staff/A101/problems/{key}"))
    assert "Ta" in page and "editor" in page and "copy" in page
    versions = app_session.query(ProblemVersion).filter_by(problem_id=key).all()
    assert sorted(v.version for v in versions) == [1, 2]
    assert client.get(f"/staff/A101/problems/{key}/preview?seed=0&version=1").status_code == 200
    assert client.get(f"/staff/A101/problems/{key}/spec.toml?version=2").get_data(
        as_text=True) == changed


def test_preview_shows_the_student_view_references_solution_and_grades(client, people):
    login(client, "ta@example.edu")
    page = _text(client.get("/staff/A101/problems/tiny/preview?seed=4"))
    assert "Your dimensions" in page and "<math" in page and "Reference gradients" in page
    assert "dW = x @ dz1" in page and "Next seed" in page and "seed=5" in page
    staff_part = page.split("For staff only")[1]
    assert "<code>dW</code>" in staff_part and "<code>dx</code>" in staff_part
    preview = "/staff/A101/problems/tiny/preview?seed=4"
    graded = _text(post_form(client, preview, "/staff/A101/problems/tiny/preview",
                             {"seed": "4", "answer": "dz1 = dz2 * (z1 > 0).T\ndW = dz1.T @ x.T"
                              "\ndx = dz1 @ W"}))
    assert "transposed" in graded and "Score" in graded
    draft = _text(post_form(client, preview, "/staff/A101/problems/draft/preview",
                            {"seed": "2", "spec": tiny("A draft")}))
    assert "Draft" in draft and "A draft" in draft


def test_an_edit_never_changes_a_drawn_instance(client, people, app_session):
    import datetime as dt

    from sqlalchemy import select

    from server.models import utcnow
    from server.services.assignments import AssignmentDraft, ProblemChoice, create_assignment

    course = people["a"]
    key = bank.copy_to_course(app_session, course, "tiny", None).version.problem_id
    day = dt.timedelta(days=1)
    hw = create_assignment(app_session, course, AssignmentDraft(
        "Homework", utcnow() - day, utcnow() + day, [ProblemChoice(key)]),
        bank.DatabaseBank(app_session, course)).id
    app_session.commit()
    login(client, "student@example.edu")
    assert client.get(f"/assignments/{hw}/problems/{key}").status_code == 200
    bank.save_version(app_session, tiny("Second version"), course=people["a"])
    app_session.commit()
    first = _text(client.get(f"/assignments/{hw}/problems/{key}"))
    assert "A relu layer" in first and "Second version" not in first
    client.get("/logout")
    login(client, "student2@example.edu")
    second = _text(client.get(f"/assignments/{hw}/problems/{key}"))
    assert "Second version" in second
    versions = {i.user.email: i.problem_version.version
                for i in app_session.scalars(select(Instance))}
    assert versions == {"student@example.edu": 1, "student2@example.edu": 2}


def _api(client, method, path, token, body=None):
    return client.open(path, method=method, json=body,
                       headers={"Authorization": f"Bearer {token}"})


def test_the_api(client, people):
    t = people["tokens"]
    listed = _api(client, "GET", "/api/v1/courses/A101/problems", t["ta"]).get_json()
    assert [p["id"] for p in listed["problems"]] == ["tiny"]
    assert _api(client, "GET", "/api/v1/courses/A101/problems", t["student"]).status_code == 403
    assert _api(client, "GET", "/api/v1/courses/A101/problems", t["tb"]).status_code == 404
    put = "/api/v1/courses/A101/problems/"
    assert _api(client, "PUT", put + "tiny", t["ta"], {"spec": tiny()}).status_code == 403
    new = tiny().replace('id = "tiny"', 'id = "mine"')
    created = _api(client, "PUT", put + "mine", t["ta"], {"spec": new})
    assert created.status_code == 201
    assert created.get_json() == {"id": f"mine.c{people['a'].id}", "version": 1}
    again = _api(client, "PUT", put + "mine", t["ta"], {"spec": new})
    assert again.status_code == 200 and again.get_json()["version"] == 1
    bad = _api(client, "PUT", put + "mine", t["ta"], {"spec": new.replace("relu(z1)", "relu(q)")})
    assert bad.status_code == 422 and bad.get_json()["errors"][0]["line"] == 9
    assert _api(client, "PUT", put + "mine", t["student"], {"spec": new}).status_code == 403
    assert _api(client, "PUT", put + "mine", t["tb"], {"spec": new}).status_code == 404
    preview = _api(client, "POST", put + "mine/preview", t["ta"], {"seed": 2})
    body = preview.get_json()
    assert preview.status_code == 200 and body["grade"] is None
    assert "reference" in body["instance"] and body["solution"].startswith("1. dz1")
    graded = _api(client, "POST", put + "mine/preview", t["ta"],
                  {"seed": 2, "answer": body["solution"]}).get_json()["grade"]
    assert graded["score"] == 1.0 and graded["status"] == "graded"
    mlp = (BANK_DIR / "mlp-relu.toml").read_text()
    draft = _api(client, "POST", put + "mlp-relu/preview", t["ta"], {"seed": 7, "spec": mlp})
    solution = draft.get_json()["solution"]
    transposed = _api(client, "POST", put + "mlp-relu/preview", t["ta"], {
        "seed": 7, "spec": mlp,
        "answer": solution.replace("dW3 = z6 @ dz7", "dW3 = dz7.T @ z6.T")}).get_json()
    assert transposed["grade"]["gradients"]["dW3"]["verdict"] == "transposed"
    model = _api(client, "POST", put + "mlp-relu/preview", t["ta"],
                 {"seed": 7, "spec": mlp, "answer": solution}).get_json()
    assert model["grade"]["score"] == 1.0
    assert _api(client, "POST", put + "mine/preview", t["student"], {"seed": 2}).status_code \
        == 403


def test_the_preview_of_a_students_seed_is_what_that_student_sees(client, people, app_session):
    import datetime as dt
    import re

    from sqlalchemy import select

    from server.models import utcnow
    from server.services.assignments import AssignmentDraft, ProblemChoice, create_assignment

    day = dt.timedelta(days=1)
    hw = create_assignment(app_session, people["a"], AssignmentDraft(
        "Homework", utcnow() - day, utcnow() + day, [ProblemChoice("tiny")]),
        bank.DatabaseBank(app_session, people["a"])).id
    app_session.commit()
    login(client, "student@example.edu")
    student = _text(client.get(f"/assignments/{hw}/problems/tiny"))
    seed = app_session.scalar(select(Instance.seed))
    app_session.commit()  # SQLite: end the transaction (it holds the write lock)
    client.get("/logout")
    login(client, "ta@example.edu")
    staff = _text(client.get(f"/staff/A101/problems/tiny/preview?seed={seed}"))

    def sections(page: str) -> dict[str, str]:
        return dict(re.findall(r'<section aria-labelledby="(\w+)-heading">(.*?)</section>',
                               page, re.S))

    # One copy of the student's sections (templates/_problem.html): the same HTML on both.
    mine, theirs = sections(student), sections(staff)
    assert {"problem", "forward", "variables", "values"} <= set(mine) & set(theirs)
    for name in ("problem", "forward", "variables"):
        assert mine[name] == theirs[name], name
    assert "<math" in mine["forward"] and "Your dimensions: " in mine["problem"]

    def values(section: str) -> list[str]:
        return re.findall(r'<div class="value">.*?</div>', section, re.S)

    assert values(mine["values"]) and values(mine["values"]) == values(theirs["values"])
    assert "values.npz" in mine["values"] and "values.npz" not in theirs["values"]
    assert "<details open>" in theirs["values"]  # staff see them at once


@pytest.mark.parametrize("problem", ["rule-4a-generalized-chain", "mlp-relu-numpy"])
def test_expression_and_numpy_previews_grade_the_model_answer(client, people, app_session,
                                                              problem):
    bank.save_version(app_session, (BANK_DIR / f"{problem}.toml").read_text(), origin="sync")
    app_session.commit()
    login(client, "ta@example.edu")
    page = _text(client.get(f"/staff/A101/problems/{problem}/preview?seed=3"))
    assert "Model solution" in page
    if problem.startswith("rule-4a"):  # as the student sees it: constants where they are used
        assert "Your constants are already put into the definitions below" in page
    path = f"/api/v1/courses/A101/problems/{problem}/preview"
    body = _api(client, "POST", path, people["tokens"]["ta"], {"seed": 3}).get_json()
    graded = _api(client, "POST", path, people["tokens"]["ta"],
                  {"seed": 3, "answer": body["solution"]}).get_json()["grade"]
    assert graded["status"] == "graded" and graded["score"] == 1.0, graded


def test_a_new_problem_from_the_browser(client, people, app_session):
    login(client, "ta@example.edu")
    new = "/staff/A101/problems/new"
    assert 'id = &#34;my-problem&#34;' in client.get(new).get_data(as_text=True)
    assert post_form(client, new, new, {"spec": bank.EXAMPLE_SPEC, "action": "validate"}) \
        .status_code == 200
    saved = post_form(client, new, new, {"spec": bank.EXAMPLE_SPEC, "action": "save"})
    key = f"my-problem.c{people['a'].id}"
    assert saved.status_code == 302 and saved.headers["Location"].endswith(key)
    version = app_session.query(ProblemVersion).filter_by(problem_id=key).one()
    assert (version.author.email, version.origin) == ("ta@example.edu", "editor")
    renamed = bank.EXAMPLE_SPEC.replace("my-problem", "other")
    edit = f"/staff/A101/problems/{key}/edit"
    refused = post_form(client, edit, edit, {"spec": renamed, "action": "save"})
    assert refused.status_code == 422 and "line 1:" in _text(refused)


def test_the_api_does_not_reveal_another_courses_problem(client, people):
    t = people["tokens"]["ta"]
    b_key = f"tiny.c{people['b'].id}"
    put = _api(client, "PUT", f"/api/v1/courses/A101/problems/{b_key}", t, {"spec": tiny()})
    assert put.status_code == 422  # not 403: B's problem is not a shared one
    preview = _api(client, "POST", f"/api/v1/courses/A101/problems/{b_key}/preview", t, {})
    assert preview.status_code == 404
    assert _api(client, "POST", "/api/v1/courses/A101/problems/tiny/preview", t,
                {"seed": -1}).status_code == 400


# --- issue 22: a spec's work in the judge, under its budget and limits --------------------


def _no_check_here(monkeypatch):
    """The web worker must not check a spec (the judge does): fail if it asks."""
    from server.judge import specs

    def refuse(*args, **kwargs):
        raise AssertionError("a spec was sent to the judge")

    monkeypatch.setattr(specs, "check_text", refuse)


def test_saving_an_unchanged_text_checks_nothing(client, people, app_session, monkeypatch):
    login(client, "ta@example.edu")
    key = f"tiny.c{people['b'].id}"
    auth = {"Authorization": f"Bearer {people['tokens']['tb']}"}
    _no_check_here(monkeypatch)
    again = client.put("/api/v1/courses/B101/problems/tiny", headers=auth,
                       json={"spec": tiny("B's own")})
    assert again.status_code == 200 and again.json == {"id": key, "version": 1}
    login(client, "tb@example.edu")
    edit = f"/staff/B101/problems/{key}/edit"
    saved = post_form(client, edit, edit, {"spec": tiny("B's own"), "action": "save"})
    assert saved.status_code == 302 and "Unchanged: this is version 1" in _text(
        client.get(saved.headers["Location"]))
    assert app_session.query(ProblemVersion).filter_by(problem_id=key).count() == 1


def test_the_checks_run_in_the_judge_not_in_the_web_worker(client, people, monkeypatch):
    """The engine's check, patched to fail in this process, still passes: it ran in a
    judge process (the patch does not reach it)."""
    from server.engine import authoring

    monkeypatch.setattr(authoring, "check_text", lambda *a, **k: 1 / 0)
    monkeypatch.setattr(authoring, "preview_document", lambda *a, **k: 1 / 0)
    auth = {"Authorization": f"Bearer {people['tokens']['ta']}"}
    put = client.put("/api/v1/courses/A101/problems/mine", headers=auth,
                     json={"spec": tiny("Mine").replace('id = "tiny"', 'id = "mine"')})
    assert put.status_code == 201, put.json
    preview = client.post("/api/v1/courses/A101/problems/tiny/preview", headers=auth,
                          json={"seed": 3, "spec": tiny("Draft")})
    assert preview.status_code == 200 and "reference" in preview.json["instance"]


def test_a_spec_beyond_the_budget_is_refused_at_its_line_in_the_editor(client, people):
    from tests.spec_attacks import BIG_DIMS

    login(client, "ta@example.edu")
    page = post_form(client, "/staff/A101/problems/new", "/staff/A101/problems/new",
                     {"spec": BIG_DIMS, "action": "validate"})
    assert page.status_code == 422
    text = _text(page)
    assert "dims N reaches 100; the limit is 32" in text and "z1 = W @ x" in text  # kept


def test_a_busy_checker_answers_at_once_and_keeps_the_text(client, people, monkeypatch):
    from server.judge import JudgeError, specs

    def busy(*args, **kwargs):
        raise JudgeError("busy", "every judge process stayed busy")

    monkeypatch.setattr(specs, "check_text", busy)
    monkeypatch.setattr(specs, "preview", busy)
    login(client, "ta@example.edu")
    page = post_form(client, "/staff/A101/problems/new", "/staff/A101/problems/new",
                     {"spec": tiny("Busy"), "action": "validate"})
    assert page.status_code == 503
    assert "checking another spec right now" in _text(page) and 'title = "Busy"' in _text(page)
    auth = {"Authorization": f"Bearer {people['tokens']['ta']}"}
    put = client.put("/api/v1/courses/A101/problems/mine", headers=auth,
                     json={"spec": tiny("Busy").replace('id = "tiny"', 'id = "mine"')})
    assert put.status_code == 503 and put.headers["Retry-After"]
    assert "checking another spec" in put.json["error"]
    preview = client.post("/api/v1/courses/A101/problems/tiny/preview", headers=auth,
                          json={"seed": 1, "spec": tiny("Busy")})
    assert preview.status_code == 503 and preview.headers["Retry-After"]


def test_a_toml_nested_too_deeply_is_refused_in_the_editor_and_the_preview(client, people):
    from tests.spec_attacks import DEEP_TABLES

    login(client, "ta@example.edu")
    page = post_form(client, "/staff/A101/problems/new", "/staff/A101/problems/new",
                     {"spec": DEEP_TABLES, "action": "validate"})
    assert page.status_code == 422 and "nest more than 16 levels" in _text(page)
    page = post_form(client, "/staff/A101/problems/new",
                     "/staff/A101/problems/draft/preview", {"spec": DEEP_TABLES, "seed": "1"})
    assert page.status_code == 422 and "nest more than 16 levels" in _text(page)
