"""Scope evidence: is the change fully declared, what changed, and were forbidden surfaces spared.

Pure functions over a change, fingerprints and recorded observations; no IO. Three kinds of
evidence meet here:

* **scoping** (before any leg runs): the static scope of apply, revert and verify against the
  declared surfaces and what the source's catalog says the database makes for them
  (`core.surface.Implicit`: automatic indexes, owned sequences and sequences defaults call,
  foreign-key parents, partitions the change creates under a declared parent), which a
  declaration covers and the report lists (`implicit`). READY only when every object touched
  is declared or covered and every statement was understood; NOT_READY lists each undeclared
  object with its statement; UNKNOWN lists each statement the parser could not read. Anything
  but READY stops the rehearsal (exit 3) unless the user passes --allow-undeclared, which the
  report records. A statement the database's own parser refuses is not a scoping question:
  `syntax_errors` lists it and the rehearsal stops with exit 1 (the change is wrong).
* **observed scope** (after the legs): the components whose digests differ between `before`
  and `after_apply`. A changed object that is not declared in `writes` fails the rehearsal even
  if run-time enforcement somehow missed the write: the bytes are the final word.
* **forbidden surfaces**: each one `untouched`, `not-requested` or `TOUCHED`, with evidence.
  Any TOUCHED fails the rehearsal.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from rollproof.core.change import Change
from rollproof.core.fingerprint import Fingerprint, compare
from rollproof.core.guard import Decision, GuardEvent, matches_any
from rollproof.core.model import Verdict, surfaces_verdict, undeclared_denial
from rollproof.core.surface import (
    EMPTY_CATALOG,
    AccessKind,
    Catalog,
    Coverage,
    Implicit,
    Risk,
    StatementScope,
    Undeclared,
    fold_name,
)
from rollproof.surfaces.static import covered, lint_destructive, static_scope, undeclared


class ScopingStatus(StrEnum):
    READY = "READY"
    NOT_READY = "NOT_READY"
    UNKNOWN = "UNKNOWN"


class ForbiddenStatus(StrEnum):
    UNTOUCHED = "untouched"
    NOT_REQUESTED = "not-requested"
    TOUCHED = "TOUCHED"


@dataclass(frozen=True, slots=True)
class Scoping:
    status: ScopingStatus
    statements: Mapping[str, tuple[StatementScope, ...]]
    undeclared: tuple[tuple[str, Undeclared], ...]
    unknown: tuple[tuple[str, StatementScope], ...]
    risks: tuple[tuple[str, Risk], ...]
    implicit: tuple[Implicit, ...] = ()
    """Objects the statements touch that their owners' declarations cover (not named)."""
    catalog_implicit: tuple[Implicit, ...] = ()
    """Everything the source's catalog and the statements say the database makes (what the
    run-time guard and the observed scope cover too)."""

    @property
    def syntax_errors(self) -> list[str]:
        """Each statement the database's own parser refuses, with its error."""
        return [
            f"{role} statement {s.index} `{s.text}`: {s.error}"
            for role, scopes in self.statements.items()
            for s in scopes
            if s.error is not None
        ]

    def problems(self) -> list[str]:
        out = [
            f"{role} statement {u.statement} `{u.text}`: {u.kind.lower()} of undeclared "
            f"{u.object} (add it to surfaces.{u.missing_from})"
            for role, u in self.undeclared
        ]
        out += [
            f"{role} statement {s.index} `{s.text}`: scope unknown: {s.unknown}"
            for role, s in self.unknown
        ]
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "status": str(self.status),
            "statements": {
                role: [
                    {
                        "index": s.index,
                        "text": s.text,
                        "unknown": s.unknown,
                        "accesses": [
                            {
                                "object": a.object,
                                "kind": str(a.kind),
                                "object_type": str(a.object_type),
                            }
                            for a in s.accesses
                        ],
                    }
                    for s in scopes
                ]
                for role, scopes in self.statements.items()
            },
            "undeclared": [
                {
                    "script": role,
                    "statement": u.statement,
                    "text": u.text,
                    "object": u.object,
                    "kind": str(u.kind),
                    "missing_from": str(u.missing_from),
                }
                for role, u in self.undeclared
            ],
            "risks": [
                {
                    "script": role,
                    "statement": r.statement,
                    "text": r.text,
                    "code": str(r.code),
                    "object": r.object,
                    "message": r.message,
                    "proven_by": r.proven_by,
                }
                for role, r in self.risks
            ],
        }


