"""Content fingerprints of a database, and the comparison of two of them.

An engine streams a database's components (schema objects, tables, sequences, and the database
header's settable fields) and this module turns them into a `Fingerprint`: a digest per
component and one whole-database digest over the sorted component digests. Everything here is
pure: no database access, no clock.

Invariants:
* The whole digest covers the structural schema, every table's content digest, every
  sequence value and every header field recorded (an engine records a header field only when it
  differs from its value in a new database, so a fingerprint without a header digests as it did
  before the component existed); it does not cover the raw DDL text (reported separately),
  so a table rebuilt back to the same definition, re-quoted or re-indented, fingerprints the
  same.
* Comparison is per component, so a difference names what did not come back. A sequence that
  only advanced is *tolerated* (reported by name) unless strict_sequences is set: counters move
  outside transactions and a revert cannot honestly wind them back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rollproof.core.canonical import digest_json
from rollproof.core.explain import RowSample, attribute_text

HeaderValue = int | str

ALGORITHM = "rollproof-fingerprint"
VERSION = 4
"""4: SQLite text in a UTF-16 database is read as stored, and schema SQL is normalised only
where SQLite itself ignores the difference (docs/fingerprint.md); 3: tables without a total key
are digested order-independently from per-row digests, and PostgreSQL rows are read in binary;
2 hashed key-less tables as sorted rows; 1 had SHA-256 table digests (2 and later use BLAKE3,
`blake3:`)."""


@dataclass(frozen=True, slots=True)
class TableDigest:
    name: str
    digest: str
    rows: int
    order: str  # "primary-key" or "row-digests"


@dataclass(frozen=True, slots=True)
class Fingerprint:
    engine: str
    schema_structural: str
    schema_ddl_text: str
    schema_objects: Mapping[str, str]
    tables: Mapping[str, TableDigest]
    sequences: Mapping[str, int]
    excluded: tuple[str, ...]
    header: Mapping[str, HeaderValue] = field(default_factory=dict)
    """Database-level settings a program can set and the database keeps (SQLite: user_version,
    application_id, auto_vacuum, WAL journaling), each only when not at its new-database value."""
    digest: str = field(default="")

    def __post_init__(self) -> None:
        # The structural digest must be the digest of the listed objects, or a tampered
        # object digest in a stored fingerprint could hide a schema change.
        if self.schema_structural != digest_json(dict(self.schema_objects)):
            raise ValueError("schema digest does not match its objects")
        for key, value in self.header.items():
            if not isinstance(key, str) or isinstance(value, bool):
                raise ValueError(f"header field {key!r}: not a string key with a value")
            if not isinstance(value, int | str):
                raise ValueError(f"header field {key!r}: value is neither integer nor text")
            if HEADER_DEFAULTS.get(self.engine, {}).get(key) == value:
                # One state, one form: a field at its default is left out, never recorded.
                raise ValueError(f"header field {key!r}: recorded at its default value")
        computed = whole_digest(self)
        if self.digest and self.digest != computed:
            raise ValueError("fingerprint digest does not match its components")
        object.__setattr__(self, "digest", computed)

    def to_json(self) -> dict[str, Any]:
        return {
            "algorithm": ALGORITHM,
            "version": VERSION,
            "engine": self.engine,
            "digest": self.digest,
            "schema": {
                "structural": self.schema_structural,
                "ddl_text": self.schema_ddl_text,
                "objects": dict(sorted(self.schema_objects.items())),
            },
            "tables": {
                name: {"digest": t.digest, "rows": t.rows, "order": t.order}
                for name, t in sorted(self.tables.items())
            },
            "sequences": dict(sorted(self.sequences.items())),
            "excluded": sorted(self.excluded),
            **({"header": dict(sorted(self.header.items()))} if self.header else {}),
        }


def whole_digest(fp: Fingerprint) -> str:
    """Digest over the sorted component digests (canonical JSON sorts the keys)."""
    components: dict[str, Any] = {
        "algorithm": ALGORITHM,
        "version": VERSION,
        "schema": fp.schema_structural,
        # Row counts and the order mode are bound too: impact limits read the row counts, and
        # a count edited under an unchanged digest would pass every comparison and rerun.
        "tables": {
            name: {"digest": t.digest, "rows": t.rows, "order": t.order}
            for name, t in fp.tables.items()
        },
        "sequences": dict(fp.sequences),
    }
    if fp.header:  # absent when empty: such a fingerprint digests as before headers existed
        components["header"] = dict(fp.header)
    return digest_json(components)


_CONTENT_DIGEST = re.compile(r"blake3:[0-9a-f]{64}")
TABLE_ORDERS = ("primary-key", "row-digests")
"""How a table's rows are digested (docs/fingerprint.md); version 2's "sorted-rows" is retired."""


def fingerprint_from_json(data: Mapping[str, Any]) -> Fingerprint:
    """Rebuild a fingerprint from its JSON form, rejecting unknown versions and bad digests."""
    if data.get("algorithm") != ALGORITHM or data.get("version") != VERSION:
        raise ValueError(
            f"unsupported fingerprint algorithm {data.get('algorithm')!r} "
            f"version {data.get('version')!r} (this rollproof reads {ALGORITHM!r} version "
            f"{VERSION}; a fingerprint of another version is never compared: make it again)"
        )
    schema = data["schema"]
    for name, t in data["tables"].items():
        if not isinstance(t.get("digest"), str) or not _CONTENT_DIGEST.fullmatch(t["digest"]):
            raise ValueError(f"table {name}: digest is not of the form blake3:<64 hex>")
        if t.get("order") not in TABLE_ORDERS:
            raise ValueError(f"table {name}: order {t.get('order')!r} is not one of {TABLE_ORDERS}")
        if type(t.get("rows")) is not int or t["rows"] < 0:
            raise ValueError(f"table {name}: rows is not a count")
    tables = {
        name: TableDigest(name=name, digest=t["digest"], rows=int(t["rows"]), order=t["order"])
        for name, t in data["tables"].items()
    }
    return Fingerprint(
        engine=data["engine"],
        schema_structural=schema["structural"],
        schema_ddl_text=schema["ddl_text"],
        schema_objects=dict(schema["objects"]),
        tables=tables,
        sequences={k: int(v) for k, v in data["sequences"].items()},
        excluded=tuple(data["excluded"]),
        header=dict(data.get("header", {})),
        digest=data["digest"],
    )


@dataclass(frozen=True, slots=True)
class Reuse:
    """Table digests an after-fingerprint may take from an earlier one instead of re-reading.

    Soundness (the SQLite engine's argument; an engine may ignore a Reuse and read everything):
    `written` holds every object the engine saw a change script write, create, alter or drop.
    SQLite's authorizer is asked at prepare time about every table a statement
    can write, including writes made by triggers and by foreign-key actions (an
    over-approximation: a trigger that never fires is still counted), and a script that turns
    on `writable_schema` (the one way to change a table behind the authorizer's back) makes
    the engine pass no Reuse at all. A table is reused only when it is not in `written` and its
    structural schema description is unchanged, so its rows cannot differ from `base`'s. The
    schema and the sequences are always read afresh.
    """

    base: Fingerprint
    written: frozenset[str]


@dataclass(frozen=True, slots=True)
class Difference:
    """One component that differs between two fingerprints."""

    component: (
        str  # "schema:table:orders", "table:orders", "sequence:orders", "header:user_version"
    )
    kind: str  # "changed", "added", "removed", "advanced", "decreased"
    summary: str
    detail: Mapping[str, Any] = field(default_factory=dict)
    rows: RowSample | None = field(default=None, compare=False)
    """Example rows an engine found, before `ShowPolicy` decides what may be shown; never
    written as such (`to_json` leaves it out)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "kind": self.kind,
            "summary": self.summary,
            "detail": dict(self.detail),
        }


HEADER_DEFAULTS: Mapping[str, Mapping[str, HeaderValue]] = {
    "sqlite": {
        "user_version": 0,
        "application_id": 0,
        "auto_vacuum": "none",
        "journal_mode": "rollback-journal",
    }
}
"""Each engine's header fields at their new-database values: a field left out of a
fingerprint's header has this value."""


def shown_header(engine: str, name: str, value: HeaderValue | None) -> str:
    """A header field's value as a person reads it (a field left out has its default)."""
    if value is None:
        value = HEADER_DEFAULTS.get(engine, {}).get(name, "unset")
    return str(value)


@dataclass(frozen=True, slots=True)
class Comparison:
    differences: tuple[Difference, ...]
    tolerated: tuple[Difference, ...]
    ddl_text_only: bool  # structural schema equal but the DDL text differs (formatting)

    @property
    def equal(self) -> bool:
        return not self.differences


def compare(before: Fingerprint, after: Fingerprint, *, strict_sequences: bool) -> Comparison:
    """Compare two fingerprints component by component."""
    diffs: list[Difference] = []
    tolerated: list[Difference] = []

    for key in sorted(set(before.schema_objects) | set(after.schema_objects)):
        b, a = before.schema_objects.get(key), after.schema_objects.get(key)
        if b == a:
            continue
        kind = "added" if b is None else "removed" if a is None else "changed"
        diffs.append(Difference(f"schema:{key}", kind, f"schema object {key} {kind}"))
    if before.schema_structural != after.schema_structural and not any(
        d.component.startswith("schema:") for d in diffs
    ):
        diffs.append(Difference("schema", "changed", "schema changed"))

    for name in sorted(set(before.header) | set(after.header)):
        hb, ha = before.header.get(name), after.header.get(name)
        if hb == ha:
            continue
        attribute = {
            "object": "database header",
            "attribute": name,
            "old": shown_header(before.engine, name, hb),
            "new": shown_header(after.engine, name, ha),
        }
        diffs.append(
            Difference(
                f"header:{name}", "changed", attribute_text(attribute), {"attributes": [attribute]}
            )
        )

    for name in sorted(set(before.tables) | set(after.tables)):
        tb, ta = before.tables.get(name), after.tables.get(name)
        if tb is not None and ta is not None and tb.digest == ta.digest:
            continue
        if tb is None:
            assert ta is not None
            diffs.append(
                Difference(f"table:{name}", "added", f"table {name} added ({ta.rows} rows)")
            )
        elif ta is None:
            diffs.append(
                Difference(f"table:{name}", "removed", f"table {name} removed ({tb.rows} rows)")
            )
        else:
            diffs.append(
                Difference(
                    f"table:{name}",
                    "changed",
                    f"table {name}: content differs ({tb.rows} rows before, {ta.rows} after)",
                    {"rows_before": tb.rows, "rows_after": ta.rows},
                )
            )

    for name in sorted(set(before.sequences) | set(after.sequences)):
        sb, sa = before.sequences.get(name), after.sequences.get(name)
        if sb == sa:
            continue
        detail = {"before": sb, "after": sa}
        if sa is None:
            diffs.append(
                Difference(f"sequence:{name}", "removed", f"sequence {name} removed", detail)
            )
            continue
        if (sb or 0) < sa:
            d = Difference(
                f"sequence:{name}",
                "advanced",
                f"sequence {name} advanced from {sb or 0} to {sa}",
                detail,
            )
            (diffs if strict_sequences else tolerated).append(d)
        else:
            diffs.append(
                Difference(
                    f"sequence:{name}",
                    "decreased",
                    f"sequence {name} went back from {sb} to {sa}",
                    detail,
                )
            )

    return Comparison(
        differences=tuple(diffs),
        tolerated=tuple(tolerated),
        ddl_text_only=(
            before.schema_ddl_text != after.schema_ddl_text
            and before.schema_structural == after.schema_structural
        ),
    )
