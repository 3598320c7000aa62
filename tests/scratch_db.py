"""Scratch PostgreSQL databases for the tests and the benchmarks: each run creates
its own, empty database on a server and drops it at the end."""

from __future__ import annotations

from sqlalchemy import create_engine


def create_postgres_database(server_url: str, prefix: str = "nabla_scratch") -> str:
    """Create a new, empty database on the server at ``server_url``; return its URL."""
    import secrets

    from sqlalchemy import make_url, text

    name = f"{prefix}_{secrets.token_hex(6)}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(server_url: str, url: str) -> None:
    """Drop the database at ``url`` (made by ``create_postgres_database``)."""
    from sqlalchemy import make_url, text

    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(
                text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
            )
    finally:
        admin.dispose()
