"""Packaging beyond what pyproject.toml can say: the metadata is in pyproject.toml.

A wheel must carry the Alembic migrations and the built-in problem bank, which
live at the top of the repository (``migrations/``, and ``problems/``, the
folder TAs edit). They are mapped into the package as ``server/migrations``
and ``server/bank``; an installed Nabla finds them there (server.db,
server.engine.bank), a checkout in their repository folders.
"""

from setuptools import find_namespace_packages, setup

setup(
    packages=[*find_namespace_packages(include=["server", "server.*"], exclude=["*__pycache__"]),
              "server.bank", "server.migrations", "server.migrations.versions"],
    package_dir={"server.bank": "problems", "server.migrations": "migrations"},
    package_data={
        "server": ["templates/**/*", "static/**/*"],
        "server.bank": ["*.toml"],
        "server.migrations": ["*.mako"],
    },
)
