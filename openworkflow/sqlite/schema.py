"""The SQLite schema: the original's migrations, applying them, and reading the version.

The migration scripts are the TypeScript original's, version for version,
kept as ``.sql`` files in ``openworkflow/sqlite/migrations``.
"""

from __future__ import annotations

import sqlite3
from importlib import resources

from openworkflow.sqlite import queries as q


def migration_scripts() -> list[str]:
    """Return the migration SQL, in version order (index = version)."""
    folder = resources.files("openworkflow.sqlite").joinpath("migrations")
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sql"))
    return [folder.joinpath(name).read_text(encoding="utf-8") for name in names]


def migration_script() -> str:
    """Every migration as one printable script, each in its own transaction."""
    return "\n".join(
        f"-- migration {version}\nBEGIN;\n\n{script.strip()}\n\nCOMMIT;\n"
        for version, script in enumerate(migration_scripts())
    )


def current_migration_version(connection: sqlite3.Connection) -> int:
    """Highest applied migration, or -1 for a fresh database."""
    if connection.execute(q.MIGRATIONS_TABLE_EXISTS).fetchone()[0] == 0:
        return -1
    version = connection.execute(q.CURRENT_MIGRATION_VERSION).fetchone()[0]
    return -1 if version is None else int(version)


def migrate(connection: sqlite3.Connection) -> None:
    """Apply the migrations the database lacks, each in its own immediate transaction.

    Then the indexes this port adds (:data:`~openworkflow.sqlite.queries.EXTRA_INDEXES`,
    not versioned, ``IF NOT EXISTS``).
    """
    for version, script in enumerate(migration_scripts()):
        if version <= current_migration_version(connection):
            continue
        connection.executescript(f"BEGIN IMMEDIATE;\n{script}\nCOMMIT;")
    connection.executescript(q.EXTRA_INDEXES)
