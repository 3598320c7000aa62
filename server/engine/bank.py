"""The built-in problem bank: one spec file per problem in ``problems/``.

In a checkout that is the repository's ``problems/`` folder (the one TAs
edit); a wheel carries it as package data, ``server/bank/`` (see setup.py).
"""

from __future__ import annotations

from pathlib import Path

from server.engine.spec import ProblemSpec, SpecError, SpecIssue, load_spec

_PACKAGED_BANK = Path(__file__).resolve().parents[1] / "bank"
_CHECKOUT_BANK = Path(__file__).resolve().parents[2] / "problems"
BANK_DIR = _PACKAGED_BANK if _PACKAGED_BANK.is_dir() else _CHECKOUT_BANK

_cache: dict[tuple, dict[str, ProblemSpec]] = {}


def spec_files(directory: Path | None = None) -> list[Path]:
    return sorted((directory or BANK_DIR).glob("*.toml"))


def load_bank(directory: Path | None = None) -> dict[str, ProblemSpec]:
    """Every spec in the bank by id; raises SpecError listing every bad file.

    Parsed specs are cached until a file changes (name, size or mtime)."""
    files = spec_files(directory)
    stamp = tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files)
    if stamp in _cache:
        return _cache[stamp]
    bank: dict[str, ProblemSpec] = {}
    problems: list[str] = []
    for path in files:
        try:
            spec = load_spec(path)
        except SpecError as exc:
            problems.append(str(exc))
            continue
        if spec.id != path.stem:
            problems.append(f"{path}: id {spec.id!r} does not match the file name {path.stem!r}")
        elif spec.id in bank:
            problems.append(f"{path}: duplicate id {spec.id!r}")
        else:
            bank[spec.id] = spec
    if problems:
        raise SpecError(str(directory or BANK_DIR), [SpecIssue(None, p) for p in problems])
    _cache.clear()
    _cache[stamp] = bank
    return bank


class UnknownProblemError(LookupError):
    pass


def find_problem(ref: str, directory: Path | None = None) -> ProblemSpec:
    """A problem by id (from the bank) or by path to a spec file."""
    return load_spec(find_spec_file(ref, directory))


def find_spec_file(ref: str, directory: Path | None = None) -> Path:
    """The spec file of a problem id (in the bank folder) or of a path."""
    path = Path(ref)
    if ref.endswith(".toml") or path.is_file():
        if not path.is_file():
            raise UnknownProblemError(f"no such spec file: {ref}")
        return path
    candidate = (directory or BANK_DIR) / f"{ref}.toml"
    if not candidate.is_file():
        known = ", ".join(p.stem for p in spec_files(directory))
        raise UnknownProblemError(f"unknown problem {ref!r} (known: {known})")
    return candidate
