"""The rehearsal report: `report.json` (schema `rollproof/report/v1`) and `report.md`.

The JSON form is what evidence is checked against; its JSON Schema ships in the package
(`schemas/report-v1.schema.json`) and every report rollproof writes conforms to it. Full
fingerprints are written beside the report as `fingerprints/<hex>.json`; the report refers to
them by digest, so a leg's verdict can be recomputed from the files alone.

A report is written as part of an evidence packet (`rollproof.rehearse.packet`): `write_report`
there writes the whole packet. Every DSN goes through `rollproof.core.redact.redact_dsn` on its way
in, and the summary line comes from the function the validator uses to check it
(`rollproof.verify.recompute`). report.md is rendered from report.json's data by
`rollproof.verify.report_md`, the renderer the validator re-runs.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from rollproof.core.canonical import canonical_json
from rollproof.core.change import Script
from rollproof.core.fingerprint import Fingerprint
from rollproof.core.impact import impact_json, not_measured
from rollproof.core.redact import redact_dsn
from rollproof.core.version import __version__
from rollproof.rehearse.flow import LegResult, RehearsalResult
from rollproof.verify.recompute import summary_text
from rollproof.verify.report_md import render_report_md

SCHEMA_ID = "rollproof/report/v1"


def _iso(dt: Any) -> str:
    return str(dt.isoformat().replace("+00:00", "Z"))


def _leg_json(leg: LegResult) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    if leg.verify_rows is not None:
        rows["verify_rows"] = [{"statement": r.statement, "rows": r.rows} for r in leg.verify_rows]
    if leg.carried:
        rows["carried"] = {str(p): origin for p, origin in leg.carried.items()}
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
        **rows,
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


def _script_json(s: Script) -> dict[str, Any]:
    """A script's record: its file (or None, inline) and bytes, and the selection when it is
    part of its file (named only then, so other reports are unchanged)."""
    return (
        {"path": s.path, "sha256": s.sha256}
        | ({} if s.lines is None else {"lines": list(s.lines)})
        | ({"strip_transaction": True} if s.strip_transaction else {})
    )


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
            "verify_expect": ch.verify_expect,
            "surfaces": {"reads": list(ch.reads), "writes": list(ch.writes)},
            "connection": dict(sorted(ch.connection.items())),
            "scripts": {
                name: None if s is None else _script_json(s)
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
        "impact": dict(
            result.impact
            or impact_json(not_measured(str(result.source.get("engine")), "not measured"))
        ),
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


def report_markdown(result: RehearsalResult) -> str:
    """report.md for `result`: rendered from its report.json data by the validator's own
    renderer (`rollproof.verify.report_md`), so report.md says only what report.json says."""
    return render_report_md(report_json(result)).decode("utf-8")


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
