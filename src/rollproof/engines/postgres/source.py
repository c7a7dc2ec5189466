"""`rollproof fingerprint` of a PostgreSQL database: read-only sessions in one snapshot.

Its own module, apart from session.py (the whole rehearsal), so the fingerprint command and
the governance checks that only read a source import the driver and the fingerprint, not the
rehearsal's SQL parser, role handling and dump tooling.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql

from rollproof.core.errors import EnvironmentProblemError
from rollproof.core.fingerprint import Fingerprint
from rollproof.engines.base import Progress
from rollproof.engines.postgres.conn import connect_source, describe_error, parse_pg_dsn
from rollproof.engines.postgres.fingerprint import fingerprint_connection

__all__ = ["fingerprint_source"]


def fingerprint_source(
    dsn: str, progress: Progress | None = None, *, jobs: int | None = None
) -> Fingerprint:
    """Fingerprint a PostgreSQL database through read-only sessions (`rollproof fingerprint`).

    Tables are read over up to `jobs` sessions at once (default: up to 4), all in the same
    exported snapshot, so the result is that of one instant.
    """
    target = parse_pg_dsn(dsn)

    @contextlib.contextmanager
    def worker(snapshot_id: str) -> Iterator[psycopg.Connection[Any]]:
        with contextlib.closing(connect_source(target)) as extra:
            extra.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            extra.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_id)))
            yield extra

    with contextlib.closing(connect_source(target)) as conn:
        try:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            row = conn.execute("SELECT pg_catalog.pg_export_snapshot()").fetchone()
            assert row is not None
            snapshot_id = str(row[0])
            return fingerprint_connection(
                conn,
                progress,
                more=lambda: worker(snapshot_id),
                jobs=jobs or max(1, min(4, os.cpu_count() or 1)),
            )
        except psycopg.Error as e:
            raise EnvironmentProblemError(
                f"source {target.shown}: cannot fingerprint: {describe_error(e)}"
            ) from None
