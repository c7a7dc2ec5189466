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


# The isolation checks each engine records, in the order it records them: the one definition
# shared by the engines (which name their checks with these constants) and the validator
# (which refuses a packet whose checks are not exactly its engine's set).
CLONE_DISTINCT_FILE = "clone-distinct-file"
CLONE_OUTSIDE_SOURCE_DIR = "clone-outside-source-dir"
WORKSPACE_PRIVATE = "workspace-private"
SOURCE_OPENED_READ_ONLY = "source-opened-read-only"
SOURCE_BYTES_UNCHANGED = "source-bytes-unchanged"
SCRATCH_SERVER_DISTINCT = "scratch-server-distinct"
CLONE_DATABASE_FRESH = "clone-database-fresh"
SOURCE_SESSION_READ_ONLY = "source-session-read-only"
CLONE_MATCHES_SOURCE = "clone-matches-source"
SOURCE_FINGERPRINT_UNCHANGED = "source-fingerprint-unchanged"

ISOLATION_CHECKS: dict[str, tuple[str, ...]] = {
    "sqlite": (
        CLONE_DISTINCT_FILE,
        CLONE_OUTSIDE_SOURCE_DIR,
        WORKSPACE_PRIVATE,
        SOURCE_OPENED_READ_ONLY,
        SOURCE_BYTES_UNCHANGED,
    ),
    "postgresql": (
        SCRATCH_SERVER_DISTINCT,
        CLONE_DATABASE_FRESH,
        SOURCE_SESSION_READ_ONLY,
        CLONE_MATCHES_SOURCE,
        SOURCE_FINGERPRINT_UNCHANGED,
    ),
}
