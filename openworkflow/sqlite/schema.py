"""The SQLite schema: the original's migrations and this port's, applying them, versions.

The original's migration scripts are the TypeScript original's, version for
version, kept as ``.sql`` files in ``openworkflow/sqlite/migrations`` and
recorded in its ``openworkflow_migrations`` ledger. This port's storage
(nullable columns, its own tables, extra indexes) is versioned separately in
``openworkflow/sqlite/python_migrations`` and recorded in
``openworkflow_python_migrations``, so it never takes a version number a
future upstream migration will use.
"""

from __future__ import annotations

import sqlite3
from importlib import resources

from openworkflow.core import clock
from openworkflow.sqlite import queries as q

PYTHON_LEDGER = """
CREATE TABLE IF NOT EXISTS "openworkflow_python_migrations" (
  "version" INTEGER NOT NULL PRIMARY KEY,
  "name" TEXT NOT NULL,
  "applied_at" TEXT NOT NULL
);
"""
"""This port's own migration ledger; the TypeScript original never reads it."""

_RECORD_PYTHON_MIGRATION = """
INSERT OR IGNORE INTO "openworkflow_python_migrations" ("version", "name", "applied_at")
VALUES (:version, :name, :applied_at)"""


def migration_scripts() -> list[str]:
    """Return the original's migration SQL, in version order (index = version)."""
    folder = resources.files("openworkflow.sqlite").joinpath("migrations")
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sql"))
    return [folder.joinpath(name).read_text(encoding="utf-8") for name in names]


def python_migration_scripts() -> list[tuple[str, str]]:
    """This port's migrations as (name, SQL), in version order (index = version)."""
    folder = resources.files("openworkflow.sqlite").joinpath("python_migrations")
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sql"))
    return [
        (name.removesuffix(".sql"), folder.joinpath(name).read_text(encoding="utf-8"))
        for name in names
    ]


def migration_script() -> str:
    """Every migration as one printable script, each in its own transaction."""
    parts = [
        f"-- migration {version}\nBEGIN;\n\n{script.strip()}\n\nCOMMIT;\n"
        for version, script in enumerate(migration_scripts())
    ]
    parts.append(
        "-- OpenWorkflow for Python's own migrations (ledger openworkflow_python_migrations)\n"
        f"{PYTHON_LEDGER.strip()}\n"
    )
    for version, (name, script) in enumerate(python_migration_scripts()):
        record = (
            'INSERT OR IGNORE INTO "openworkflow_python_migrations" ("version", "name", '
            f"\"applied_at\")\nVALUES ({version}, '{name}', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));"
        )
        parts.append(
            f"-- python migration {version}: {name}\nBEGIN;\n\n{script.strip()}\n{record}\n\n"
            "COMMIT;\n"
        )
    return "\n".join(parts)


def current_migration_version(connection: sqlite3.Connection) -> int:
    """Highest applied migration of the original's ledger, or -1 for a fresh database."""
    if connection.execute(q.MIGRATIONS_TABLE_EXISTS).fetchone()[0] == 0:
        return -1
    version = connection.execute(q.CURRENT_MIGRATION_VERSION).fetchone()[0]
    return -1 if version is None else int(version)


def applied_python_migrations(connection: sqlite3.Connection) -> set[int]:
    """The versions recorded in this port's ledger (empty when it does not exist yet)."""
    if connection.execute(q.PYTHON_MIGRATIONS_TABLE_EXISTS).fetchone()[0] == 0:
        return set()
    rows = connection.execute('SELECT "version" FROM "openworkflow_python_migrations"')
    return {int(row[0]) for row in rows}


def migrate(connection: sqlite3.Connection) -> None:
    """Apply the migrations the database lacks, each in its own immediate transaction.

    The original's first, then this port's. Each of this port's migrations
    checks its ledger inside its transaction (the write lock), so processes
    migrating one file at once apply it exactly once.
    """
    for version, script in enumerate(migration_scripts()):
        if version <= current_migration_version(connection):
            continue
        connection.executescript(f"BEGIN IMMEDIATE;\n{script}\nCOMMIT;")
    scripts = python_migration_scripts()
    applied = applied_python_migrations(connection)
    if all(version in applied for version in range(len(scripts))):
        return
    for version, (name, script) in enumerate(scripts):
        _apply_python_migration(connection, version, name, script)


def _apply_python_migration(
    connection: sqlite3.Connection, version: int, name: str, script: str
) -> None:
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.execute(PYTHON_LEDGER)
        if version not in applied_python_migrations(connection):
            for statement in _statements(script):
                connection.execute(statement)
            connection.execute(
                _RECORD_PYTHON_MIGRATION,
                {"version": version, "name": name, "applied_at": clock.to_iso(clock.now())},
            )
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _statements(script: str) -> list[str]:
    """Split a script into statements (``executescript`` would commit our transaction)."""
    statements: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements
