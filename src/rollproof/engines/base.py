"""The engine protocol: all the rehearsal needs from a database, and nothing dialect-specific.

An engine session owns one rehearsal's private workspace: a pristine snapshot of the source and
a working clone made fresh from it for each leg. The rehearsal (rollproof.rehearse.flow) drives the
legs through this protocol only; every SQL dialect fact lives behind it, in an engine module.

Invariants every engine keeps:
* the source is only ever opened read-only, and every opening is recorded for the isolation
  proof;
* `fresh_clone` yields a clone proven equal to the snapshot, and `restore_clone` checks the
  snapshot against its recorded digest before copying it back;
* scripts run on a new connection each time, so session state left by apply (TEMP objects,
  pragmas) cannot make revert look better than it is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rollproof.core.change import Script
from rollproof.core.fingerprint import Difference, Fingerprint, Reuse
from rollproof.core.impact import Impact
from rollproof.core.isolation import IsolationProof

Progress = Callable[[str], None]
"""Receives a short human description of the step now under way."""


@dataclass(frozen=True, slots=True)
class StatementRows:
    """A verify statement that returned rows: its number (from 1), its shortened text as an
    error would show it, and how many rows. A count, never the values: they may be secret."""

    statement: int
    text: str
    rows: int


@dataclass(frozen=True, slots=True)
class ScriptOutcome:
    """What running one script did. `error` and `not_applicable` are mutually exclusive."""

    statements_run: int
    error: str | None = None
    not_applicable: str | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    rows: tuple[StatementRows, ...] = ()
    """verify only: each statement that returned rows, with how many (never their values)."""

    @property
    def ok(self) -> bool:
        return self.error is None and self.not_applicable is None


@dataclass(frozen=True, slots=True)
class TransactionOutcome:
    """The transaction leg's run: the fingerprint inside the open transaction, then ROLLBACK."""

    script: ScriptOutcome
    after_apply: Fingerprint | None
    impact: Impact | None = None
    """What each statement of the apply did while it ran (core.impact), measured inside the
    open transaction; None when the script did not run to its end."""


@dataclass(frozen=True, slots=True)
class ReadOnlyOutcome:
    entry: Fingerprint
    script: ScriptOutcome | None
    exit: Fingerprint


class EngineSession(Protocol):
    """One rehearsal's view of a source and its isolated clone."""

    engine: str

    def describe_source(self) -> dict[str, Any]:
        """The source as it may appear in evidence (secrets redacted)."""
        ...

    def isolation(self) -> IsolationProof:
        """The isolation proof as far as it can be decided now."""
        ...

    def finish_isolation(self) -> IsolationProof:
        """Decide the checks that need the whole rehearsal to have run (source bytes unchanged)."""
        ...

    def is_source(self, dsn: str, base: Path) -> bool:
        """Whether `dsn` (a relative path read from `base`) names this session's source."""
        ...

    def snapshot_fingerprint(self) -> Fingerprint: ...

    def fresh_clone(self) -> None: ...

    def prepare_clone(self) -> None:
        """A hint that a fresh clone or a restore will be wanted soon: an engine may start
        making it in the background (SQLite copies the snapshot on an idle core)."""
        ...

    def fingerprint_clone(self, reuse: Reuse | None = None) -> Fingerprint:
        """Fingerprint the clone; an engine may take unwritten tables' digests from `reuse`
        (a hint it is free to ignore, at the cost of a full fingerprint)."""
        ...

    def run_script(self, role: str, script: Script, settings: Mapping[str, bool]) -> ScriptOutcome:
        """Run `script` (its `role`: apply, revert) on a new connection, committing as it goes."""
        ...

    def run_in_transaction(
        self, script: Script, settings: Mapping[str, bool], reuse_from: Fingerprint | None = None
    ) -> TransactionOutcome: ...

    def run_read_only(
        self, script: Script | None, entry_reuse: Reuse | None = None
    ) -> ReadOnlyOutcome: ...

    def restore_clone(self) -> None: ...

    def explain(self, differences: Sequence[Difference]) -> list[Difference]:
        """Add row-level detail to differences between the snapshot and the clone as it is now."""
        ...

    def close(self, *, keep: bool) -> Path | None:
        """Remove the workspace (or keep it and return where it is)."""
        ...
