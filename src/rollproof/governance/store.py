"""Where a ledger lives: a SQLite file (the default) or a PostgreSQL database shared by a team.

Both stores keep the same events, chain, fold and checkpoints, and verify through the same pure
core (`ledger.verify_stored`); this module only picks one from the policy's `ledger` setting so
that the commands and the governed flow never ask which it is:

    open_ledger(".rollproof/ledger.db")    -> SqliteLedger
    open_ledger("postgresql://host/db")    -> PostgresLedger (engines/postgres_ledger.py)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from rollproof.core.keys import SigningKey
from rollproof.governance import ledger as sqlite_ledger
from rollproof.governance.events import Event, NewEvent
from rollproof.governance.ledger import Builder, Checkpoint, VerifiedLedger


class LedgerStore(Protocol):
    @property
    def where(self) -> str:
        """The ledger's location for messages (a path, or a DSN without its password)."""
        ...

    def exists(self) -> bool: ...

    def read_verified(self, *, trusted_checkpoint: Checkpoint | None = None) -> VerifiedLedger: ...

    def append_events(
        self, events: Sequence[NewEvent] | Builder, *, now: datetime
    ) -> tuple[Event, ...]: ...

    def record_grant_event(self, event: NewEvent, *, now: datetime) -> Event: ...

    def write_checkpoint(self, key: SigningKey, out_path: Path, *, now: datetime) -> Checkpoint: ...


@dataclass(frozen=True, slots=True)
class SqliteLedger:
    path: Path

    @property
    def where(self) -> str:
        return str(self.path)

    def exists(self) -> bool:
        return self.path.is_file()

    def read_verified(self, *, trusted_checkpoint: Checkpoint | None = None) -> VerifiedLedger:
        return sqlite_ledger.read_verified(self.path, trusted_checkpoint=trusted_checkpoint)

    def append_events(
        self, events: Sequence[NewEvent] | Builder, *, now: datetime
    ) -> tuple[Event, ...]:
        return sqlite_ledger.append_events(self.path, events, now=now)

    def record_grant_event(self, event: NewEvent, *, now: datetime) -> Event:
        return sqlite_ledger.record_grant_event(self.path, event, now=now)

    def write_checkpoint(self, key: SigningKey, out_path: Path, *, now: datetime) -> Checkpoint:
        return sqlite_ledger.write_checkpoint(self.path, key, out_path, now=now)


@dataclass(frozen=True, slots=True)
class PostgresLedger:
    dsn: str

    @property
    def where(self) -> str:
        from rollproof.core.redact import redact_dsn

        return redact_dsn(self.dsn)

    def exists(self) -> bool:
        from rollproof.governance import ledger_postgres as postgres_ledger

        return postgres_ledger.ledger_exists(self.dsn)

    def read_verified(self, *, trusted_checkpoint: Checkpoint | None = None) -> VerifiedLedger:
        from rollproof.governance import ledger_postgres as postgres_ledger

        return postgres_ledger.read_verified(self.dsn, trusted_checkpoint=trusted_checkpoint)

    def append_events(
        self, events: Sequence[NewEvent] | Builder, *, now: datetime
    ) -> tuple[Event, ...]:
        from rollproof.governance import ledger_postgres as postgres_ledger

        return postgres_ledger.append_events(self.dsn, events, now=now)

    def record_grant_event(self, event: NewEvent, *, now: datetime) -> Event:
        from rollproof.governance import ledger_postgres as postgres_ledger

        return postgres_ledger.record_grant_event(self.dsn, event, now=now)

    def write_checkpoint(self, key: SigningKey, out_path: Path, *, now: datetime) -> Checkpoint:
        from rollproof.governance import ledger_postgres as postgres_ledger

        return postgres_ledger.write_checkpoint(self.dsn, key, out_path, now=now)


def open_ledger(location: str | Path | LedgerStore) -> LedgerStore:
    """The store for a policy's `ledger` setting (a path or a postgresql:// DSN)."""
    if isinstance(location, SqliteLedger | PostgresLedger):
        return location
    if isinstance(location, str) and location.startswith(("postgresql://", "postgres://")):
        return PostgresLedger(location)
    if isinstance(location, str | Path):
        return SqliteLedger(Path(location))
    return location