def check_scoping(
    change: Change, *, dialect: str = "sqlite", catalog: Catalog = EMPTY_CATALOG
) -> Scoping:
    """The change's static scope against its declarations and the source's `catalog`."""
    scripts = {"apply": change.apply, "revert": change.revert, "verify": change.verify}
    known = [i for items in catalog.objects.values() for i in items]
    statements: dict[str, tuple[StatementScope, ...]] = {}
    missing: list[tuple[str, Undeclared]] = []
    unknown: list[tuple[str, StatementScope]] = []
    risks: list[tuple[str, Risk]] = []
    implicit: list[Implicit] = []
    for role, script in scripts.items():
        if script is not None:
            statements[role] = static_scope(script.text, dialect=dialect)
    # What one script makes (a partition apply creates) is covered in every script (revert
    # drops it); a foreign key's read is covered only in the statement that has the key.
    derived = [i for scopes in statements.values() for s in scopes for i in s.implied]
    static_known = [i for i in [*known, *derived] if i.kind is not AccessKind.READ]
    for role, scopes in statements.items():
        missing += [
            (role, u) for u in undeclared(scopes, change.reads, change.writes, static_known)
        ]
        unknown += [(role, s) for s in scopes if s.unknown is not None]
        implicit += covered(scopes, change.reads, change.writes, static_known)
        script = scripts[role]
        if role != "verify" and script is not None:
            risks += [(role, r) for r in lint_destructive(script.text, dialect=dialect)]
    status = (
        ScopingStatus.NOT_READY
        if missing
        else ScopingStatus.UNKNOWN
        if unknown
        else ScopingStatus.READY
    )
    return Scoping(
        status,
        statements,
        tuple(missing),
        tuple(unknown),
        tuple(risks),
        tuple(dict.fromkeys(implicit)),
        tuple(dict.fromkeys([*known, *derived])),
    )


@dataclass(frozen=True, slots=True)
class Suggestion:
    """A `[surfaces]` block computed from a change's SQL and the source's catalog."""

    reads: tuple[str, ...]
    writes: tuple[str, ...]
    implicit: tuple[Implicit, ...]
    unknown: tuple[str, ...]
    """Statements whose scope could not be read: what they touch is not in the block."""

    def toml(self) -> str:
        def names(items: Iterable[str]) -> str:
            return "[" + ", ".join(json.dumps(n) for n in items) + "]"

        lines = [
            "[surfaces]",
            f"reads = {names(self.reads)}",
            f"writes = {names(self.writes)}",
        ]
        lines += [
            f"# covered implicitly: {i.object} by {i.owner} ({i.reason})" for i in self.implicit
        ]
        lines += [f"# NOT covered, scope unknown: {u}" for u in self.unknown]
        return "\n".join(lines) + "\n"


