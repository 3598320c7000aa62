"""Grading truth figures (issue 9): per equations problem, the plausible
mistakes (mutants) generated, separated and equivalent, and the share of seeds
on which some mutant scores 100% when graded on the student's own instance.

    .venv/bin/python bench/bench_mutants.py [--seeds 1-100] [--export FILE]

``--before FILE`` grades the mutants listed in FILE (written by ``--export``
in this tree) with the engine of ``--engine-root DIR`` (default: this tree),
which may be an older commit: it uses only load_bank, draw_instance and
grade_equations, so the draws and the grader of that commit decide. That is
how the "before" column of docs/grading.md was measured:

    .venv/bin/python bench/bench_mutants.py --export /tmp/mutants.json
    git archive a115cbd | tar -x -C /tmp/before
    .venv/bin/python bench/bench_mutants.py --before /tmp/mutants.json --engine-root /tmp/before
"""

from __future__ import annotations

import argparse
import json
import sys
import time

if "--engine-root" in sys.argv:  # before importing server: take it from that tree instead
    _root = sys.argv[sys.argv.index("--engine-root") + 1]
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    sys.path.insert(0, _root)

from server.engine.bank import load_bank  # noqa: E402
from server.engine.grade import grade_equations  # noqa: E402
from server.engine.instance import draw_instance  # noqa: E402


def seed_range(text: str) -> range:
    lo, _, hi = text.partition("-")
    return range(int(lo), int(hi or lo) + 1)


def full_marks(spec, inst, texts) -> int:
    """How many of ``texts`` score 100% on ``inst``."""
    return sum(1 for t in texts if grade_equations(spec, inst, t).score == 1.0)


def separated_answers(check) -> list[str]:
    """The answers of the mutants a draw must separate (not the equivalent ones)."""
    return [check.mutants.answer(check.mutants.mutants[i]) for i in check.hard + check.easy]


def after(args) -> None:
    from server.engine.instance import mutant_check

    bank = load_bank()
    export: dict = {}
    print(f"seeds {args.seeds}: mutants (over the structures drawn) / separated / equivalent; "
          "seeds on which a separated mutant scored 100%")
    print(f"{'problem':28} {'structs':>7} {'mutants':>7} {'separ.':>6} {'equiv.':>6} "
          f"{'seeds with a mutant at 100%':>27} {'seconds':>7}")
    for spec in bank.values():
        if spec.answer_kind != "equations":
            continue
        checks, hit = {}, 0
        start = time.perf_counter()
        for seed in seed_range(args.seeds):
            inst = draw_instance(spec, seed)
            check = checks.setdefault(inst.choice_index, mutant_check(spec, inst.choice_index))
            hit += full_marks(spec, inst, separated_answers(check)) > 0
        seconds = time.perf_counter() - start
        mutants = sum(len(c.mutants.mutants) for c in checks.values())
        equivalent = sum(len(c.equivalent) for c in checks.values())
        export[spec.id] = {",".join(map(str, ci)): separated_answers(c) for ci, c in checks.items()}
        print(f"{spec.id:28} {len(checks):7} {mutants:7} {mutants - equivalent:6} {equivalent:6} "
              f"{hit:17} of {len(seed_range(args.seeds)):<6} {seconds:7.1f}")
    if args.export:
        with open(args.export, "w") as fh:
            json.dump(export, fh)
        print(f"wrote the separated mutants of every structure to {args.export}")


def before(args) -> None:
    """Only what every commit has: the bank, draw_instance, grade_equations."""
    bank = load_bank()
    with open(args.before) as fh:
        exported = json.load(fh)
    import server

    print(f"seeds {args.seeds}: the engine of {server.__file__} grading the exported mutants")
    print(f"{'problem':28} {'seeds with a mutant at 100%':>28} {'mutants at 100% (mean)':>24}")
    for problem, by_structure in exported.items():
        spec = bank[problem]
        hit, total = 0, 0
        for seed in seed_range(args.seeds):
            inst = draw_instance(spec, seed)
            # the structure comes first from a seed's random stream, in every commit
            n = full_marks(spec, inst, by_structure[",".join(map(str, inst.choice_index))])
            hit += n > 0
            total += n
        count = len(seed_range(args.seeds))
        print(f"{problem:28} {hit:17} of {count:<8} {total / count:24.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="1-100", help="a seed range, e.g. 1-100")
    parser.add_argument("--export", help="write the separated mutants per structure (JSON)")
    parser.add_argument("--before", help="grade the mutants of this file (see --engine-root)")
    parser.add_argument("--engine-root", help="the tree whose engine --before grades with")
    args = parser.parse_args()
    if args.before:
        before(args)
    else:
        after(args)


if __name__ == "__main__":
    main()
