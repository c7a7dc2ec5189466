"""Measured impact of a change, and the limits a production lane holds it to. Pure.

A linter guesses from the SQL text which lock a statement takes and whether it rewrites a
table; rollproof runs the change on a production-shaped clone, so it can measure both. The
engines measure each statement of the transaction leg's apply (`engines/*/impact.py`); this
module holds what they measured (`StatementImpact`), folds it into the change's impact
(`summarize`), turns that into report.json's `impact` section (`impact_json`), reads the
figures a limit is checked against back out of that JSON (`figures`, which the validator
re-runs), and judges them against the limits (`over_limits`).

Measurements are facts about one run, not verdicts: they vary from run to run, they are not
part of any fingerprint, and RERUN.sh does not compare them. A limit that cannot be checked
because nothing was measured is over (unknown is never within a limit); a limit on a figure an
engine does not have (WAL bytes on SQLite) does not apply to that engine, and says so.

Lock modes are PostgreSQL's, ordered by their lock-mode numbers (lockdefs.h), which is the
order of the conflict table in the PostgreSQL documentation ("Table-Level Lock Modes"): the
strongest mode a transaction holds on a relation is the one with the highest number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

LOCK_MODES: tuple[str, ...] = (
    "ACCESS SHARE",
    "ROW SHARE",
    "ROW EXCLUSIVE",
    "SHARE UPDATE EXCLUSIVE",
    "SHARE",
    "SHARE ROW EXCLUSIVE",
    "EXCLUSIVE",
    "ACCESS EXCLUSIVE",
)
"""Weakest first: PostgreSQL's lock-mode numbers 1 to 8."""

PG_LOCK_NAMES: Mapping[str, str] = {
    "".join(word.title() for word in mode.split()) + "Lock": mode for mode in LOCK_MODES
}
"""pg_locks.mode (`AccessExclusiveLock`) -> the SQL name (`ACCESS EXCLUSIVE`)."""

ACCESS_EXCLUSIVE = "ACCESS EXCLUSIVE"

_CONFLICTS: Mapping[str, frozenset[str]] = {
    mode: frozenset(LOCK_MODES[i] for i in conflicts)
    for mode, conflicts in zip(
        LOCK_MODES,
        (
            (7,),  # ACCESS SHARE
            (6, 7),  # ROW SHARE
            (4, 5, 6, 7),  # ROW EXCLUSIVE
            (3, 4, 5, 6, 7),  # SHARE UPDATE EXCLUSIVE
            (2, 3, 5, 6, 7),  # SHARE
            (2, 3, 4, 5, 6, 7),  # SHARE ROW EXCLUSIVE
            (1, 2, 3, 4, 5, 6, 7),  # EXCLUSIVE
            (0, 1, 2, 3, 4, 5, 6, 7),  # ACCESS EXCLUSIVE
        ),
        strict=True,
    )
}
"""PostgreSQL's documented conflict table: the modes each mode conflicts with."""


def stronger(a: str | None, b: str) -> str:
    """The stronger of two lock modes (`a` None: `b`)."""
    if a is None:
        return b
    return a if LOCK_MODES.index(a) >= LOCK_MODES.index(b) else b


def blocks(mode: str) -> str:
    """What other sessions a mode holds up, in words (from the conflict table)."""
    conflicts = _CONFLICTS[mode]
    if "ACCESS SHARE" in conflicts:
        return "blocks reads and writes"
    if "ROW EXCLUSIVE" in conflicts:
        return "blocks writes"
    if "SHARE UPDATE EXCLUSIVE" in conflicts:
        return "blocks VACUUM, index builds and schema changes"
    if "SHARE" in conflicts:
        return "blocks index builds and exclusive schema changes"
    return "blocks only exclusive schema changes"


class Limit(StrEnum):
    """The impact limits of change.toml's and rollproof.toml's `[impact]` tables."""

    MAX_DURATION_MS = "max_duration_ms"
    MAX_ACCESS_EXCLUSIVE_MS = "max_access_exclusive_ms"
    FORBID_REWRITE_OVER_ROWS = "forbid_rewrite_over_rows"
    MAX_WAL_BYTES = "max_wal_bytes"
    MAX_WRITE_LOCK_MS = "max_write_lock_ms"


LIMIT_MAX = 2**53 - 1
ENGINE_FIGURES: Mapping[str, frozenset[Limit]] = {
    "postgresql": frozenset(
        {
            Limit.MAX_DURATION_MS,
            Limit.MAX_ACCESS_EXCLUSIVE_MS,
            Limit.FORBID_REWRITE_OVER_ROWS,
            Limit.MAX_WAL_BYTES,
        }
    ),
    "sqlite": frozenset(
        {Limit.MAX_DURATION_MS, Limit.FORBID_REWRITE_OVER_ROWS, Limit.MAX_WRITE_LOCK_MS}
    ),
}
"""The figures each engine measures; a limit on any other does not apply to that engine."""


