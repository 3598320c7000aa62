"""`make bench`'s one table (bench/run_all.py): every benchmark runs at its quick sizes
and the table has every row, with the same columns. The structure only: no figure is
asserted (benchmarks are not tests; their figures are in docs/benchmarks.md)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
DATABASES = ("sqlite", "postgresql")


def load(name: str):
    """A module of bench/ (which imports its siblings by name)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # (dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_table(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "table.json"
    done = subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--quick", "--json",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    return json.loads(out.read_text()), done.stdout


def test_the_quick_run_gives_one_row_per_measurement_with_every_column(quick_table):
    table, stdout = quick_table
    rows, keys = table["rows"], {row["key"] for row in table["rows"]}
    assert table["missing"] == []
    assert len(keys) == len(rows)  # one row per measurement
    problems = sorted(p.stem for p in (ROOT / "problems").glob("*.toml"))
    assert {f"engine.draw.{p}" for p in problems} <= keys
    assert {f"http.{kind}.{db}" for kind in ("equations", "numpy") for db in DATABASES} <= keys
    assert {f"burst.{db}" for db in DATABASES} <= keys
    assert {f"export.{fmt}.{db}" for fmt in ("long", "canvas") for db in DATABASES} <= keys
    assert {f"regrade.in-process.{db}" for db in DATABASES} <= keys
    assert {"engine.grade.mlp-relu.model.own", "numpy.grade.resubmission"} <= keys
    benches = {row["bench"] for row in rows}
    scripts = {p.stem for p in BENCH.glob("bench_*.py")} | {"burst"}
    assert benches == scripts - {"bench_mutants"}  # every benchmark but the uncounted one
    for row in rows:
        assert not row["key"].endswith(".failed"), row
        assert row["measure"] and row["setting"] and row["n"] > 0, row
        assert row["p50"] is not None or row["mean"] is not None, row
        assert row["met"] in (True, False, None), row
        assert (row["goal"] is None) == (row["met"] is None), row
        if row["baseline_p50"] is not None:
            assert row["baseline"] and row["ratio"] is not None, row
    by_key = {row["key"]: row for row in rows}
    assert "fresh interpreter" in by_key["numpy.grade.resubmission"]["baseline"]
    for db in DATABASES:  # HTTP against in-process grading, measured in the same run
        assert by_key[f"http.numpy.{db}"]["baseline_p50"] == by_key[
            "numpy.grade.resubmission"]["p50"]
        assert by_key[f"burst.{db}"]["met"] is not None
    # The printed table: its header and one line per row, the same columns in each.
    lines = stdout[stdout.index("| measure | setting |"):].splitlines()
    table_lines = lines[:lines.index("")] if "" in lines else lines
    assert len(table_lines) == len(rows) + 2
    assert {line.count(" | ") for line in table_lines[2:]} == {len(table["columns"]) - 1}


def test_rows_compute_the_ratio_and_whether_the_goal_is_met():
    common = load("common")
    rows = common.Rows("example")
    met = rows.add("a", "m", "s", n=3, samples=[1.0, 2.0, 3.0], baseline="b",
                   baseline_samples=[4.0, 4.0, 4.0], goal=common.Goal(p50=2, ratio_max=0.5))
    assert (met["p50"], met["ratio"], met["met"]) == (2.0, 0.5, True)
    assert met["goal"] == "p50 ≤ 2 ms, ≥ 2× faster than the baseline"
    slow = rows.add("b", "m", "s", n=1, p50=3.0, goal=common.Goal(p50=2))
    assert slow["met"] is False
    short = rows.add("c", "m", "s", n=10, p50=1.0, throughput=150, throughput_unit="x/s",
                     goal=common.Goal(throughput=10_000 / 60, note="(10,000 in ≤ 60 s)"))
    assert (short["met"], short["goal"]) == (False, "≥ 167 x/s (10,000 in ≤ 60 s)")
    broken = rows.add("d", "m", "s", n=1, p50=1.0, goal=common.Goal(p99=5),
                      checks={"0 lost": False})
    assert broken["met"] is False and broken["goal"] == "p99 ≤ 5 ms, 0 lost"
    assert rows.add("e", "m", "s", n=1, mean=2.0)["met"] is None


def test_record_keeps_one_table_at_the_top_of_the_benchmarks_page(tmp_path, monkeypatch):
    run_all = load("run_all")
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\nIntroduction.\n\n## An older section\n")
    monkeypatch.setattr(run_all, "DOCS", page)
    meta = {"quick": False, "started": "2026-11-29 12:00", "finished": "2026-11-29 12:20",
            "commit": "abc1234", "cpu": "2 × CPU", "ram": "24.0 GiB", "os": "Linux",
            "python": "3.11", "load_before": "0.50 / 0.40 / 0.30",
            "load_after": "1.90 / 1.20 / 0.70", "minutes": 20.0,
            "command": "make bench", "per_bench": "Time per benchmark: x 1 s."}
    run_all.record(meta, "| first table |")
    run_all.record({**meta, "commit": "def5678"}, "| second table |")
    text = page.read_text()
    assert text.count(run_all.START) == text.count(run_all.END) == 1
    assert "| second table |" in text and "| first table |" not in text
    assert text.index(run_all.START) < text.index("Introduction.")
    assert "def5678" in text and "1.90 / 1.20 / 0.70 after" in text
    assert text.endswith("## An older section\n")
