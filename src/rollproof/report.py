"""The rehearsal report: `report.json` (schema `rollproof/report/v1`) and `report.md`.

The JSON form is what evidence is checked against; its JSON Schema ships in the package
(`schemas/report-v1.schema.json`) and every report rollproof writes conforms to it. Full
fingerprints are written beside the report as `fingerprints/<hex>.json`; the report refers to
them by digest, so a leg's verdict can be recomputed from the files alone.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from rollproof import __version__
from rollproof.canonical import canonical_json
from rollproof.fingerprint import Difference, Fingerprint
from rollproof.model import Verdict
from rollproof.packet.write import write_tree_atomically
from rollproof.rehearsal import LegResult, RehearsalResult

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
    legs = ", ".join(f"{leg.name} {leg.verdict}" for leg in result.legs)
    return f"{result.change.id}: {result.overall} ({legs}); isolation {result.isolation.verdict}"


def report_json(result: RehearsalResult) -> dict[str, Any]:
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
        "source": {**dict(result.source), "fingerprint": result.source_fingerprint.digest},
        "isolation": result.isolation.to_json(),
        "legs": [_leg_json(leg) for leg in result.legs],
        "overall": str(result.overall),
        "summary": summary_line(result),
        "excluded": sorted(result.source_fingerprint.excluded),
        "started_at": _iso(result.started_at),
        "finished_at": _iso(result.finished_at),
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
        f"# Rehearsal of `{ch.id}`: {result.overall}",
        "",
        f"- change content id: `{ch.content_id}`",
        f"- source: `{result.source.get('dsn')}`",
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


def report_files(result: RehearsalResult) -> dict[str, bytes]:
    """Every file a rehearsal's output directory holds, by relative path."""
    body = json.dumps(report_json(result), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return {
        "report.json": body.encode("utf-8"),
        "report.md": report_markdown(result).encode("utf-8"),
        **fingerprint_files(result),
    }


def default_out_dir(result: RehearsalResult, root: Path) -> Path:
    stamp = result.started_at.strftime("%Y%m%dT%H%M%SZ")
    return root / f"{result.change.id}-{stamp}"


def write_report(result: RehearsalResult, out: Path) -> Path:
    """Write report.json, report.md and fingerprints/ into a new directory, atomically."""
    return write_tree_atomically(out, report_files(result))
