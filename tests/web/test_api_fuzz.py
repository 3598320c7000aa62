"""The JSON API fuzzed against its OpenAPI document (issue 22 §3): schemathesis sends
generated requests, valid and schema-violating, to every operation of the document on a
live ``nabla serve`` (gunicorn, 1 worker × 4 threads) with a fresh database of each
backend holding the demo course, once with a student's token and once with the
instructor's. Every answer must conform (tests/web/openapi_checks.py): no 5xx; its
status, Content-Type, headers and body as documented; a request the document calls
wrong refused with a 4xx. A test per operation, role and backend.

Short in ``make test``: ``EXAMPLES`` per test, a fixed seed. ``NABLA_FUZZ=long`` (as for
the engine's fuzz tests) runs the long one: many more examples, a random seed (or
``NABLA_FUZZ_SEED``), and schemathesis's coverage phase (boundary values and each kind
of wrong input of every parameter and field).

Random ids would nearly always be 404s, so schemathesis's dictionaries steer most
(``REAL``) of the generated values to real ones: the demo's assignments, problems and
course, the two submissions the fixture stores (one of them another student's), answers
that parse, and a valid spec of a problem the instructor may create. Those of a fresh
database are known before the server starts (ids from 1); the fixture checks that the
site has them.

The fuzz server's submission and check rates are raised (``RAISED_RATE``: counted, never
reached) so that generated answers reach grading instead of a 429 after 20 of them; the
429 itself is documented, and checked against the document in test_openapi.py.
"""

from __future__ import annotations

import json
import os
import random
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import schemathesis

from server.web.openapi import document

from .live import demo_site
from .openapi_checks import checks_config

pytestmark = pytest.mark.usefixtures("db_backend")

LONG = os.environ.get("NABLA_FUZZ") == "long"
EXAMPLES = 300 if LONG else 8
SEED = int(os.environ.get("NABLA_FUZZ_SEED", "0")) or (random.randrange(1, 2**32) if LONG else 22)
RAISED_RATE = "100000/minute"
REAL = 0.8  # the share of steered values drawn from the dictionaries of real ones
ROLES = ("student1", "instructor")

BANK_DIR = Path(__file__).resolve().parents[2] / "problems"
COPIED_SPEC = "fuzz-copy"  # a course's own problem the instructor may create with PUT
DEMO = {  # what a fresh database holds after `nabla demo` and the fixture's two answers
    "assignments": [1, 2],
    "problems": sorted(path.stem for path in BANK_DIR.glob("*.toml")),
    "courses": ["DEMO101"],
    "submissions": [1, 2],  # student1's, then student2's
}
DICTIONARIES = {
    **DEMO,
    # the copy (new, then a course's own), and a shared problem of each answer kind
    "specs": [COPIED_SPEC, "mlp-relu", "mlp-relu-numpy", "rule-4a-generalized-chain"],
    "answers": ["dx = dz * 2 * x", "dz7 = doutput\ndb3 = doutput\ndW3 = z6 @ dz7",
                "3*x**2", "def backward(**v):\n    return {}\n"],
    "spec_texts": [(BANK_DIR / "mlp-relu.toml").read_text().replace(
        'id = "mlp-relu"', f'id = "{COPIED_SPEC}"', 1)],
}
STEERED = {  # a parameter or body field -> the dictionary of real values it draws from
    "path.assignment_id": "assignments", "query.assignment": "assignments",
    "path.problem_id": "problems", "path.spec_id": "specs",
    "path.course_code": "courses", "path.code": "courses",
    "path.submission_id": "submissions", "body.answer": "answers", "body.spec": "spec_texts"}

schema = schemathesis.openapi.from_dict(document(), config=schemathesis.Config.from_dict({
    "seed": SEED, "suppress-health-check": ["too_slow", "filter_too_much"],
    "generation": {"mode": "all", "max-examples": EXAMPLES, "database": "none",
                   "with-security-parameters": False},  # the test sends the token
    "phases": {"examples": {"enabled": False}, "coverage": {"enabled": LONG},
               "stateful": {"enabled": False}},
    "checks": checks_config(),
    "request-timeout": 60,
    "dictionaries": {name: {"values": values} for name, values in DICTIONARIES.items()},
    "parameters": {key: {"dictionary": name, "probability": REAL}
                   for key, name in STEERED.items()},
}))


def call(base: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        base + path, data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def demo_tokens(database_url: str, names: tuple[str, ...]) -> dict[str, str]:
    """A personal API token for each demo user ``<name>@example.edu``."""
    from server.db import make_engine, make_sessionmaker
    from server.services.accounts import get_user_by_email
    from server.services.tokens import create_token

    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine)() as session:
            made = {name: create_token(session, get_user_by_email(
                session, f"{name}@example.edu"), "fuzz")[1] for name in names}
            session.commit()
    finally:
        engine.dispose()
    return made


@pytest.fixture(scope="module")
def fuzz_site(module_database_url, tmp_path_factory):
    """The demo site served, its users' tokens; the real values the fuzzer is steered to."""
    folder = tmp_path_factory.mktemp("fuzz-site")
    env = {"NABLA_SECRET_KEY": "fuzz-site-secret-" + "x" * 32, "NABLA_REDIS_URL": "",
           "NABLA_SUBMIT_RATE": RAISED_RATE, "NABLA_CHECK_RATE": RAISED_RATE}
    with demo_site(module_database_url, folder, env=env, workers=1, threads=4) as base:
        tokens = demo_tokens(module_database_url, ("student1", "student2", "instructor"))
        _, mine = call(base, "/api/v1/assignments", tokens["student1"])
        problems = sorted({p["id"] for a in mine["assignments"] for p in a["problems"]})
        site = {"assignments": [a["id"] for a in mine["assignments"]], "problems": problems,
                "courses": sorted({a["course"] for a in mine["assignments"]}), "submissions": []}
        for student in ("student1", "student2"):
            status, stored = call(
                base, "/api/v1/assignments/1/problems/rule-3a-scalar-chain/submissions",
                tokens[student], {"answer": "dx = dz * 2 * x"})
            assert status == 201, stored
            site["submissions"].append(stored["id"])
        assert site == DEMO, "the fuzzer's dictionaries are not this site's values"
        yield {"base": base, "tokens": tokens}


@pytest.mark.parametrize("role", ROLES)
@schema.parametrize()
def test_the_live_api_answers_as_documented(case, fuzz_site, role):
    try:
        case.call_and_validate(base_url=fuzz_site["base"], headers={
            "Authorization": f"Bearer {fuzz_site['tokens'][role]}"})
    except BaseException as failure:
        failure.add_note(f"NABLA_FUZZ_SEED={SEED} repeats this run")
        raise