def suggest(
    change: Change, *, dialect: str = "sqlite", catalog: Catalog = EMPTY_CATALOG
) -> Suggestion:
    """The smallest `[surfaces]` that makes the change's statements READY: every object it
    writes, creates, alters or drops in `writes`, every other object it reads in `reads`,
    leaving out what a declared object covers (automatic indexes, foreign-key parents,
    partitions created under a declared parent)."""
    scripts = [s for s in (change.apply, change.revert, change.verify) if s is not None]
    scopes = [scope for script in scripts for scope in static_scope(script.text, dialect=dialect)]
    known = [
        i for items in catalog.objects.values() for i in items if i.kind is not AccessKind.READ
    ]
    derived = [i for scope in scopes for i in scope.implied if i.kind is not AccessKind.READ]
    writes: dict[str, None] = {}
    for scope in scopes:
        for a in scope.accesses:
            if a.kind is not AccessKind.READ:
                writes.setdefault(fold_name(a.object), None)
    # An object is left out of writes when what it belongs to is declared there.
    for _ in range(2):
        for name in list(writes):
            rest = Coverage((), [w for w in writes if w != name], [*known, *derived])
            if rest.explain(name, AccessKind.WRITE) is not None:
                del writes[name]
    reads: dict[str, None] = {}
    for scope in scopes:
        own = [i for i in scope.implied if i.kind is AccessKind.READ]
        coverage = Coverage((), writes, [*known, *derived, *own])
        for a in scope.accesses:
            name = fold_name(a.object)
            if (
                a.kind is AccessKind.READ
                and name not in writes
                and coverage.explain(name, AccessKind.READ) is None
            ):
                reads.setdefault(name, None)
    implicit = covered(scopes, reads, writes, known)
    unknown = tuple(
        f"statement {s.index} `{s.text}`: {s.unknown}" for s in scopes if s.unknown is not None
    )
    return Suggestion(tuple(sorted(reads)), tuple(sorted(writes)), implicit, unknown)


def changed_objects(before: Fingerprint, after: Fingerprint) -> set[str]:
    """Names of the tables and schema objects whose digests differ (sequences name their table)."""
    names: set[str] = set()
    cmp = compare(before, after, strict_sequences=True)
    for d in cmp.differences:
        kind, _, rest = d.component.partition(":")
        if kind == "schema" and rest:
            names.add(fold_name(rest.split(":", 1)[1]))
        elif kind in ("table", "sequence"):
            names.add(fold_name(rest))
    return names


@dataclass(frozen=True, slots=True)
class ForbiddenSurface:
    kind: str  # "object", "file", "env", "production-source"
    name: str
    status: ForbiddenStatus
    evidence: str

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "status": str(self.status),
            "evidence": self.evidence,
        }


def object_statuses(
    patterns: Sequence[str],
    before: Fingerprint,
    changed: set[str],
    scoping: Scoping,
    events: Sequence[GuardEvent],
) -> list[ForbiddenSurface]:
    existing = {n.lower() for n in before.tables} | {
        k.split(":", 1)[1].lower() for k in before.schema_objects
    }
    requested = {
        a.object for scopes in scoping.statements.values() for s in scopes for a in s.accesses
    }
    out = []
    for pattern in patterns:
        hits = sorted(n for n in existing | changed if matches_any(n, [pattern]))
        touched = sorted(n for n in changed if matches_any(n, [pattern]))
        asked = sorted(n for n in requested if matches_any(n, [pattern]))
        denied = [e for e in events if matches_any(e.object, [pattern])]
        if touched:
            out.append(
                ForbiddenSurface(
                    "object",
                    pattern,
                    ForbiddenStatus.TOUCHED,
                    "content or definition changed: " + ", ".join(touched),
                )
            )
        elif asked or denied:
            where = (
                "; ".join(
                    f"{e.decision} at {e.script} statement {e.statement}: {e.reason}"
                    for e in denied
                )
                or "requested by the change's SQL"
            )
            out.append(
                ForbiddenSurface(
                    "object",
                    pattern,
                    ForbiddenStatus.UNTOUCHED,
                    f"{where}; digests unchanged: {', '.join(hits) or 'none'}",
                )
            )
        elif hits:
            out.append(
                ForbiddenSurface(
                    "object",
                    pattern,
                    ForbiddenStatus.NOT_REQUESTED,
                    "never requested; digests unchanged: " + ", ".join(hits),
                )
            )
        else:
            out.append(
                ForbiddenSurface(
                    "object",
                    pattern,
                    ForbiddenStatus.NOT_REQUESTED,
                    "no object matches; never requested",
                )
            )
    return out


