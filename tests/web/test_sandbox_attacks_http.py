"""The three sandbox attacks of issue 8 §1, through the real server.

A hostile student talks HTTP to ``nabla serve`` (gunicorn, its own sandbox
worker) on each database; what the attacks could get out is looked for in
everything a reader of the submission sees: the API's answers, the student's
feedback page and the stored result (which the staff pages and exports read).
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import numpy_attacks as attacks
import pytest

from .live import nabla_serve

pytestmark = pytest.mark.usefixtures("db_backend")
PROBLEM = "mlp-relu-numpy"
PASSWORD = "correct horse battery"


@pytest.fixture
def fake_bank(engine_bank):
    """make_assignment uses the real problem bank in this module."""
    return engine_bank


@pytest.fixture(scope="module")
def server(database_url, tmp_path_factory):
    """``nabla serve`` on this backend's test database, for the whole module."""
    with nabla_serve(database_url, tmp_path_factory.mktemp("serve")) as base:
        yield base


class Student:
    """One student of a course with mlp-relu-numpy, talking to the server."""

    def __init__(self, base: str, session, engine_bank, make_user, make_course,
                 make_assignment) -> None:
        from server.services import tokens

        self.base, self.session, self.spec = base, session, engine_bank[PROBLEM]
        self.user = make_user(session, "mallory@example.edu", "Mallory", PASSWORD)
        course = make_course(session, "SEC101", members={self.user: "student"})
        self.assignment = make_assignment(session, course, problems=(PROBLEM,),
                                          max_attempts=5).id
        self.token = tokens.create_token(session, self.user, "attack")[1]
        self.user_id, self.email = self.user.id, self.user.email  # no lazy loads later
        session.commit()
        self.browser = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        self.logged_in = False

    def api(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(
            self.base + "/api/v1" + path, method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}",
                     "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def page(self, path: str) -> str:
        if not self.logged_in:
            html = self.browser.open(self.base + "/login", timeout=10).read().decode()
            token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)
            form = urllib.parse.urlencode({"email": self.email, "password": PASSWORD,
                                           "csrf_token": token}).encode()
            self.browser.open(self.base + "/login", form, timeout=10).read()
            self.logged_in = True
        with self.browser.open(self.base + path, timeout=10) as response:
            assert response.status == 200
            return response.read().decode()

    def instance(self):
        """Open the problem (drawing the instance), and return it as the engine's."""
        from server.engine.instance import ArrayInstance
        from server.models import Instance

        status, _ = self.api("GET", f"/assignments/{self.assignment}/problems/{PROBLEM}")
        assert status == 200
        self.session.expire_all()
        row = self.session.query(Instance).filter(Instance.user_id == self.user_id).one()
        document = json.loads(row.reference_json)
        self.session.rollback()  # SQLite: no lock held while the server writes
        return ArrayInstance.from_json(document)

    def submit(self, source: str) -> dict:
        status, body = self.api("POST", f"/assignments/{self.assignment}/problems/{PROBLEM}"
                                        "/submissions", {"answer": source})
        assert status == 201, body  # graded: stored, and an attempt was used
        return body

    def everything_shown(self, submission: dict) -> list[str]:
        """What a reader of this submission sees, without the answer's own text."""
        _, again = self.api("GET", f"/submissions/{submission['id']}")
        html = self.page(f"/submissions/{submission['id']}")
        answer_html = re.escape(submission["answer"][:40].replace("'", "&#39;"))
        assert re.search(answer_html, html) or "backward" in html
        return [json.dumps({k: v for k, v in body.items() if k != "answer"})
                for body in (submission, again)] + [self.stored(submission["id"]), html]

    def stored(self, submission_id: int) -> str:
        from server.models import Submission

        self.session.expire_all()
        text = self.session.get(Submission, submission_id).result_json
        self.session.rollback()
        return text

    def hidden(self, submission: dict, own) -> list:
        """The hidden instances the server checked this submission on."""
        from server.engine.instance import draw_hidden_instances
        from server.models import Submission

        self.session.expire_all()
        seeds = self.session.get(Submission, submission["id"]).hidden_seeds
        self.session.rollback()
        return draw_hidden_instances(self.spec, own, seeds)


@pytest.fixture
def mallory(server, session, engine_bank, make_user, make_course, make_assignment):
    return Student(server, session, engine_bank, make_user, make_course, make_assignment)


def model(student: Student, own) -> str:
    from server.engine.problem import model_answer

    return model_answer(student.spec, own)


def test_exception_text_and_printed_output_on_a_hidden_check_show_no_value(mallory):
    own = mallory.instance()
    source = attacks.with_hidden_branch(
        model(mallory, own), own.values,
        "print('LEAK', kw['W1'].tolist())\nraise ValueError(repr(kw['W1'].tolist()))")
    submission = mallory.submit(source)
    shown = mallory.everything_shown(submission)
    for h in mallory.hidden(submission, own):
        row = repr(h.values["W1"][0].tolist())
        for text in shown:
            assert row not in text, "a hidden value was shown"
    for text in shown[:3]:
        assert "LEAK" not in text
    assert (submission["status"], submission["attempt"], submission["score"]) == ("graded", 1, 0)
    line = attacks.line_of(source, "raise ValueError")
    assert submission["errors"] == [{
        "line": line, "message": "hidden check 1 of 2 (other dims and values): backward() "
                                 f"raised ValueError at line {line}"}]


def test_frame_walking_finds_no_other_instance_and_a_lookup_table_fails(mallory):
    own = mallory.instance()
    first = mallory.submit(attacks.HARVEST)
    shown = mallory.everything_shown(first)
    assert any("FOUND[" in text for text in shown)  # the own instance's error, shown whole
    found = attacks.harvested(shown)
    hidden = mallory.hidden(first, own)
    for h in hidden:
        for key in attacks.arrays_of(h.values):
            assert key not in found, f"a hidden input of this submission was reachable: {key}"
    assert first["attempt"] == 1
    assert "FOUND[" in first["errors"][0]["message"]
    # Had the harvest worked, gradients computed offline for every instance it
    # saw would score 1 next time, since nothing is computed. They do not: the
    # next submission is checked on other hidden instances.
    table = [(i.values["x"], {g: i.reference[g] for g in ("d" + a for a in own.ask)})
             for i in [own, *hidden]]
    second = mallory.submit(attacks.lookup_table(table))
    assert second["score"] < 1
    assert any("hidden check" in g["message"] for g in second["gradients"].values())


@pytest.mark.parametrize("everywhere", [True, False], ids=["every-instance", "hidden-only"])
def test_a_forged_invalid_frame_costs_an_attempt_and_shows_nothing(mallory, everywhere):
    own = mallory.instance()
    if everywhere:
        source = attacks.forge_everywhere()
    else:
        source = attacks.with_hidden_branch(model(mallory, own), own.values,
                                            "forge_done('FORGED ' + repr(kw))",
                                            prelude=attacks.FORGE)
    submission = mallory.submit(source)
    for text in mallory.everything_shown(submission):
        assert "FORGED {" not in text and "FORGED {" not in text.replace("&#39;", "'")
        assert "array(" not in text
    assert (submission["status"], submission["attempt"]) == ("graded", 1)
    assert submission["attempts_left"] == 4
    assert submission["score"] == 0
    assert np.isclose(submission["raw_score"], 0)
