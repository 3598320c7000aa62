"""`nabla problems check DIR` checks every spec in the folder."""

from click.testing import CliRunner

from server.cli import main
from server.engine.bank import BANK_DIR, load_bank


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_a_folder_checks_every_spec_in_it(tmp_path):
    bank = load_bank()
    for pid in ("mlp-relu", "rule-1b-matmul"):
        (tmp_path / f"{pid}.toml").write_text(bank[pid].source)
    (tmp_path / "notes.txt").write_text("not a spec")
    result = run("problems", "check", "--seeds", "1", str(tmp_path) + "/")
    assert result.exit_code == 0, result.output
    assert "ok   mlp-relu" in result.output and "ok   rule-1b-matmul" in result.output
    assert "unknown problem" not in result.output


def test_a_bad_spec_in_a_folder_fails_naming_the_file(tmp_path):
    bank = load_bank()
    (tmp_path / "mlp-relu.toml").write_text(bank["mlp-relu"].source)
    bad = tmp_path / "broken.toml"
    bad.write_text(bank["mlp-relu"].source.replace("z1 = W1 @ x", "z1 = W1 @ q"))
    result = run("problems", "check", "--seeds", "1", str(tmp_path))
    assert result.exit_code == 1
    assert f"FAIL {bad}" in result.output and "unknown name 'q'" in result.output
    assert "1 of 2 specs failed" in result.output


def test_the_bank_folder_and_an_empty_folder(tmp_path):
    result = run("problems", "check", "--seeds", "1", str(BANK_DIR))
    assert result.exit_code == 0
    assert result.output.count("ok   ") == len(load_bank())
    empty = run("problems", "check", str(tmp_path))
    assert empty.exit_code == 1
    assert "no spec files (*.toml) in this folder" in empty.output
