"""A SQLite file copied from production as the source (`sqlitedump:PATH`).

A SQLite dump is a database file, read exactly as a live SQLite source is (read-only, snapshot
under a read lock, the same isolation checks); what differs is what the packet says: the source
is a dump, its sha256 (the one `source-bytes-unchanged` records, of the bytes the snapshot was
copied from) and the lane it serves. A source string with `#sha256=HEX` refuses a file that
hashes differently (exit 2), so RERUN.sh and commands.sh reproduce from the same copy. A dump
is one file: one with a non-empty `-wal` or `-journal` beside it is refused (checkpoint it, or
copy it with `sqlite3 prod.db ".backup dump.db"`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rollproof.core.dumps import DUMP_LANE, SQLITE_FILE, SQLITEDUMP, DumpDsn, parse_dump_dsn
from rollproof.core.errors import SourceError
from rollproof.core.fingerprint import Fingerprint
from rollproof.core.guard import SurfaceGuard
from rollproof.engines.base import Progress
from rollproof.engines.sqlite.session import SqliteSession, file_sha256, source_files
from rollproof.engines.sqlite.source import check_sqlite_file, fingerprint_file, sqlite_dsn


class SqliteDumpSession(SqliteSession):
    """An `EngineSession` for a SQLite file an operator copied from production."""

    def __init__(
        self,
        dsn: str,
        *,
        workdir: Path | None = None,
        progress: Progress | None = None,
        guard: SurfaceGuard | None = None,
    ) -> None:
        parsed = parse_dump_dsn(dsn)
        if parsed.scheme != SQLITEDUMP:
            raise SourceError(f"source {dsn!r}: not a SQLite dump (sqlitedump:PATH)")
        path = Path(parsed.path).absolute()
        if path.is_file() and len(source_files(path)) > 1:
            raise SourceError(
                f"source {SQLITEDUMP}:{path}: a dump is one file, and this one has a "
                "-wal or -journal beside it; checkpoint it, or copy it with .backup"
            )
        super().__init__(sqlite_dsn(path), workdir=workdir, progress=progress, guard=guard)
        self.dump_sha256 = self._source_digest_before[self.source.name]
        if parsed.sha256 is not None and parsed.sha256 != self.dump_sha256:
            self.close(keep=False)
            raise SourceError(
                f"source {SQLITEDUMP}:{self.source}: the dump's sha256 is {self.dump_sha256}, "
                f"not the {parsed.sha256} it must have: it is not the dump named (changed, or "
                "another)"
            )

    def describe_source(self) -> dict[str, Any]:
        return {
            **super().describe_source(),
            "dsn": DumpDsn(SQLITEDUMP, str(self.source), None).dsn(self.dump_sha256),
            "dump": {"format": SQLITE_FILE, "sha256": self.dump_sha256, "lane": DUMP_LANE},
        }

    def is_source(self, dsn: str, base: Path) -> bool:
        try:
            return (base / parse_dump_dsn(dsn).path).resolve() == self.source
        except SourceError:
            return super().is_source(dsn, base)


def fingerprint_sqlite_dump(dsn: str, progress: Progress | None = None) -> tuple[Fingerprint, str]:
    """The content fingerprint of a SQLite dump and its sha256 (`rollproof fingerprint
    sqlitedump:PATH`), read-only; a `#sha256=` the file does not have is refused first."""
    parsed = parse_dump_dsn(dsn)
    if parsed.scheme != SQLITEDUMP:
        raise SourceError(f"source {dsn!r}: not a SQLite dump (sqlitedump:PATH)")
    path = Path(parsed.path)
    digest = file_sha256(check_sqlite_file(path))
    if parsed.sha256 is not None and parsed.sha256 != digest:
        raise SourceError(
            f"source {SQLITEDUMP}:{path}: the dump's sha256 is {digest}, not the "
            f"{parsed.sha256} it must have: it is not the dump named (changed, or another)"
        )
    return fingerprint_file(path, progress), digest
