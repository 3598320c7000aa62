"""What the student's pages cost to render, and what a Check costs (issue 11).

    .venv/bin/python bench/bench_pages.py [--requests 200] [--before REV] [--json FILE]

In-process (Flask's test client; no network, no gunicorn), on a fresh SQLite
database in a temporary folder with the demo course (``nabla demo``'s data),
logged in as student1: GET the dashboard, an assignment page, the problem
pages of mlp-relu (equations), rule-4a-generalized-chain (expression) and
mlp-relu-numpy, and one feedback page, --requests times each after 5 warm-up
requests; then POST /api/v1/.../check with a shape error (equations, in the
judge), an expression with a left-hand side, and a numpy module. Prints the
median and p99 in ms and the HTML size per page.

With --before REV, the same runs first on an export of that revision (``git
archive``), then on this tree, twice in alternation, side by side; pages or
endpoints the older tree lacks are shown as "—". Figures only; nothing here
asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
ROOT = Path(os.environ.get("NABLA_BENCH_ROOT", HERE.parents[1]))
sys.path.insert(0, str(ROOT))

PAGES = [
    ("dashboard", "/"),
    ("assignment", "/assignments/{hw2}"),
    ("problem equations", "/assignments/{hw2}/problems/mlp-relu"),
    ("problem expression", "/assignments/{hw1}/problems/rule-4a-generalized-chain"),
    ("problem numpy", "/assignments/{hw2}/problems/mlp-relu-numpy"),
    ("feedback", "/submissions/{sub}"),
]
CHECKS = [
    ("check equations", "{hw2}", "mlp-relu", "dz7 = doutput\ndW3 = dz7 @ z6\n"),
    ("check expression", "{hw1}", "rule-4a-generalized-chain", "dL/dx = 3*x"),
    ("check numpy", "{hw2}", "mlp-relu-numpy", "def backward(**kw):\n    return {}\n"),
]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def measure(requests: int) -> dict[str, dict[str, float]]:
    """Run in this process against the tree at ROOT; {name: {p50, p99, kb}}."""
    from server import create_app, db
    from server.cli.web_cmds import create_demo
    from server.engine.bank import load_bank
    from server.models import Assignment, utcnow
    from server.services import passwords, tokens
    from server.services.accounts import get_user_by_email

    folder = Path(tempfile.mkdtemp(prefix="nabla-bench-pages-"))
    url = f"sqlite:///{folder / 'nabla.sqlite3'}"
    db.upgrade(url)
    passwords.use_profile("cheapest")
    bank = load_bank()
    session = db.make_sessionmaker(db.make_engine(url))()
    create_demo(session, bank, utcnow())
    hw1, hw2 = sorted(a.id for a in session.query(Assignment))
    _, token = tokens.create_token(session, get_user_by_email(session, "student1@example.edu"),
                                   "bench")
    session.commit()
    app = create_app({"DATABASE_URL": url, "SECRET_KEY": "bench-" + "x" * 40,
                      "INSTANCE_PATH": str(folder), "NABLA_SUBMIT_RATE": "off",
                      "NABLA_CHECK_RATE": "off",
                      "WTF_CSRF_ENABLED": False})
    client = app.test_client()
    response = client.post("/login", data={"email": "student1@example.edu",
                                           "password": "nabla-demo-password"})
    assert response.status_code == 302, response.status_code
    answer_url = f"/assignments/{hw2}/problems/mlp-relu"
    client.get(answer_url)
    sent = client.post(answer_url,
                       data={"answer": "dz7 = doutput", "submission_key": "bench-key-1"})
    sub = sent.headers["Location"].rsplit("/", 1)[1]
    names = {"hw1": hw1, "hw2": hw2, "sub": sub}
    out: dict[str, dict[str, float]] = {}

    def timed(name: str, call) -> None:
        times, size = [], 0
        for k in range(5 + requests):
            start = time.perf_counter()
            response = call()
            elapsed = (time.perf_counter() - start) * 1000
            if response.status_code not in (200, 400):
                return  # the older tree has no such page or endpoint
            size = len(response.get_data())
            if k >= 5:
                times.append(elapsed)
        out[name] = {"p50": statistics.median(times), "p99": pct(times, 0.99), "kb": size / 1024}

    for name, path in PAGES:
        timed(name, lambda path=path: client.get(path.format(**names)))
    headers = {"Authorization": f"Bearer {token}"}
    for name, assignment, problem, text in CHECKS:
        path = f"/api/v1/assignments/{assignment.format(**names)}/problems/{problem}/check"
        timed(name, lambda path=path, text=text: client.post(path, json={"answer": text},
                                                             headers=headers))
    return out


def run_tree(root: Path, requests: int) -> dict:
    env = {**os.environ, "NABLA_BENCH_ROOT": str(root)}
    done = subprocess.run([sys.executable, str(HERE), "--measure", "--requests", str(requests)],
                          env=env, capture_output=True, text=True, cwd=root, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def cell(figures: dict, name: str) -> str:
    if name not in figures:
        return "—"
    f = figures[name]
    return f"{f['p50']:.1f} / {f['p99']:.1f} ms, {f['kb']:.1f} KB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--before", help="a git revision to measure beside this tree")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", metavar="FILE",
                        help="also write the figures as table rows (JSON) for run_all.py")
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.requests)))
        return
    names = [n for n, _ in PAGES] + [n for n, *_ in CHECKS]
    print(f"load average {os.getloadavg()[0]:.2f}; {args.requests} requests per row")
    if not args.before:
        figures = run_tree(HERE.parents[1], args.requests)
        for name in names:
            print(f"{name:<20} {cell(figures, name)}")
        write_rows(args.json, figures, args.requests)
        return
    with tempfile.TemporaryDirectory(prefix="nabla-before-") as old:
        archive = subprocess.run(["git", "-C", str(HERE.parents[1]), "archive", args.before],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", old], input=archive, check=True)
        rounds = [(run_tree(Path(old), args.requests), run_tree(HERE.parents[1], args.requests))
                  for _ in range(2)]
    print(f"{'':<20} {'before ' + args.before:<34} after (this tree)")
    for name in names:
        for before, after in rounds:
            print(f"{name:<20} {cell(before, name):<34} {cell(after, name)}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    write_rows(args.json, rounds[-1][1], args.requests, rounds[-1][0], args.before)


def write_rows(path: str | None, figures: dict, requests: int, before: dict | None = None,
               revision: str = "") -> None:
    from common import Rows

    rows = Rows("bench_pages")
    for name, f in figures.items():
        base = (before or {}).get(name)
        rows.add("pages." + name.replace(" ", "-"), "student page in-process (test client)"
                 if not name.startswith("check") else "POST .../check in-process",
                 f"{name}, SQLite, demo course, {f['kb']:.1f} KB", n=requests,
                 p50=f["p50"], p99=f["p99"], baseline=f"{revision}, same run" if base else None,
                 baseline_p50=base["p50"] if base else None)
    rows.write(path)


if __name__ == "__main__":
    main()
