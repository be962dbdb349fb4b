"""The schema's versions: the numbered ``migrations/NNN_name.sql`` files and applying them.

A database records each migration it has had in ``schema_version``. The store brings a
database up to date the first time it opens it for writing (each migration in its own
transaction) and refuses one whose version is newer than this code knows. Adding to the
schema means adding a file, never editing a shipped one:

    storage/migrations/001_init.sql      the tables of the data model
    storage/migrations/002_views.sql     named views over them (kept_samples, run_drops, ...)
    storage/migrations/003_pairwise.sql  the pairwise judge's verdicts and pairwise_standings
    storage/migrations/004_lion.sql      Lion's pools, referee verdicts and iterations

(This module is ``schema``, not ``migrations``: that name is the folder of SQL files.)
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import duckdb

from core.errors import DatabaseError
from storage.records import utcnow
from storage.sql import scalar

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_MIGRATION_FILE = re.compile(r"^(\d+)_([A-Za-z0-9_]+)\.sql$")

# Tables every database has; what `distill db stats` counts, in lineage order.
TABLES: tuple[str, ...] = (
    "runs",
    "requests",
    "instructions",
    "samples",
    "filter_decisions",
    "minhash_signatures",
    "datasets",
    "dataset_items",
    "training_runs",
    "evaluations",
    "pairwise_judgments",
    "lion_pool",
    "lion_judgments",
    "lion_iterations",
)

SCHEMA_VERSION_DDL = """
CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER PRIMARY KEY,
    name       VARCHAR NOT NULL,
    applied_at TIMESTAMP NOT NULL
)"""
SCHEMA_VERSION_EXISTS_SQL = (
    "SELECT count(*) FROM information_schema.tables "
    "WHERE table_schema = 'main' AND table_name = 'schema_version'"
)
CURRENT_VERSION_SQL = "SELECT coalesce(max(version), 0) FROM schema_version"
RECORD_MIGRATION_SQL = "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)"


def migrations() -> list[tuple[int, str, Path]]:
    """The migration files shipped with this code, as (version, name, path), in order."""
    found = []
    for path in MIGRATIONS_DIR.iterdir():
        m = _MIGRATION_FILE.match(path.name)
        if m:
            found.append((int(m.group(1)), m.group(2), path))
    return sorted(found)


def latest_schema_version() -> int:
    """The schema version this code writes (the highest migration number)."""
    return migrations()[-1][0]


def db_version(con: duckdb.DuckDBPyConnection) -> int:
    """The schema version of the database behind ``con`` (0: nothing applied yet)."""
    if not scalar(con, SCHEMA_VERSION_EXISTS_SQL):
        return 0
    return int(scalar(con, CURRENT_VERSION_SQL))


def check_not_newer(path: Path, version: int) -> None:
    """Refuse a database written by a newer distillery: its data may mean things we do not know."""
    latest = latest_schema_version()
    if version > latest:
        raise DatabaseError(
            f"database {path} has schema version {version}, newer than this "
            f"distillery understands ({latest}); upgrade distillery to use it"
        )


def apply_migrations(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    """Apply every migration newer than the database (``path``, for messages) through a
    read-write ``con``, each in its own transaction; returns the version reached."""
    con.execute(SCHEMA_VERSION_DDL)
    current = db_version(con)
    check_not_newer(path, current)
    for version, name, file in migrations():
        if version <= current:
            continue
        con.begin()
        try:
            con.execute(file.read_text(encoding="utf-8"))
            con.execute(RECORD_MIGRATION_SQL, [version, name, utcnow()])
            con.commit()
        except duckdb.Error as err:
            con.rollback()
            raise DatabaseError(f"migration {file.name} failed on {path}: {err}") from err
        log.info("applied migration %s to %s", file.name, path)
        current = version
    return current
