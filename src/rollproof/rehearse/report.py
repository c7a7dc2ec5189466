"""The rehearsal report: `report.json` (schema `rollproof/report/v1`) and `report.md`.

The JSON form is what evidence is checked against; its JSON Schema ships in the package
(`schemas/report-v1.schema.json`) and every report rollproof writes conforms to it. Full
fingerprints are written beside the report as `fingerprints/<hex>.json`; the report refers to
them by digest, so a leg's verdict can be recomputed from the files alone.

A report is written as part of an evidence packet (`rollproof.rehearse.packet`): `write_report`
there writes the whole packet. Every DSN goes through `rollproof.core.redact.redact_dsn` on its way
in, and the summary line and report.md's title come from the same functions the validator uses
to check them (`rollproof.verify.recompute`).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from rollproof.core.canonical import canonical_json
from rollproof.core.fingerprint import Difference, Fingerprint
from rollproof.core.model import Verdict
from rollproof.core.redact import redact_dsn
from rollproof.core.version import __version__
from rollproof.rehearse.flow import LegResult, RehearsalResult
from rollproof.verify.recompute import markdown_title, summary_text

if TYPE_CHECKING:
    pass

SCHEMA_ID = "rollproof/report/v1"


def _iso(dt: Any) -> str:
    return str(dt.isoformat().replace("+00:00", "Z"))


def _leg_json(leg: LegResult) -> dict[str, Any]:
    return {
        "name": str(leg.name),
        "verdict": str(leg.verdict),
        "reason": leg.reason,
        "fingerprints": {str(p): fp.digest for p, fp in leg.fingerprints.items()},
        "invariants": [{"check": str(r.invariant), "holds": r.holds} for r in leg.invariants],
        "differences": [d.to_json() for d in leg.differences],
        "tolerated": [d.to_json() for d in leg.tolerated],
        "settings": dict(leg.settings),
        "statements": dict(leg.statements),
    }


def summary_line(result: RehearsalResult) -> str:
    return summary_text(
        result.change.id,
        str(result.overall),
        [(str(leg.name), str(leg.verdict)) for leg in result.legs],
        str(result.isolation.verdict),
    )


def source_json(result: RehearsalResult) -> dict[str, Any]:
    """The source as evidence: secrets removed, fingerprint added."""
    source = dict(result.source)
    source["dsn"] = redact_dsn(str(source.get("dsn", "")))
    return {**source, "fingerprint": result.source_fingerprint.digest}


def report_json(result: RehearsalResult, *, validator_sha256: str | None = None) -> dict[str, Any]:
    """report.json's content. `validator_sha256` defaults to the running validator's hash
    (`rollproof validator-hash`); a test building a golden packet passes a fixed one."""
    from rollproof.verify.pin import validator_sha256 as running_validator

    ch = result.change
    return {
        "schema": SCHEMA_ID,
        "rollproof_version": __version__,
        "change": {
            "id": ch.id,
            "content_id": ch.content_id,
            "no_mutation": ch.no_mutation,
            "strict_sequences": ch.strict_sequences,
            "surfaces": {"reads": list(ch.reads), "writes": list(ch.writes)},
            "connection": dict(sorted(ch.connection.items())),
            "scripts": {
                name: None if s is None else {"path": s.path, "sha256": s.sha256}
                for name, s in (("apply", ch.apply), ("revert", ch.revert), ("verify", ch.verify))
            },
        },
        "source": source_json(result),
        "isolation": result.isolation.to_json(),
        "legs": [_leg_json(leg) for leg in result.legs],
        "overall": str(result.overall),
        "summary": summary_line(result),
        "excluded": sorted(result.source_fingerprint.excluded),
        "started_at": _iso(result.started_at),
        "finished_at": _iso(result.finished_at),
        "surfaces": result.surfaces.to_json(),
        "validator_sha256": validator_sha256 or running_validator(),
    }


def fingerprint_files(result: RehearsalResult) -> dict[str, bytes]:
    """`fingerprints/<hex>.json` for every distinct fingerprint the report refers to."""
    fps: dict[str, Fingerprint] = {result.source_fingerprint.digest: result.source_fingerprint}
    for leg in result.legs:
        for fp in leg.fingerprints.values():
            fps[fp.digest] = fp
    return {
        f"fingerprints/{digest.removeprefix('sha256:')}.json": canonical_json(fp.to_json())
        for digest, fp in sorted(fps.items())
    }


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _explain(d: Difference) -> str:
    return f"- {_md_escape(d.summary)}"


def report_markdown(result: RehearsalResult) -> str:
    ch = result.change
    lines = [
        markdown_title(ch.id, str(result.overall)),
        "",
        f"- change content id: `{ch.content_id}`",
        f"- source: `{redact_dsn(str(result.source.get('dsn', '')))}`",
        f"- source fingerprint: `{result.source_fingerprint.digest}`",
        f"- isolation: **{result.isolation.verdict}**",
        f"- rehearsed {_iso(result.started_at)} to {_iso(result.finished_at)}",
        "",
        "## Legs",
        "",
        "| leg | verdict | reason |",
        "|---|---|---|",
    ]
    for leg in result.legs:
        lines.append(f"| {leg.name} | {leg.verdict} | {_md_escape(leg.reason or '')} |")
    for leg in result.legs:
        lines += ["", f"### {leg.name}: {leg.verdict}", ""]
        for point, fp in leg.fingerprints.items():
            lines.append(f"- {point}: `{fp.digest}`")
        for r in leg.invariants:
            lines.append(f"- invariant `{r.invariant}`: {'holds' if r.holds else 'DOES NOT HOLD'}")
        if leg.settings:
            lines.append(
                "- connection settings: " + ", ".join(f"{k}={v}" for k, v in leg.settings.items())
            )
        if leg.differences:
            lines += ["", "What did not come back:", ""] + [_explain(d) for d in leg.differences]
        if leg.tolerated:
            lines += [
                "",
                "Tolerated (sequence counters advance outside transactions; "
                "set strict_sequences = true to count them):",
                "",
            ]
            lines += [_explain(d) for d in leg.tolerated]
    lines += ["", "## Surfaces", ""]
    sf = result.surfaces
    lines.append(f"- verdict: **{sf.verdict}**; scoping {sf.scoping.status}")
    lines.append(f"- {sf.forbidden_line()}")
    if sf.observed_undeclared:
        lines.append("- changed but not declared: " + ", ".join(sf.observed_undeclared))
    for e in sf.events:
        lines.append(
            f"- {e.decision}: {e.kind} {e.object} at {e.script} statement {e.statement}: "
            f"{_md_escape(e.reason)}"
        )
    for f in sf.forbidden:
        lines.append(f"- forbidden {f.kind} {f.name}: {f.status} ({_md_escape(f.evidence)})")
    lines += ["", "## Isolation proof", ""]
    for c in result.isolation.checks:
        lines.append(f"- {'PASS' if c.holds else 'FAIL'} {c.name}: {_md_escape(c.evidence)}")
    if result.source_fingerprint.excluded:
        lines += [
            "",
            "Excluded from fingerprints (statistics, not content): "
            + ", ".join(result.source_fingerprint.excluded),
        ]
    if ch.no_mutation:
        lines += [
            "",
            "This change is declared `no_mutation = true`: its apply is expected to "
            "change nothing, and the legs check that it did not.",
        ]
    lines += ["", "## What this means", "", plain_words(result), ""]
    return "\n".join(lines)


def plain_words(result: RehearsalResult) -> str:
    """A paragraph a person can act on."""
    if result.isolation.verdict != "PROVEN_ISOLATED_NOT_PRODUCTION":
        return (
            "The clone's isolation from the source was not proven, so nothing here counts "
            "as evidence: " + "; ".join(result.isolation.failed) + "."
        )
    failed = [leg for leg in result.legs if leg.verdict is Verdict.FAIL]
    if not failed:
        if result.overall is Verdict.PASS:
            na = [leg for leg in result.legs if leg.verdict is Verdict.NOT_APPLICABLE]
            extra = "".join(f" The {leg.name} leg was not applicable: {leg.reason}." for leg in na)
            return (
                "Every rollback path rehearsed brought the database back to exactly its "
                "prior content." + extra
            )
        return "No rollback path was proven, so the result is UNKNOWN, which is not a pass."
    parts = []
    for leg in failed:
        if leg.differences:
            what = "; ".join(d.summary for d in leg.differences)
            parts.append(f"The {leg.name} leg failed: {what}.")
        else:
            parts.append(f"The {leg.name} leg failed: {leg.reason}.")
    passed = [str(leg.name) for leg in result.legs if leg.verdict is Verdict.PASS]
    if any(leg.name == "revert" for leg in failed) and any(
        d.detail.get("values_now_null")
        or d.detail.get("values_lost")
        or d.detail.get("rows_missing")
        for leg in failed
        for d in leg.differences
    ):
        parts.append(
            "Running this change in production and then its revert script would lose "
            "that data for good; only a restore from a snapshot would bring it back."
        )
    if passed:
        parts.append("Legs that passed: " + ", ".join(passed) + ".")
    return " ".join(parts)


@cache
def report_schema() -> dict[str, Any]:
    text = resources.files("rollproof").joinpath("schemas/report-v1.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def report_bytes(report: dict[str, Any]) -> bytes:
    """report.json as written: sorted keys, two-space indent, UTF-8, one trailing newline.
    NaN and Infinity are refused here rather than written (the validator would reject them)."""
    body = json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
    return (body + "\n").encode("utf-8")
