"""User-facing errors. The CLI prints ``str(err)`` on one line and exits 2, no traceback.

Raise ``DistillError`` (or a subclass) for anything the user can fix: bad input, a
missing file, an unknown dataset. Its message must name the problem (with file and
line where there is one) and must never contain a secret.
"""


class DistillError(Exception):
    """A problem the user can fix; shown as one line, exit code 2."""

    exit_code = 2


class InputError(DistillError):
    """Malformed input: a file, a line of JSONL, a config value."""


class NotFoundError(DistillError):
    """A named thing (dataset, version, file, run) does not exist."""


class DatabaseError(DistillError):
    """The database cannot be used: not a DuckDB file, newer schema, locked too long."""


class TeacherError(DistillError):
    """A teacher cannot be used at all (server did not start, white-box on an API teacher)."""


class DatabaseLockedError(DatabaseError):
    """Another process held the database longer than we were willing to wait."""
