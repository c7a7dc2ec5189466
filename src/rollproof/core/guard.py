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
  otherwise it is denied, or only reported when the policy says `undeclared_reads = "report"`;
* what the database makes or reads for a declared object (`Implicit`: its automatic indexes,
  owned sequences and sequences its defaults call, partitions the change creates under it,
  the parent a foreign-key check reads) is covered by that object's declaration and recorded
  in `covered`, so the report can name it.

A path that reaches a forbidden object through another object (a view, a SECURITY DEFINER
function, a rule or trigger) is reported against the forbidden object, `via` the object the
statement named: "forbidden" means unreachable, not merely unnamed.

What a failed statement tells the world goes through `script_error`, the one function every
engine formats a script's error with: the database's error text can carry row values (a cast
error quotes the value it could not cast, a unique violation's DETAIL prints the key), so only
the error code, the statement's index and text (the change's own SQL), and the message with
every quoted string and number removed are kept.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from rollproof.core.policy import ReadMode
from rollproof.core.surface import AccessKind, Coverage, Implicit, fold_name


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
        implicit: Iterable[Implicit] = (),
    ) -> None:
        self.coverage = Coverage(reads, writes, implicit)
        """What the database makes or reads for the declared objects (see `Implicit`)."""
        self.declared_writes = self.coverage.writes
        self.writes = self.declared_writes | self.coverage.covered_writes()
        """Declared writes and the implicit objects they cover (an engine grants both)."""
        self.reads = self.coverage.declared | self.writes | self.coverage.covered_reads()
        self.covered: dict[str, Implicit] = {}
        """Every implicit object the change's scripts were allowed to touch, by name."""
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
        name = fold_name(obj)
        if kind is not AccessKind.READ:
            # coarser than `name` on purpose: a table is re-read if any name folding to it
            # was written (Reuse over-approximates)
            self.written.setdefault(self._script, set()).add(obj.lower())
        if matches_any(obj, self.forbidden):
            reason = f"{kind.lower()} of forbidden object {name}" + (f" (via {via})" if via else "")
            self._record(kind, name, via, Decision.DENIED, reason)
            return reason
        if name not in self.coverage.declared or (
            kind is not AccessKind.READ and name not in self.declared_writes
        ):
            implicit = self.coverage.explain(name, kind)
            if implicit is not None:
                self.covered.setdefault(name, implicit)
                return None
        if kind is AccessKind.READ:
            if name in self.reads or (via is not None and fold_name(via) in self.reads):
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

    def denied(self) -> bool:
        """Whether any access was denied so far (a held rehearsal, exit 3)."""
        return any(e.decision is Decision.DENIED for e in self.events)

    def denials_at(self, script: str, statement: int) -> list[GuardEvent]:
        return [
            e
            for e in self.events
            if e.script == script and e.statement == statement and e.decision is Decision.DENIED
        ]


# --- script errors, without values --------------------------------------------------------------

_QUOTED = re.compile(r"'(?:[^']|'')*'?|\"(?:[^\"]|\"\")*\"?")
_HEX = re.compile(r"\b0x[0-9A-Fa-f]+\b|\\x[0-9A-Fa-f]+")
_NUMBER = re.compile(r"(?<!\w)[-+]?\d+(?:[.:/-]\d+)*(?:[eE][-+]?\d+)?(?!\w)")
WITHHELD = "message withheld: written by code in the database, it may quote any value"


def without_values(message: str) -> str:
    """A database error message with nothing left that could be a row's value.

    Only the first line is kept (PostgreSQL's DETAIL, HINT and CONTEXT, SQLite's
    continuation lines go); every quoted string becomes `"…"` or `'…'`, and every number or
    hex string `#`. What is left is the message's template with the words around the values
    (`invalid input syntax for type integer: "…"`).
    """
    lines = message.strip().splitlines()
    first = lines[0] if lines else ""
    first = _QUOTED.sub(lambda m: m.group(0)[0] + "…" + m.group(0)[0], first)
    first = _HEX.sub("#", first)
    return _NUMBER.sub("#", first).strip()


def script_error(
    statement: int,
    text: str,
    code: str | None,
    message: str | None,
    *,
    names: Iterable[str] = (),
) -> str:
    """How a failed statement of a change script is recorded (report, packet, console).

    `code` is the SQLSTATE or SQLite result code name; `message` the database's message, or
    None when it was written by code in the database (a PL/pgSQL RAISE, whose text is anything
    the code chose: it is withheld); `names` the objects the database says the error is about
    (its table, column, constraint), which are names, never values.
    """
    shown = WITHHELD if message is None else without_values(message) or "no message"
    about = ", ".join(n for n in names if n)
    return (
        f"statement {statement} `{text}`"
        + (f" ({code})" if code else "")
        + f" failed: {shown}"
        + (f" ({about})" if about else "")
    )
