"""Staff previews over HTTP: POST /api/v1/courses/<code>/problems/mlp-relu/preview.

    .venv/bin/python bench/bench_preview.py [--requests 200] [--workers 2] [--threads 2]
                                           [--json FILE]

Creates a fresh SQLite database in a temporary folder, syncs the bank folder
(``nabla demo``), gives the demo TA an API token, starts ``nabla serve`` on a
free loopback port and sends, one at a time on one keep-alive connection,
three kinds of preview of mlp-relu side by side (in alternation, so that all
three see the same load): seed N alone (the draw, the references and the
model solution), seed N with the model answer pasted (graded as a submission:
the judge, two hidden instances), and seed N with a draft ``spec`` and the
answer (the draft is parsed too). Seeds cycle over 0..N-1 (--seeds, 20) after a warm-up on
each. Prints p50/p90/p99/max per kind and the ratio of each p50 to the
preview without an answer. Figures only; the goal is p50 < 50 ms for a
preview with a pasted answer.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_http import Client, free_port, pct, start_server, stop_server  # noqa: E402
from common import Goal, Rows, add_json_argument  # noqa: E402

PATH = "/api/v1/courses/DEMO101/problems/mlp-relu/preview"


def prepare(url: str, seeds: int) -> tuple[str, dict[int, str]]:
    """The demo data (the bank synced), a TA token, and the model answer per seed."""
    from server import db
    from server.cli.web_cmds import create_demo
    from server.engine.bank import BANK_DIR
    from server.engine.problem import draw, model_answer
    from server.models import utcnow
    from server.services import accounts, bank, tokens

    db.upgrade(url)
    engine = db.make_engine(url)
    try:
        session = db.make_sessionmaker(engine)()
        with session.begin():
            bank.sync_folder(session, BANK_DIR)
            create_demo(session, bank.DatabaseBank(session), utcnow())
            ta = accounts.get_user_by_email(session, "ta@example.edu")
            token = tokens.create_token(session, ta, "bench_preview")[1]
            spec = bank.DatabaseBank(session)["mlp-relu"]
        session.close()
    finally:
        engine.dispose()
    return token, {seed: model_answer(spec, draw(spec, seed)) for seed in range(seeds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="per kind")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=20, help="seeds 0..N-1, cycled")
    add_json_argument(parser)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-preview-"))
    url = f"sqlite:///{folder}/nabla.sqlite3"
    token, answers = prepare(url, args.seeds)
    spec_text = (ROOT / "problems" / "mlp-relu.toml").read_text()
    env = {**os.environ, "NABLA_DATABASE_URL": url, "NABLA_INSTANCE_PATH": str(folder),
           "NABLA_SECRET_KEY": "b" * 40}
    port = free_port()
    server = start_server(env, port, args.workers, args.threads, folder / "serve.log")
    kinds = {
        "seed only": lambda seed: {"seed": seed},
        "seed + answer": lambda seed: {"seed": seed, "answer": answers[seed]},
        "draft + answer": lambda seed: {"seed": seed, "answer": answers[seed],
                                        "spec": spec_text},
    }
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    load = os.getloadavg()[0]
    client = Client(port, token)
    try:
        for n in range(args.seeds + args.requests):
            seed = n % args.seeds
            for kind, body in kinds.items():
                data = json.dumps(body(seed)).encode()
                start = time.perf_counter()
                status, raw = client.request("POST", PATH, data)
                elapsed = (time.perf_counter() - start) * 1e3
                result = json.loads(raw)
                assert status == 200, (status, result)
                if "answer" in body(seed):
                    assert result["grade"]["score"] == 1.0, result["grade"]
                if n >= args.seeds:  # the first pass over the seeds warms the caches
                    times[kind].append(elapsed)
    finally:
        client.close()
        stop_server(server)
    print(f"bench_preview: {platform.node()} {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, SQLite, {args.workers} workers x {args.threads} "
          f"threads, {args.requests} previews per kind, load average {load:.2f} -> "
          f"{os.getloadavg()[0]:.2f}")
    base = statistics.median(times["seed only"])
    rows = Rows("bench_preview")
    for kind, values in times.items():
        p50 = statistics.median(values)
        print(f"  {kind:15} p50 {p50:6.1f} ms  p90 {pct(values, .9):6.1f}  "
              f"p99 {pct(values, .99):6.1f}  max {max(values):6.1f}  "
              f"({p50 / base:.2f} x seed only)")
        rows.add("preview." + kind.replace(" ", ""), f"staff preview over HTTP, {kind}",
                 f"mlp-relu, SQLite, {args.workers} workers x {args.threads} threads, "
                 "one client", n=len(values), samples=values,
                 baseline=None if kind == "seed only" else "seed only, alternating",
                 baseline_samples=None if kind == "seed only" else times["seed only"],
                 goal=Goal(p50=50) if kind == "seed + answer" else None)
    rows.write(args.json)


if __name__ == "__main__":
    main()
