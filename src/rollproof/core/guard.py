"""Run-time surface enforcement: decide, access by access, whether a running script may proceed.

An engine asks the guard about every access it is about to make on behalf of a change script
(SQLite asks through `Connection.set_authorizer`, at prepare time, so writes made by triggers
and foreign-key cascades are asked about too). The guard answers from the change's declared
surfaces and the policy's forbidden objects, and records every denial and every reported access
with the statement that made it.

Rules (names compare case-insensitively):
* any access to a forbidden object (name or glob) is denied, reads included: "no impact on
  these tables" must hold even for a change that only looks;
* a write, create, alter or drop needs the object in `writes`;
* a read needs the object in `reads` or `writes`, or must happen inside a view or trigger that
  is itself declared (reading a declared view reads its tables on the change's behalf);
  otherwise it is denied, or only reported when the policy says `undeclared_reads = "report"`.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from rollproof.core.policy import ReadMode
from rollproof.core.surface import AccessKind


class Decision(StrEnum):
    DENIED = "denied"
    REPORTED = "reported"


@dataclass(frozen=True, slots=True)
class GuardEvent:
    script: str
    statement: int
    kind: AccessKind
    object: str
    via: str | None
    decision: Decision
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "script": self.script,
            "statement": self.statement,
            "kind": str(self.kind),
            "object": self.object,
            "via": self.via,
            "decision": str(self.decision),
            "reason": self.reason,
        }


def matches_any(name: str, patterns: Iterable[str]) -> bool:
    lowered = name.lower()
    return any(fnmatch.fnmatchcase(lowered, p.lower()) for p in patterns)


class SurfaceGuard:
    """Declared surfaces plus forbidden objects; records what it denied or reported."""

    def __init__(
        self,
        *,
        reads: Iterable[str],
        writes: Iterable[str],
        forbidden: Iterable[str] = (),
        read_mode: ReadMode = ReadMode.DENY,
        forbidden_env: Iterable[str] = (),
    ) -> None:
        self.writes = frozenset(n.lower().removeprefix("main.") for n in writes)
        self.reads = frozenset(n.lower().removeprefix("main.") for n in reads) | self.writes
        self.forbidden = tuple(forbidden)
        self.read_mode = read_mode
        self.forbidden_env = tuple(forbidden_env)
        """Environment variables no subprocess started for this rehearsal may receive."""
        self.events: list[GuardEvent] = []
        self.written: dict[str, set[str]] = {}
        """Every object each script role was seen writing, creating, altering or dropping,
        allowed or not: what an after-fingerprint must re-read (see sqlite_fingerprint.Reuse)."""
        self.opaque: set[str] = set()
        """Script roles that changed the database in a way the engine cannot attribute to
        objects (e.g. `PRAGMA writable_schema`): their after-fingerprints are taken in full."""
        self._script = ""
        self._statement = 0

    def at(self, script: str, statement: int) -> None:
        """Tell the guard which statement of which script is about to run."""
        self._script, self._statement = script, statement

    def _record(
        self, kind: AccessKind, obj: str, via: str | None, decision: Decision, reason: str
    ) -> None:
        event = GuardEvent(self._script, self._statement, kind, obj, via, decision, reason)
        if event not in self.events:
            self.events.append(event)

    def child_environment(self) -> dict[str, str]:
        """This process's environment without any forbidden variable, for a subprocess."""
        return {k: v for k, v in os.environ.items() if k not in self.forbidden_env}

    def mark_opaque(self) -> None:
        self.opaque.add(self._script)

    def written_by(self, *roles: str) -> frozenset[str] | None:
        """Objects the roles wrote, or None when any of them was opaque."""
        if any(r in self.opaque for r in roles):
            return None
        return frozenset().union(*(self.written.get(r, set()) for r in roles))

    def check(self, kind: AccessKind, obj: str, via: str | None = None) -> str | None:
        """None to allow; otherwise the reason the access is denied."""
        name = obj.lower()
        if kind is not AccessKind.READ:
            self.written.setdefault(self._script, set()).add(name)
        if matches_any(name, self.forbidden):
            reason = f"{kind.lower()} of forbidden object {name}"
            self._record(kind, name, via, Decision.DENIED, reason)
            return reason
        if kind is AccessKind.READ:
            if name in self.reads or (via is not None and via.lower() in self.reads):
                return None
            reason = f"read of undeclared object {name}" + (f" (via {via})" if via else "")
            if self.read_mode is ReadMode.REPORT:
                self._record(kind, name, via, Decision.REPORTED, reason)
                return None
            self._record(kind, name, via, Decision.DENIED, reason)
            return reason
        if name in self.writes:
            return None
        reason = f"{kind.lower()} of undeclared object {name}" + (f" (via {via})" if via else "")
        self._record(kind, name, via, Decision.DENIED, reason)
        return reason

    def denials_at(self, script: str, statement: int) -> list[GuardEvent]:
        return [
            e
            for e in self.events
            if e.script == script and e.statement == statement and e.decision is Decision.DENIED
        ]
