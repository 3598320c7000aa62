"""The golden corpus: what ``nabla`` and the JSON API print for a fixed set of answers.

Every problem of the bank, two seeds, the model answer and a range of wrong
ones for each answer kind; ``nabla instance --json``, ``nabla instance``,
``nabla solution``, ``nabla grade --json``, ``nabla problems list --json``,
and the API's instance and submission JSON (on a fresh SQLite database, so
ids are the same on every run; timestamps are masked). ``test_golden.py``
compares the outputs with the stored files byte for byte: a refactoring must
not change them. To change them deliberately, regenerate and review the diff:

    .venv/bin/python -m tests.golden.corpus
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from click.testing import CliRunner

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
SEEDS = (1, 7)
API_PROBLEMS = ("mlp-relu", "mlp-relu-numpy", "rule-3a-scalar-chain", "scan-mlp")


def equations_answers(model: str) -> dict[str, str]:
    """The model and wrong answers made from it, named."""
    lines = model.splitlines()
    first = lines[0]
    target, _, rhs = first.partition(" = ")
    weight = next(
        (i for i, line in enumerate(lines) if re.match(r"\s*(\d+\.\s*)?dW\w* = ", line)), None
    )
    accumulated = next((i for i, line in enumerate(lines) if " += " in line), None)
    answers = {
        "model": model,
        "last-line-dropped": "\n".join(lines[:-1]),
        "sign": "\n".join([f"{target} = -({rhs})"] + lines[1:]),
        "syntax": "\n".join(lines[:1] + ["dz = @@ x"] + lines[1:]),
        "unknown-name": "\n".join(lines + ["dfoo = nothere + 1"]),
        "unknown-operand": "\n".join(lines[:1] + [f"{target.split()[-1]} = nothere"]),
        "not-an-answer": "hello world",
    }
    if weight is not None:
        w_target, _, w_rhs = lines[weight].partition(" = ")
        changed = list(lines)
        changed[weight] = f"{w_target} = ({w_rhs}).T"
        answers["transposed"] = "\n".join(changed)
    if accumulated is not None:
        changed = list(lines)
        changed[accumulated] = changed[accumulated].replace(" += ", " = ")
        answers["accumulation-dropped"] = "\n".join(changed)
    return answers


def expression_answers(model: str) -> dict[str, str]:
    return {
        "model": model,
        "plus-one": f"({model}) + 1",
        "sign": f"-({model})",
        "syntax": "x**",
        "reciprocal": "1/x",
        "tower": "exp(exp(exp(exp(exp(x)))))",
        "unknown-name": "y + 1",
        "forbidden": "__import__('os')",
    }


def numpy_answers(model: str) -> dict[str, str]:
    return {
        "model": model,
        "transposed": model.replace("dW3 = z6 @ dz7", "dW3 = (z6 @ dz7).T"),
        "missing": model.replace('"dx": dx, ', ""),
        "runtime-error": "def backward(**kw):\n    return {'dx': kw['nope']}\n",
        "syntax": "import numpy as np\n\ndef backward(**kw)\n    return {}\n",
        "no-backward": "import numpy as np\n\ndef forward(**kw):\n    return {}\n",
        "not-a-dict": "def backward(**kw):\n    return 5\n",
    }


def answers_for(kind: str, model: str) -> dict[str, str]:
    return {"equations": equations_answers, "expression": expression_answers,
            "numpy": numpy_answers}[kind](model)


def _invoke(runner: CliRunner, args: list[str]) -> str:
    from server.cli import main

    result = runner.invoke(main, args, catch_exceptions=False)
    return f"$ nabla {' '.join(args)}\n[exit {result.exit_code}]\n{result.output}"


def cli_outputs(problem: str, kind: str) -> str:
    """Everything ``nabla`` prints about one problem, as one text."""
    runner = CliRunner()
    out = []
    with tempfile.TemporaryDirectory() as tmp, _cwd(tmp):
        for seed in SEEDS:
            out.append(_invoke(runner, ["instance", problem, "--seed", str(seed), "--json"]))
            out.append(_invoke(runner, ["instance", problem, "--seed", str(seed)]))
            solution = runner.invoke(_main(), ["solution", problem, "--seed", str(seed)])
            out.append(f"$ nabla solution {problem} --seed {seed}\n[exit {solution.exit_code}]\n"
                       f"{solution.output}")
            files = []
            model = solution.output[:-1]  # click.echo adds a newline
            for name, text in answers_for(kind, model).items():
                path = f"{name}.{'py' if kind == 'numpy' else 'txt'}"
                Path(path).write_text(text)
                files.append(path)
            out.append(_invoke(runner, ["grade", problem, "--seed", str(seed), "--json", *files]))
    return "".join(out)


@contextlib.contextmanager
def _cwd(path: str) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _main():
    from server.cli import main

    return main


TIMESTAMP = re.compile(r'"\d{4}-\d\d-\d\dT[0-9:.+]+"')


def _mask(document: object) -> str:
    return TIMESTAMP.sub('"<time>"', json.dumps(document, indent=1))


def api_outputs() -> str:
    """The API's JSON for a student of a fresh course with a few problems."""
    from server import create_app, db
    from server.db import get_engine, make_sessionmaker
    from server.engine.bank import load_bank
    from server.services import passwords, tokens
    from server.services.accounts import create_user
    from server.services.courses import create_course, enroll

    bank = load_bank()
    previous = passwords.use_profile("cheapest")  # put back after: tests run after this
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/golden.sqlite3"
        db.upgrade(url)
        app = create_app({"TESTING": True, "DATABASE_URL": url,
                          "SECRET_KEY": "golden-secret-" + "x" * 32,
                          "INSTANCE_PATH": f"{tmp}/instance", "NABLA_PROBLEM_BANK": bank,
                          "NABLA_REDIS_URL": None})
        try:
            session = make_sessionmaker(get_engine(app))()
            token = _arrange(session, bank, create_user, create_course, enroll, tokens)
            session.close()
            client = app.test_client()
            headers = {"Authorization": f"Bearer {token}"}
            base = "/api/v1/assignments/1/problems"
            for problem in API_PROBLEMS:
                spec = bank[problem]
                got = client.get(f"{base}/{problem}", headers=headers)
                out.append(f"GET {problem} [{got.status_code}]\n{_mask(got.json)}\n")
                model = _model_answer(spec, _seed(app, problem))
                answers = answers_for(spec.answer_kind, model)
                for name in ("model", "sign", "syntax", "transposed", "not-a-dict"):
                    if name not in answers:
                        continue
                    sent = client.post(f"{base}/{problem}/submissions", headers=headers,
                                       json={"answer": answers[name]})
                    out.append(f"POST {problem} {name} [{sent.status_code}]\n"
                               f"{_mask(sent.json)}\n")
                listed = client.get(f"{base}/{problem}/submissions", headers=headers)
                out.append(f"GET {problem} submissions [{listed.status_code}]\n"
                           f"{_mask(listed.json)}\n")
            one = client.get("/api/v1/submissions/1", headers=headers)
            out.append(f"GET submission 1 [{one.status_code}]\n{_mask(one.json)}\n")
        finally:
            get_engine(app).dispose()
            passwords.use_profile(previous)
    return "".join(out)


