"""The vocabulary of surfaces, shared by the engines' SQL readers, the run-time guard and the
surfaces layer: how a statement touches an object, what kind of object, which statements destroy
data and which rehearsal leg proves whether that loss comes back. Pure data, no parsing.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
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
    implied: tuple[Implicit, ...] = ()
    """Objects the database makes or reads for this statement's own objects (a partition the
    statement creates under its parent, a foreign key's parent table): covered by their
    owner's declaration."""
    error: str | None = None
    """The database's own parser refused the statement (a syntax error): the change is wrong,
    which is not a scoping question. `unknown` says the same, for readers that only look there."""


@dataclass(frozen=True, slots=True)
class Implicit:
    """An object the database makes or reads on behalf of `owner`, which covers it.

    `kind` is READ for an object only read for the owner (a foreign key's parent or child,
    read by the key's check) and WRITE for one the database writes, creates or drops with it
    (an automatic index, an owned sequence, a sequence a default calls, a partition the change
    creates under it, TOAST). A WRITE is covered when the owner is declared in `writes`; a
    READ when it is declared in either list. A trigger's writes into other tables are never
    implicit: they need declaring.
    """

    object: str
    owner: str
    kind: AccessKind
    reason: str

    def to_json(self) -> dict[str, str]:
        return {
            "object": self.object,
            "covered_by": self.owner,
            "kind": str(self.kind),
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Catalog:
    """What a source database makes for its objects, read from its catalog (read-only).

    `objects` maps an implicit object's normalised name to each `Implicit` that explains it
    (one object may belong to several owners: a sequence two tables' defaults call). `tables`
    and `indexes` are the names of the source's tables and indexes, for `--suggest`.
    """

    objects: Mapping[str, tuple[Implicit, ...]] = field(default_factory=dict)
    tables: frozenset[str] = frozenset()

    def of(self, name: str) -> tuple[Implicit, ...]:
        return self.objects.get(fold_name(name).removeprefix("main."), ())


EMPTY_CATALOG = Catalog()

_SQLITE_AUTOINDEX = re.compile(r"^sqlite_autoindex_(.+)_[0-9]+$")


def by_name(name: str) -> Implicit | None:
    """An implicit object known by its name alone: SQLite names the index it makes for a
    UNIQUE or PRIMARY KEY constraint `sqlite_autoindex_<table>_<N>`, and no other object may
    have a name starting with `sqlite_`."""
    m = _SQLITE_AUTOINDEX.match(fold_name(name).removeprefix("main."))
    if m is None:
        return None
    return Implicit(
        m.group(0), m.group(1), AccessKind.WRITE, f"automatic index of {m.group(1)} (UNIQUE/PK)"
    )


_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def fold_name(name: str) -> str:
    """A database object's name as the engines compare unquoted names: ASCII letters without
    case, every other character as it is. SQLite compares names ignoring ASCII case only, and
    PostgreSQL folds only ASCII in an unquoted name, so `Ä` and `ä` are two objects to both;
    `str.lower` would make them one, and a change declared to write `ä` could write `Ä`.
    (Where a coarser match is the safe side, forbidden patterns and the tables a script was
    seen writing, `str.lower` stays.)"""
    return name.translate(_ASCII_LOWER)


def _normal(name: str) -> str:
    return fold_name(name.strip()).removeprefix("main.")


class Coverage:
    """Which implicit objects the declared surfaces cover, and by what (one rule for the static
    check, the run-time guard and the observed scope).

    A WRITE-kind implicit object is covered when its owner is declared in `writes`, or is
    itself covered as a write (an index of a partition the change creates under a declared
    parent); a READ-kind one when its owner is declared in either list or covered. A READ of
    a WRITE-kind covered object is covered too. SQLite's automatic indexes are known by name
    (`by_name`).
    """

    def __init__(
        self, reads: Iterable[str], writes: Iterable[str], implicit: Iterable[Implicit]
    ) -> None:
        self.writes = frozenset(_normal(n) for n in writes)
        self.declared = self.writes | frozenset(_normal(n) for n in reads)
        self.by_object: dict[str, list[Implicit]] = {}
        for item in implicit:
            entries = self.by_object.setdefault(_normal(item.object), [])
            if item not in entries:
                entries.append(item)

    def _owner_ok(self, owner: str, write: bool, depth: int) -> bool:
        owner = _normal(owner)
        if owner in (self.writes if write else self.declared):
            return True
        return (
            self.explain(owner, AccessKind.WRITE if write else AccessKind.READ, depth + 1)
            is not None
        )

    def explain(self, name: str, kind: AccessKind, depth: int = 0) -> Implicit | None:
        """The implicit relation that covers an access of `kind` to `name`, or None."""
        if depth > 8:
            return None
        key = _normal(name)
        write = kind is not AccessKind.READ
        candidates = list(self.by_object.get(key, ()))
        rule = by_name(key)
        if rule is not None:
            candidates.append(rule)
        for item in candidates:
            if write and item.kind is AccessKind.READ:
                continue
            if self._owner_ok(item.owner, item.kind is not AccessKind.READ, depth):
                return item
        return None

    def covered_writes(self) -> frozenset[str]:
        """Every known implicit object covered as a write (an engine grants them too)."""
        return frozenset(n for n in self.by_object if self.explain(n, AccessKind.WRITE))

    def covered_reads(self) -> frozenset[str]:
        return frozenset(n for n in self.by_object if self.explain(n, AccessKind.READ))


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
