"""Nothing outside the answer kinds' own modules asks which kind a problem is."""

import re
from pathlib import Path

from server.engine.kinds import KINDS

SERVER = Path(__file__).resolve().parents[2] / "server"
KINDS_DIR = SERVER / "engine" / "kinds"
NAMES = "|".join(re.escape(name) for name in KINDS)
# answer == "numpy", spec.answer_kind != 'expression', kind.name in ("equations", ...),
# "numpy" == kind, and the same in templates.
BRANCH = re.compile(
    rf"\b\w*(answer|kind)\w*(\.\w+)*\s*(==|!=|\bnot in\b|\bin\b)\s*[\(\[]?\s*[\"']({NAMES})[\"']"
    rf"|[\"']({NAMES})[\"']\s*(==|!=)\s*[\w.]*(answer|kind)")


def branches_on_kind_names(paths) -> list[str]:
    found = []
    for path in paths:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if BRANCH.search(line):
                found.append(f"{path.relative_to(SERVER)}:{number}: {line.strip()}")
    return found


def test_no_branch_on_an_answer_kind_outside_the_kinds():
    files = [p for p in SERVER.rglob("*") if p.suffix in (".py", ".html")
             and KINDS_DIR not in p.parents]
    assert len(files) > 50
    assert branches_on_kind_names(files) == []


def test_the_grep_finds_such_branches(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text('if spec.answer == "expression":\n'
                      "{% if ws.spec.answer_kind != 'numpy' %}\n"
                      'if kind.name in ("equations", "numpy"):\n'
                      'if "numpy" == spec.answer_kind:\n'
                      'ok = type(value).__module__ == "numpy"\n')
    found = [line for line in sample.read_text().splitlines() if BRANCH.search(line)]
    assert len(found) == 4 and "__module__" not in " ".join(found)


def test_every_kind_has_its_partial():
    templates = SERVER / "templates"
    for kind in KINDS.values():
        assert (templates / kind.partial).is_file(), kind.partial