class LimitError(ValueError):
    """A malformed `[impact]` table; `key` names the offending key (`impact.max_wal_bytes`)."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")


def parse_limits(table: Any, where: str = "impact") -> dict[Limit, int]:
    """An `[impact]` table's limits: known keys only, each a non-negative integer."""
    if not isinstance(table, Mapping):
        raise LimitError(where, "must be a table")
    out: dict[Limit, int] = {}
    known = [k.value for k in Limit]
    for key, value in table.items():
        if key not in known:
            raise LimitError(f"{where}.{key}", f"unknown key; limits are: {', '.join(known)}")
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= LIMIT_MAX:
            raise LimitError(f"{where}.{key}", "must be a non-negative integer")
        out[Limit(key)] = value
    return dict(sorted(out.items()))


def limits_json(limits: Mapping[Limit, int]) -> dict[str, int]:
    return {str(k): limits[k] for k in sorted(limits)}


def strictest(*sets: Mapping[Limit, int]) -> dict[Limit, int]:
    """Every limit any set names, at its lowest value: limits only ever tighten."""
    out: dict[Limit, int] = {}
    for limits in sets:
        for key, value in limits.items():
            out[key] = min(value, out.get(key, value))
    return dict(sorted(out.items()))


# --- what an engine measures ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rewrite:
    """A relation whose storage the statement replaced (PostgreSQL: a new relfilenode; SQLite:
    a new root page), and its size afterwards when known."""

    relation: str
    kind: str
    bytes: int | None = None


@dataclass(frozen=True, slots=True)
class StatementImpact:
    """One statement of the apply, measured inside the transaction leg's open transaction."""

    index: int
    statement: str
    duration_us: int
    locks: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    """relation -> (kind, mode): relations that existed before the change on which this
    statement took a lock stronger than any the transaction held before it (PostgreSQL)."""
    rewritten: tuple[Rewrite, ...] = ()
    indexes_built: tuple[Rewrite, ...] = ()
    wal_bytes: int | None = None
    pages_written: int | None = None
    rows_changed: int | None = None


@dataclass(frozen=True, slots=True)
class Impact:
    """The change's measured impact (or why there is none)."""

    engine: str
    measured: bool
    reason: str | None = None
    statements: tuple[StatementImpact, ...] = ()
    settings: Mapping[str, str] = field(default_factory=dict)
    """Server settings the figures depend on (PostgreSQL: wal_level)."""


def not_measured(engine: str, reason: str) -> Impact:
    return Impact(engine, measured=False, reason=reason)


def _rounded_ms(us: int) -> int:
    """Microseconds as whole milliseconds, rounded up: `ms > limit` iff `us > 1000 * limit`."""
    return math.ceil(us / 1000)


def _held(statements: Sequence[StatementImpact], index: int) -> int:
    """How long a lock taken by statement `index` is held: until the transaction commits,
    right after the last statement (rollproof's own measuring is not counted)."""
    return sum(s.duration_us for s in statements if s.index >= index)


def impact_json(
    impact: Impact,
    *,
    rows_before: Mapping[str, int] | None = None,
    change_limits: Mapping[Limit, int] | None = None,
    policy_limits: Mapping[Limit, int] | None = None,
) -> dict[str, Any]:
    """report.json's `impact` section. `rows_before` (the snapshot's row count per table)
    tells a limit on rewrites how large each rewritten table was."""
    rows = rows_before or {}
    doc: dict[str, Any] = {
        "engine": impact.engine,
        "measured": impact.measured,
        "reason": impact.reason,
        "leg": "transaction",
        "settings": dict(sorted(impact.settings.items())),
        "statements": [],
        "locks": [],
        "rewrites": [],
        "indexes_built": [],
        "duration_us": None,
        "wal_bytes": None,
        "pages_written": None,
        "write_lock_us": None,
    }
    if impact.measured:
        statements = impact.statements
        strongest: dict[str, tuple[str, str, int]] = {}
        for s in statements:
            for relation, (kind, mode) in s.locks.items():
                now = strongest.get(relation)
                if now is None or stronger(now[1], mode) != now[1]:
                    strongest[relation] = (kind, mode, s.index)
        doc["statements"] = [
            {
                "index": s.index,
                "statement": s.statement,
                "duration_us": s.duration_us,
                "locks": [
                    {"relation": r, "kind": k, "mode": m} for r, (k, m) in sorted(s.locks.items())
                ],
                "rewritten": [_rewrite_json(w) for w in s.rewritten],
                "indexes_built": [_rewrite_json(w) for w in s.indexes_built],
                "wal_bytes": s.wal_bytes,
                "pages_written": s.pages_written,
                "rows_changed": s.rows_changed,
            }
            for s in statements
        ]
        doc["locks"] = [
            {
                "relation": relation,
                "kind": kind,
                "mode": mode,
                "statement": index,
                "held_us": _held(statements, index),
            }
            for relation, (kind, mode, index) in sorted(strongest.items())
        ]
        doc["rewrites"] = [
            {**_rewrite_json(w), "statement": s.index, "rows_before": rows.get(w.relation)}
            for s in statements
            for w in s.rewritten
        ]
        doc["indexes_built"] = [
            {**_rewrite_json(w), "statement": s.index, "duration_us": s.duration_us}
            for s in statements
            for w in s.indexes_built
        ]
        doc["duration_us"] = sum(s.duration_us for s in statements)
        if impact.engine == "postgresql":
            doc["wal_bytes"] = sum(s.wal_bytes or 0 for s in statements)
        else:
            doc["pages_written"] = sum(s.pages_written or 0 for s in statements)
            first = next((s.index for s in statements if s.pages_written), None)
            doc["write_lock_us"] = 0 if first is None else _held(statements, first)
    limits = strictest(change_limits or {}, policy_limits or {})
    doc["limits"] = {
        "change": limits_json(change_limits or {}),
        "policy": limits_json(policy_limits or {}),
    }
    doc["over_limits"] = over_limits(figures(doc), limits)
    return doc