def _arrange(session, bank, create_user, create_course, enroll, tokens) -> str:
    import datetime as dt

    from server.models import utcnow
    from server.services.assignments import AssignmentDraft, ProblemChoice, create_assignment

    student = create_user(session, "student1@example.edu", "Student One", "correct horse b")
    course = create_course(session, "GOLD", "Golden")
    enroll(session, course, student, "student")
    now = utcnow()
    draft = AssignmentDraft(
        title="Golden", open_at=now - dt.timedelta(days=1), due_at=now + dt.timedelta(days=1),
        late_until=None, late_credit=0, max_attempts=10, score_policy="best",
        problems=[ProblemChoice(pid, 1.0) for pid in API_PROBLEMS])
    create_assignment(session, course, draft, bank)
    token = tokens.create_token(session, student, "golden")[1]
    session.commit()
    return token


def _seed(app, problem: str) -> int:
    """The seed of the student's instance of ``problem``."""
    from sqlalchemy import select

    from server.db import get_engine, make_sessionmaker
    from server.models import AssignmentProblem, Instance

    session = make_sessionmaker(get_engine(app))()
    try:
        return session.scalar(select(Instance.seed).join(AssignmentProblem).where(
            AssignmentProblem.problem_id == problem))
    finally:
        session.close()


def _model_answer(spec, seed: int) -> str:
    """The model answer for the instance the API shows."""
    from server.engine.problem import draw, model_answer

    return model_answer(spec, draw(spec, seed))


def outputs() -> Iterator[tuple[str, str]]:
    """(file name, text) of every golden file."""
    from server.engine.bank import load_bank

    runner = CliRunner()
    yield "problems-list.txt", _invoke(runner, ["problems", "list", "--json"])
    for spec in load_bank().values():
        yield f"cli-{spec.id}.txt", cli_outputs(spec.id, spec.answer_kind)
    yield "api.txt", api_outputs()


def main() -> None:
    DATA.mkdir(exist_ok=True)
    for name, text in outputs():
        (DATA / name).write_text(text)
        print(f"wrote {DATA / name} ({len(text)} characters)")


if __name__ == "__main__":
    main()
