"""Scope evidence: is the change fully declared, what changed, and were forbidden surfaces spared.

Pure functions over a change, fingerprints and recorded observations; no IO. Three kinds of
evidence meet here:

* **scoping** (before any leg runs): the static scope of apply, revert and verify against the
  declared surfaces. READY only when every object touched is declared and every statement was
  understood; NOT_READY lists each undeclared object with its statement; UNKNOWN lists each
  statement the parser could not read. Anything but READY stops the rehearsal (exit 3) unless
  the user passes --allow-undeclared, which the report records.
* **observed scope** (after the legs): the components whose digests differ between `before`
  and `after_apply`. A changed object that is not declared in `writes` fails the rehearsal even
  if run-time enforcement somehow missed the write: the bytes are the final word.
* **forbidden surfaces**: each one `untouched`, `not-requested` or `TOUCHED`, with evidence.
  Any TOUCHED fails the rehearsal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from rollproof.core.change import Change
from rollproof.core.fingerprint import Fingerprint, compare
from rollproof.core.guard import Decision, GuardEvent, matches_any
from rollproof.core.model import Verdict, surfaces_verdict
from rollproof.core.surface import Risk, StatementScope, Undeclared
from rollproof.surfaces.static import lint_destructive, static_scope, undeclared


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


def check_scoping(change: Change, *, dialect: str = "sqlite") -> Scoping:
    scripts = {"apply": change.apply, "revert": change.revert, "verify": change.verify}
    statements: dict[str, tuple[StatementScope, ...]] = {}
    missing: list[tuple[str, Undeclared]] = []
    unknown: list[tuple[str, StatementScope]] = []
    risks: list[tuple[str, Risk]] = []
    for role, script in scripts.items():
        if script is None:
            continue
        scopes = static_scope(script.text, dialect=dialect)
        statements[role] = scopes
        missing += [(role, u) for u in undeclared(scopes, change.reads, change.writes)]
        unknown += [(role, s) for s in scopes if s.unknown is not None]
        if role != "verify":
            risks += [(role, r) for r in lint_destructive(script.text, dialect=dialect)]
    status = (
        ScopingStatus.NOT_READY
        if missing
        else ScopingStatus.UNKNOWN
        if unknown
        else ScopingStatus.READY
    )
    return Scoping(status, statements, tuple(missing), tuple(unknown), tuple(risks))


def changed_objects(before: Fingerprint, after: Fingerprint) -> set[str]:
    """Names of the tables and schema objects whose digests differ (sequences name their table)."""
    names: set[str] = set()
    cmp = compare(before, after, strict_sequences=True)
    for d in cmp.differences:
        kind, _, rest = d.component.partition(":")
        if kind == "schema" and rest:
            names.add(rest.split(":", 1)[1].lower())
        elif kind in ("table", "sequence"):
            names.add(rest.lower())
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
        }


def observed_undeclared(changed: Iterable[str], writes: Iterable[str]) -> list[str]:
    declared = {w.lower().removeprefix("main.") for w in writes}
    return sorted(n for n in changed if n not in declared)
