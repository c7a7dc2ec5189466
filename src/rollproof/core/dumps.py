"""Dump sources: an operator's own copy of production, named by a source string.

    pgdump:PATH[#sha256=HEX]       a pg_dump archive, custom (-Fc) or directory (-Fd) format
    sqlitedump:PATH[#sha256=HEX]   a SQLite database file copied from production

A dump is rehearsed like a source, but nothing connects to production: the dump is the input.
What proves which input it was is its sha256 (`docs/postgresql.md`, "Dump sources", defines it
for a directory). The `#sha256=` suffix is the digest the dump must have: a rehearsal given it
refuses a dump that hashes differently before anything is restored, and every packet records
its source with that suffix, so commands.sh and RERUN.sh reproduce from the same dump or not at
all. The suffix is read only when it is exactly `#sha256=` and 64 lower-case hex digits at the
end; any other `#` is part of the path.

Pure: the grammar and the constants the engines, the rehearsal and the validator share.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rollproof.core.errors import SourceError

PGDUMP = "pgdump"
SQLITEDUMP = "sqlitedump"
SCHEMES = (PGDUMP, SQLITEDUMP)

PG_CUSTOM = "pg-custom"
PG_DIRECTORY = "pg-directory"
SQLITE_FILE = "sqlite-file"
FORMATS: dict[str, tuple[str, ...]] = {
    PGDUMP: (PG_CUSTOM, PG_DIRECTORY),
    SQLITEDUMP: (SQLITE_FILE,),
}
"""The formats each scheme reads, as report.json's `source.dump.format` names them."""
ENGINES = {PGDUMP: "postgresql", SQLITEDUMP: "sqlite"}

DUMP_LANE = "production-shaped-clone"
"""The lane of the default ladder a dump serves (docs/governance.md): a copy of production's
content, rehearsed without a connection to production."""

_DIGEST = re.compile(r"#sha256=([0-9a-f]{64})\Z")


@dataclass(frozen=True, slots=True)
class DumpDsn:
    scheme: str
    path: str
    sha256: str | None
    """The digest the dump must have, when the source string names one."""

    def dsn(self, sha256: str | None = None) -> str:
        """The source string; with `sha256`, the one a packet records (`#sha256=`)."""
        digest = sha256 or self.sha256
        return f"{self.scheme}:{self.path}" + (f"#sha256={digest}" if digest else "")


def dump_scheme(dsn: str) -> str | None:
    """`pgdump` or `sqlitedump` when `dsn` names a dump, else None."""
    head, sep, _ = dsn.partition(":")
    return head if sep and head in SCHEMES else None


def parse_dump_dsn(dsn: str) -> DumpDsn:
    """A dump source string, split; a bad one is the user's to fix (exit 2)."""
    scheme = dump_scheme(dsn)
    if scheme is None:
        raise SourceError(f"source {dsn!r}: not a dump (pgdump:PATH or sqlitedump:PATH)")
    if any(not c.isprintable() for c in dsn):
        raise SourceError(f"source {dsn!r}: a path cannot hold control characters")
    rest = dsn[len(scheme) + 1 :]
    sha256 = None
    m = _DIGEST.search(rest)
    if m is not None:
        sha256, rest = m.group(1), rest[: m.start()]
    elif "#sha256=" in rest:
        raise SourceError(
            f"source {dsn!r}: #sha256= must be followed by 64 lower-case hex digits, at the end"
        )
    if not rest:
        raise SourceError(f"source {dsn!r}: names no file")
    return DumpDsn(scheme, rest, sha256)
