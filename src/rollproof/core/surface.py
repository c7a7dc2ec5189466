"""The vocabulary of surfaces, shared by the engines' SQL readers, the run-time guard and the
surfaces layer: how a statement touches an object, what kind of object, which statements destroy
data and which rehearsal leg proves whether that loss comes back. Pure data, no parsing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

TEXT_WIDTH = 120
"""Statement text is whitespace-folded and cut to this many characters for display."""

POSTGRESQL = "postgresql"
"""The dialect read with PostgreSQL's own parser (pglast, rollproof.engines.postgres.scope),
used for PostgreSQL sources; every other dialect name is a sqlglot dialect."""


class AccessKind(StrEnum):
    READ = "READ"
    WRITE = "WRITE"
    CREATE = "CREATE"
    ALTER = "ALTER"
    DROP = "DROP"


class ObjectType(StrEnum):
    TABLE = "table"
    VIEW = "view"
    INDEX = "index"
    TRIGGER = "trigger"
    UNKNOWN = "unknown"


class RiskCode(StrEnum):
    DROP_TABLE = "DROP_TABLE"
    DROP_COLUMN = "DROP_COLUMN"
    DELETE_ALL = "DELETE_ALL"
    UPDATE_ALL = "UPDATE_ALL"
    TRUNCATE = "TRUNCATE"
    TYPE_CHANGE = "TYPE_CHANGE"


class Surface(StrEnum):
    """The `[surfaces]` list of change.toml an object must be declared in."""

    READS = "reads"
    WRITES = "writes"


@dataclass(frozen=True, slots=True)
class Access:
    """One object one statement touches: its name, how, and what kind of object it is."""

    object: str
    kind: AccessKind
    object_type: ObjectType


@dataclass(frozen=True, slots=True)
class StatementScope:
    """One statement of a script (1-based `index`) and every object it touches.

    `unknown` is the reason rollproof could not understand the statement, or None.
    """

    index: int
    text: str
    accesses: tuple[Access, ...]
    unknown: str | None


@dataclass(frozen=True, slots=True)
class Risk:
    """A statement that destroys data, and which rehearsal leg proves whether it comes back."""

    statement: int
    text: str
    code: RiskCode
    object: str
    message: str
    proven_by: str


@dataclass(frozen=True, slots=True)
class Undeclared:
    """An object a statement touches that the change did not declare in `missing_from`."""

    statement: int
    text: str
    object: str
    kind: AccessKind
    object_type: ObjectType
    missing_from: Surface


# Which leg catches the loss and which undoes it: a revert leg compares the database after
# revert with before, so any row or value the revert cannot bring back makes it FAIL; the
# restore leg brings everything back from the pristine snapshot whatever the SQL did.
PROVEN_BY: dict[RiskCode, str] = {
    RiskCode.DROP_TABLE: (
        "the revert leg fails unless the revert recreates the table with every row it had; "
        "the transaction and restore legs prove a rollback or the snapshot brings it back"
    ),
    RiskCode.DROP_COLUMN: (
        "the revert leg fails unless the revert re-adds the column with every row's value "
        "(re-adding it empty is caught); the transaction and restore legs prove a rollback "
        "or the snapshot brings the values back"
    ),
    RiskCode.DELETE_ALL: (
        "the revert leg fails unless the revert re-inserts every deleted row; the "
        "transaction and restore legs prove a rollback or the snapshot brings them back"
    ),
    RiskCode.UPDATE_ALL: (
        "the revert leg fails unless the revert puts back every overwritten value; the "
        "transaction and restore legs prove a rollback or the snapshot brings them back"
    ),
    RiskCode.TRUNCATE: (
        "the revert leg fails unless the revert re-inserts every removed row; the restore "
        "leg proves the snapshot brings them back (TRUNCATE is not transactional in every "
        "engine, so the transaction leg may not cover it)"
    ),
    RiskCode.TYPE_CHANGE: (
        "the revert leg fails if the new type truncated, rounded or rejected any value, "
        "since it then differs after the revert; the restore leg proves the snapshot brings "
        "the original values back"
    ),
}
