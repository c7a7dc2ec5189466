"""The dialect-free model of a migration project: ordered migrations and the loader's errors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from rollproof.core.errors import UsageError

FORMATS = ("sqitch", "flyway", "liquibase", "golang-migrate", "dbmate", "goose", "alembic")


class FormatError(UsageError):
    """A migration directory that cannot be read as its tool would: names the file and line."""

    def __init__(self, path: str, message: str, line: int | None = None) -> None:
        self.path = path
        self.line = line
        where = path if line is None else f"{path}:{line}"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True, slots=True)
class Sql:
    """One direction of a migration: the SQL rollproof runs and the file it comes from.

    `text` is what runs: the file's text, or one section of it (dbmate, goose), without a
    BEGIN/COMMIT pair that brackets the whole script (rollproof runs it in its own transaction).
    `path` is the file, relative to the project directory (POSIX).
    """

    path: str
    text: str
    line: int = 1
    """The line of `path` where `text` starts."""
    end: int | None = None
    """The last line of `path` that `text` holds, when it is a section of the file (dbmate,
    goose); None when it is the whole file."""
    stripped: bool = False
    """A BEGIN/COMMIT pair bracketing the whole script was blanked out of `text`."""


@dataclass(frozen=True, slots=True)
class Migration:
    id: str
    """The tool's own name for it: a sqitch change (`name`, or `name@tag` when reworked later),
    a Flyway version (`1.1`, or `R__desc` for a repeatable one), a Liquibase changeset
    (`author:id`), a golang-migrate, dbmate or goose version, an Alembic revision."""
    name: str
    """A description: the sqitch note, the file's description part."""
    apply: Sql
    revert: Sql | None
    verify: Sql | None
    requires: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    version: str | None = None
    """What the tool's bookkeeping table records for it (None when it records none): a Flyway
    or golang-migrate version, a sqitch change id (the SHA-1 sqitch computes from the plan),
    an Alembic revision."""
    record: tuple[str, ...] = ()
    """The key of its bookkeeping row when one value is not enough: Liquibase's (ID, AUTHOR,
    FILENAME) of DATABASECHANGELOG."""
    no_transaction: str | None = None
    """The marker that says the tool runs it outside a transaction, named (file:line)."""
    irreversible: str | None = None
    """Why it has no revert (None when it has one, or the tool simply gives none)."""
    no_mutation: bool = False
    """The migration is meant to change nothing (an Alembic merge revision renders no SQL): its
    change says `no_mutation = true`, so an apply that changes nothing is its pass."""
    notes: tuple[str, ...] = ()
    """What rollproof did to its scripts (a stripped BEGIN/COMMIT), shown with its result."""
    files: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    """Relative path -> bytes of every file the migration consists of."""

    @property
    def reversible(self) -> bool:
        return self.revert is not None

    def why_not_reversible(self) -> str:
        if self.revert is not None:
            return ""
        return self.irreversible or "no revert (down) script"


@dataclass(frozen=True, slots=True)
class Project:
    format: str
    directory: str
    migrations: tuple[Migration, ...]
    bookkeeping: str | None = None
    """The table the tool records deployed migrations in, where rollproof can read it."""
    engine: str | None = None
    """The database engine the project names (sqitch.conf `core.engine`), if it names one."""
    options: Mapping[str, str] = field(default_factory=dict)
    """What the bookkeeping reader needs besides the table: sqitch's `project` and `registry`."""

    def index_of(self, migration_id: str) -> int:
        for i, m in enumerate(self.migrations):
            if m.id == migration_id or m.version == migration_id:
                return i
        raise UsageError(
            f"{self.directory}: no migration {migration_id!r} "
            f"(the {self.format} project has {len(self.migrations)})"
        )
