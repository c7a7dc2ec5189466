"""The isolation proof: evidence that a rehearsal's clone is not, and cannot reach, its source.

A proof is a list of named checks, each recorded with the evidence it rests on. Its verdict is
`PROVEN_ISOLATED_NOT_PRODUCTION` only when every check holds; a check not yet decided (None)
counts as not holding, so an interrupted or partial proof can never read as proven.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rollproof.core.model import IsolationVerdict


@dataclass(frozen=True, slots=True)
class IsolationCheck:
    name: str
    holds: bool | None
    evidence: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "holds": self.holds, "evidence": self.evidence}


@dataclass(frozen=True, slots=True)
class IsolationProof:
    checks: tuple[IsolationCheck, ...]

    @property
    def verdict(self) -> IsolationVerdict:
        if self.checks and all(c.holds is True for c in self.checks):
            return IsolationVerdict.PROVEN
        return IsolationVerdict.NOT_PROVEN

    @property
    def failed(self) -> list[str]:
        return [f"{c.name} ({c.evidence})" for c in self.checks if c.holds is not True]

    def with_check(self, check: IsolationCheck) -> IsolationProof:
        return IsolationProof((*self.checks, check))

    def to_json(self) -> dict[str, Any]:
        return {"verdict": str(self.verdict), "checks": [c.to_json() for c in self.checks]}


@dataclass(frozen=True, slots=True)
class SourceAfter:
    """Whether others wrote the source since the snapshot: an observation, never a check.

    A production primary is never quiet, and what others write there says nothing about what
    rollproof did, so a source that moved on keeps its rehearsal PROVEN; the verdicts are about
    the snapshot (its fingerprint is named), and a production lane later needs the target to
    match that snapshot where the change reads or writes (docs/governance.md).
    """

    moved_on: bool
    evidence: str

    def to_json(self) -> dict[str, Any]:
        return {"moved_on": self.moved_on, "evidence": self.evidence}


def source_after(moved_on: bool, snapshot: str, now: str) -> SourceAfter:
    """The observation, worded once for every engine: `snapshot` is the snapshot's fingerprint,
    `now` what the source was found to be at the end."""
    if moved_on:
        return SourceAfter(
            True,
            "source moved on since the snapshot (written by others during or after the "
            f"rehearsal): now {now}; every verdict here is about the snapshot, fingerprint "
            f"{snapshot}",
        )
    return SourceAfter(
        False, f"source as it was at the snapshot: {now}; snapshot fingerprint {snapshot}"
    )


# The isolation checks each engine records, in the order it records them: the one definition
# shared by the engines (which name their checks with these constants) and the validator
# (which refuses a packet whose checks are not exactly its engine's set).
CLONE_DISTINCT_FILE = "clone-distinct-file"
CLONE_OUTSIDE_SOURCE_DIR = "clone-outside-source-dir"
WORKSPACE_PRIVATE = "workspace-private"
SOURCE_OPENED_READ_ONLY = "source-opened-read-only"
SCRATCH_SERVER_DISTINCT = "scratch-server-distinct"
CLONE_DATABASE_FRESH = "clone-database-fresh"
SOURCE_SESSION_READ_ONLY = "source-session-read-only"
SOURCE_WROTE_NOTHING = "source-wrote-nothing"
CLONE_MATCHES_SOURCE = "clone-matches-source"

# The proof is about what rollproof did, never about what others did: that it wrote nothing to
# the source and that the clone is the source as of one instant (SQLite: one read transaction;
# PostgreSQL: one exported snapshot). A source that others wrote during or after the rehearsal
# is a recorded observation (`source.after` in report.json: "moved on since the snapshot"), not
# a failed check. These two checks did the opposite (a live source could never be proven
# isolated); the validator refuses a packet that records them, alone or mixed with the new set.
RETIRED_CHECKS = frozenset({"source-bytes-unchanged", "source-fingerprint-unchanged"})

ISOLATION_CHECKS: dict[str, tuple[str, ...]] = {
    "sqlite": (
        CLONE_DISTINCT_FILE,
        CLONE_OUTSIDE_SOURCE_DIR,
        WORKSPACE_PRIVATE,
        SOURCE_OPENED_READ_ONLY,
        CLONE_MATCHES_SOURCE,
    ),
    "postgresql": (
        SCRATCH_SERVER_DISTINCT,
        CLONE_DATABASE_FRESH,
        SOURCE_SESSION_READ_ONLY,
        CLONE_MATCHES_SOURCE,
        SOURCE_WROTE_NOTHING,
    ),
}

# A dump source (core/dumps.py) is its own source kind with its own set: a pg_dump archive has
# no source server, so nothing can be compared with one or re-read from it; what it proves is
# that no connection to any server but the scratch server was made, that the scratch databases
# are new, that the whole dump restored, and that the dump is the one its sha256 names from
# start to end. A SQLite dump is a database file read exactly as a live SQLite source is, so its
# set is the SQLite engine's (its sha256 is recorded in source.bytes_sha256_before).
NO_SOURCE_CONNECTION = "no-source-connection"
DUMP_RESTORED_CLEANLY = "dump-restored-cleanly"
DUMP_DIGEST_UNCHANGED = "dump-digest-unchanged"

DUMP_ISOLATION_CHECKS: dict[str, tuple[str, ...]] = {
    "pgdump": (
        NO_SOURCE_CONNECTION,
        CLONE_DATABASE_FRESH,
        DUMP_RESTORED_CLEANLY,
        DUMP_DIGEST_UNCHANGED,
    ),
    "sqlitedump": ISOLATION_CHECKS["sqlite"],
}


def expected_checks(engine: str, dump_scheme: str | None = None) -> tuple[str, ...] | None:
    """The isolation checks a packet of this engine (and dump scheme, for a dump) must record."""
    if dump_scheme is not None:
        return DUMP_ISOLATION_CHECKS.get(dump_scheme)
    return ISOLATION_CHECKS.get(engine)