@dataclass(frozen=True, slots=True)
class SurfaceEvidence:
    scoping: Scoping
    allow_undeclared: bool
    read_mode: str
    events: tuple[GuardEvent, ...]
    observed_changed: tuple[str, ...]
    observed_undeclared: tuple[str, ...]
    forbidden: tuple[ForbiddenSurface, ...]
    policy: Mapping[str, Any] = field(default_factory=dict)
    implicit: tuple[Implicit, ...] = ()
    """What the declarations covered implicitly, by name: touched by a statement, allowed at
    run time, or changed in the bytes (see `core.surface.Implicit`)."""

    @property
    def denied(self) -> bool:
        """An undeclared access was denied at run time: the rehearsal is held (exit 3) until
        it is declared. (A forbidden object's is a violation: FAIL, exit 1.)"""
        return any(undeclared_denial(e.decision, e.reason) for e in self.events)

    def line(self) -> str:
        """The console's surfaces line: the verdict, what stopped it, scoping and forbidden."""
        denials = sum(e.decision is Decision.DENIED for e in self.events)
        parts = [f"surfaces: {self.verdict}"]
        if denials:
            parts.append(f"{denials} access(es) denied at run time (held: declare them)")
        if self.observed_undeclared:
            parts.append(f"{len(self.observed_undeclared)} changed but not declared")
        scoping = f"static scoping {self.scoping.status}"
        if self.allow_undeclared:
            scoping += " (rehearsed with --allow-undeclared)"
        parts.append(scoping)
        if self.implicit:
            parts.append(f"{len(self.implicit)} covered implicitly")
        parts.append(self.forbidden_line())
        return "; ".join(parts)

    @property
    def verdict(self) -> Verdict:
        return surfaces_verdict(
            undeclared_changed=bool(self.observed_undeclared),
            forbidden_touched=any(f.status is ForbiddenStatus.TOUCHED for f in self.forbidden),
            denied=any(e.decision is Decision.DENIED for e in self.events),
        )

    def forbidden_line(self) -> str:
        spared = sum(f.status is not ForbiddenStatus.TOUCHED for f in self.forbidden)
        return f"Forbidden surfaces {spared}/{len(self.forbidden)} untouched/not-requested"

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": str(self.verdict),
            "scoping": self.scoping.to_json(),
            "allow_undeclared": self.allow_undeclared,
            "undeclared_reads": self.read_mode,
            "enforcement": [e.to_json() for e in self.events],
            "observed": {
                "changed": list(self.observed_changed),
                "undeclared": list(self.observed_undeclared),
            },
            "forbidden": [f.to_json() for f in self.forbidden],
            "forbidden_summary": self.forbidden_line(),
            "policy": dict(self.policy),
        } | ({"implicit": [i.to_json() for i in self.implicit]} if self.implicit else {})


def observed_undeclared(
    changed: Iterable[str], writes: Iterable[str], implicit: Iterable[Implicit] = ()
) -> list[str]:
    """The changed objects neither declared in `writes` nor covered by one that is."""
    coverage = Coverage((), writes, implicit)
    return sorted(
        n
        for n in changed
        if n not in coverage.writes and coverage.explain(n, AccessKind.WRITE) is None
    )


def observed_implicit(
    changed: Iterable[str], writes: Iterable[str], implicit: Iterable[Implicit] = ()
) -> list[Implicit]:
    """The changed objects not declared by name that a declared one covers."""
    coverage = Coverage((), writes, implicit)
    out = []
    for name in sorted(changed):
        if name in coverage.writes:
            continue
        item = coverage.explain(name, AccessKind.WRITE)
        if item is not None:
            out.append(item)
    return out