def _rewrite_json(w: Rewrite) -> dict[str, Any]:
    return {"relation": w.relation, "kind": w.kind, "bytes": w.bytes}


# --- figures and limits -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Figure:
    """The measured value a limit is checked against, in the limit's unit, and what it is."""

    value: int | None
    """None: not known (a rewritten table whose size before is not recorded)."""
    text: str


def figures(doc: Mapping[str, Any]) -> dict[Limit, Figure]:
    """The figure for each limit the engine measures, read from report.json's `impact`.

    Empty when nothing was measured. The validator re-runs this on the recorded section, so
    the `over_limits` a report states are the ones its own figures and limits give."""
    if not doc["measured"]:
        return {}
    engine = doc["engine"]
    out: dict[Limit, Figure] = {}
    total = int(doc["duration_us"] or 0)
    out[Limit.MAX_DURATION_MS] = Figure(
        _rounded_ms(total), f"the apply's statements ran {_ms(total)}"
    )
    if engine == "postgresql":
        held = [lk for lk in doc["locks"] if lk["mode"] == ACCESS_EXCLUSIVE]
        longest = max(held, key=lambda lk: int(lk["held_us"]), default=None)
        out[Limit.MAX_ACCESS_EXCLUSIVE_MS] = (
            Figure(0, "no ACCESS EXCLUSIVE lock on an existing relation")
            if longest is None
            else Figure(
                _rounded_ms(int(longest["held_us"])),
                f"ACCESS EXCLUSIVE on {longest['relation']} held {_ms(int(longest['held_us']))} "
                f"(from statement {longest['statement']} to commit)",
            )
        )
        wal = int(doc["wal_bytes"] or 0)
        out[Limit.MAX_WAL_BYTES] = Figure(wal, f"{wal:,} bytes of WAL written")
    else:
        lock = int(doc["write_lock_us"] or 0)
        out[Limit.MAX_WRITE_LOCK_MS] = Figure(
            _rounded_ms(lock), f"the database write lock held {_ms(lock)}"
        )
    tables = [w for w in doc["rewrites"] if w["kind"] == "table"]
    unknown = [w for w in tables if w["rows_before"] is None]
    if unknown:
        out[Limit.FORBID_REWRITE_OVER_ROWS] = Figure(
            None, f"{unknown[0]['relation']} rewritten, its row count before is not recorded"
        )
    else:
        biggest = max(tables, key=lambda w: int(w["rows_before"]), default=None)
        out[Limit.FORBID_REWRITE_OVER_ROWS] = (
            Figure(0, "no table rewritten")
            if biggest is None
            else Figure(
                int(biggest["rows_before"]),
                f"{biggest['relation']} rewritten ({int(biggest['rows_before']):,} rows) "
                f"by statement {biggest['statement']}",
            )
        )
    return out


def over_limits(measured: Mapping[Limit, Figure], limits: Mapping[Limit, int]) -> list[str]:
    """One line per limit the figures exceed, with the number and the limit; a limit with
    nothing measured to check it against is over (unknown is never within a limit)."""
    out: list[str] = []
    for key in sorted(limits):
        limit = limits[key]
        if not measured:
            out.append(f"{key} = {limit:,}: the impact was not measured, so it cannot be checked")
            continue
        figure = measured.get(key)
        if figure is None:
            continue  # the engine has no such figure: the limit does not apply to it
        if figure.value is None or figure.value > limit:
            out.append(f"{key} = {limit:,}: {figure.text}")
    return out


