"""Installed from a wheel (not editable), Nabla finds its migrations, its problem bank
and its templates: `nabla db upgrade`, `nabla demo` and `nabla problems list` work
from an empty folder.

The wheel is built from a copy of the sources and installed with pip in a fresh
venv. Its dependencies are not downloaded again (that would take minutes and a
network): a .pth file lends the fresh venv this venv's site-packages, where only
the dependencies are found (this checkout's editable hook lives in a .pth file
there, which Python does not read from a directory a .pth file added).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["pyproject.toml", "setup.py", "README.md", "server", "migrations", "problems"]


def run(argv: list[str], **kwargs) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, f"{argv} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed; returns the venv's folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    for name in SOURCES:
        if not (ROOT / name).exists():
            continue
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, source / name)
    dist = tmp / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(dist), str(source)])
    (wheel,) = dist.glob("nabla-*.whl")
    venv = tmp / "venv"
    run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
         "--no-index", str(wheel)])
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    Path(purelib.strip(), "nabla_test_dependencies.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n")
    return venv


def test_a_wheel_install_upgrades_the_database_creates_the_demo_and_lists_the_bank(
        installed, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    nabla = str(installed / "bin" / "nabla")

    def command(*args: str) -> str:
        return run([nabla, *args], cwd=empty, env=env)

    database = installed / "var" / "nabla-instance" / "nabla.sqlite3"
    assert f"database sqlite:///{database} is at revision" in command("db", "upgrade")
    assert "Demo course DEMO101" in command("demo")
    listing = command("problems", "list")
    bank = sorted(path.stem for path in (ROOT / "problems").glob("*.toml"))
    assert sorted(line.split()[0] for line in listing.splitlines()) == bank
    assert list(empty.iterdir()) == []  # nothing written where the commands ran
    # The code, the migrations, the bank and the templates all come from the wheel.
    where = run([str(installed / "bin" / "python"), "-c", """
import server, server.db, server.engine.bank
from server import create_app
print(server.__file__, server.db.MIGRATIONS_DIR, server.engine.bank.BANK_DIR)
print(create_app().test_client().get("/login").status_code)
"""], cwd=empty, env=env).split()
    site = str(installed / "lib")
    assert all(path.startswith(site) for path in where[:3]), where
    assert where[3] == "200"
