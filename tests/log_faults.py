"""Faults injected into the SQL layer of ``SqliteLog`` (its ``file_type`` parameter)."""

from __future__ import annotations

import sqlite3

from eventspine.log.sqlite_file import SqliteLogFile


class FailingCommitFile(SqliteLogFile):
    """Fails the next ``COMMIT`` with ``error`` (every row is written by then).

    Set ``FailingCommitFile.error = "database or disk is full"`` to arm it;
    it disarms itself when it fires.
    """

    error: str | None = None

    def commit(self) -> None:
        error, FailingCommitFile.error = FailingCommitFile.error, None
        if error is not None:
            raise sqlite3.OperationalError(error)
        super().commit()