def _ms(us: int) -> str:
    return f"{us / 1000:,.1f} ms"


def duration_text(us: int | None) -> str:
    """A recorded duration for a person (report.md)."""
    return "-" if us is None else _ms(us)


def impact_from_json(doc: Mapping[str, Any]) -> Impact:
    """The per-statement measurements a recorded `impact` section holds, read back: with
    `impact_json` over them, every aggregate and every over-limit line can be recomputed."""
    statements = tuple(
        StatementImpact(
            index=int(s["index"]),
            statement=str(s["statement"]),
            duration_us=int(s["duration_us"]),
            locks={lk["relation"]: (lk["kind"], lk["mode"]) for lk in s["locks"]},
            rewritten=tuple(Rewrite(w["relation"], w["kind"], w["bytes"]) for w in s["rewritten"]),
            indexes_built=tuple(
                Rewrite(w["relation"], w["kind"], w["bytes"]) for w in s["indexes_built"]
            ),
            wal_bytes=s["wal_bytes"],
            pages_written=s["pages_written"],
            rows_changed=s["rows_changed"],
        )
        for s in doc["statements"]
    )
    return Impact(
        str(doc["engine"]),
        bool(doc["measured"]),
        doc["reason"],
        statements,
        dict(doc["settings"]),
    )


def recomputed_impact(doc: Mapping[str, Any], rows_before: Mapping[str, int]) -> dict[str, Any]:
    """What `impact_json` gives for a recorded section's own statements, limits and the
    snapshot's row counts: a consistent section is equal to it."""
    return impact_json(
        impact_from_json(doc),
        rows_before=rows_before,
        change_limits=parse_limits(doc["limits"]["change"], "limits.change"),
        policy_limits=parse_limits(doc["limits"]["policy"], "limits.policy"),
    )


# --- the ledger's copy: what a production lane is judged on ----------------------------------

MAX_RECORD_TEXT = 1000


def impact_record(doc: Mapping[str, Any]) -> dict[str, Any]:
    """What a `rehearsal.recorded` event keeps of a validated report's `impact` section: whether
    it was measured, each figure a limit is checked against, and the change's own limits. A
    production lane is judged on these and on the limits of the policy in force then."""
    return {
        "measured": bool(doc["measured"]),
        "reason": None if doc["reason"] is None else str(doc["reason"])[:MAX_RECORD_TEXT],
        "figures": {
            str(k): {"value": f.value, "text": f.text[:MAX_RECORD_TEXT]}
            for k, f in sorted(figures(doc).items())
        },
        "change_limits": dict(doc["limits"]["change"]),
    }


def is_impact_record(v: Any) -> bool:
    """The exact shape `impact_record` writes (the ledger's body check)."""
    if not isinstance(v, dict) or set(v) != {"measured", "reason", "figures", "change_limits"}:
        return False
    if not isinstance(v["measured"], bool):
        return False
    if v["reason"] is not None and not _is_line(v["reason"]):
        return False
    try:
        parse_limits(v["change_limits"])
    except LimitError:
        return False
    shown = v["figures"]
    if not isinstance(shown, dict) or not set(shown) <= {k.value for k in Limit}:
        return False
    if not v["measured"] and shown:
        return False
    return all(
        isinstance(f, dict)
        and set(f) == {"value", "text"}
        and (f["value"] is None or (type(f["value"]) is int and 0 <= f["value"] <= LIMIT_MAX))
        and _is_line(f["text"])
        for f in shown.values()
    )


def _is_line(v: Any) -> bool:
    return (
        isinstance(v, str)
        and 0 < len(v) <= MAX_RECORD_TEXT
        and all(c.isprintable() for c in v)
        and not v.isspace()
    )


def record_over_limits(record: Mapping[str, Any] | None, limits: Mapping[Limit, int]) -> list[str]:
    """`over_limits` for a ledger record (`impact_record`), against `limits` (the policy in
    force's) and the change's own recorded limits. No record (a rehearsal recorded before
    impact was measured) is a measurement that is missing."""
    if record is None:
        return over_limits({}, limits)
    effective = strictest(parse_limits(record["change_limits"]), limits)
    measured = {Limit(k): Figure(f["value"], str(f["text"])) for k, f in record["figures"].items()}
    if not record["measured"] and effective:
        why = record["reason"] or "not measured"
        return [f"{k} = {effective[k]:,}: the impact was not measured ({why})" for k in effective]
    return over_limits(measured, effective)
