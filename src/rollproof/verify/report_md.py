"""report.md, rendered from report.json's data alone: one pure function for the writer and the
validator.

The writer (`rollproof.evidence.build`) renders report.md with `render_report_md` from the
report it writes, and the validator renders it again from the report.json it verified and
requires the same bytes. So report.md can only say what report.json says: a table rewritten to
read "revert PASS" over a report.json that records FAIL is rejected, and so is any line added.

Every value taken from the report is written through `_text` (or is one of a closed set:
verdicts, leg and point names, digests): a `|` cannot open a table cell, and a control
character (a newline among them) cannot start a line of its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from rollproof.core.explain import attribute_text, example_text
from rollproof.core.impact import blocks, duration_text
from rollproof.core.model import LEG_POINTS, LegName, Point

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]")

PROVEN = "PROVEN_ISOLATED_NOT_PRODUCTION"


def markdown_title(change_id: str, overall: str) -> str:
    """report.md's first line."""
    return f"# Rehearsal of `{_text(change_id)}`: {_text(overall)}"


def forbidden_line(forbidden: Sequence[Mapping[str, Any]]) -> str:
    """The forbidden-surfaces summary (report.json `surfaces.forbidden_summary`)."""
    spared = sum(f["status"] != "TOUCHED" for f in forbidden)
    return f"Forbidden surfaces {spared}/{len(forbidden)} untouched/not-requested"


def _text(value: Any) -> str:
    """A recorded value as one line of markdown text: `|` escaped, control characters (line
    breaks among them) replaced by a space."""
    return _CONTROL.sub(" ", str(value)).replace("|", "\\|")


def _code(value: Any) -> str:
    """A recorded value in a code span: as `_text`, with backticks replaced (they would close
    the span)."""
    return _text(value).replace("`", "'")


def difference_lines(d: Mapping[str, Any]) -> list[str]:
    """A difference's summary, then what a person can act on: each schema attribute (object,
    attribute, old -> new) the summary does not already say, the example rows (key, old ->
    new), how many more rows differ, and which columns' values were withheld."""
    lines = [f"- {_text(d['summary'])}"]
    detail = d["detail"]
    for a in detail.get("attributes", []):
        words = attribute_text(a)
        if words not in d["summary"]:
            lines.append(f"  - {_text(words)}")
    examples = detail.get("examples", [])
    for e in examples:
        lines.append(f"  - {_text(example_text(e))}")
    omitted = detail.get("examples_omitted", 0)
    if omitted:
        lines.append(
            f"  - {omitted:,} more row{'s' if omitted != 1 else ''} "
            + ("differ" if omitted != 1 else "differs")
            + (" (not shown)" if not examples else "")
        )
    redacted = detail.get("columns_redacted", [])
    if redacted:
        lines.append(
            "  - values not shown (secret columns or a forbidden object): "
            + ", ".join(_text(c) for c in redacted)
        )
    return lines


def _failed_checks(report: Mapping[str, Any]) -> list[str]:
    return [
        f"{c['name']} ({c['evidence']})"
        for c in report["isolation"]["checks"]
        if c["holds"] is not True
    ]


def plain_words(report: Mapping[str, Any]) -> str:
    """A paragraph a person can act on."""
    if report["isolation"]["verdict"] != PROVEN:
        return (
            "The clone's isolation from the source was not proven, so nothing here counts "
            "as evidence: " + "; ".join(_failed_checks(report)) + "."
        )
    legs = report["legs"]
    failed = [leg for leg in legs if leg["verdict"] == "FAIL"]
    if not failed:
        if report["overall"] == "PASS":
            extra = "".join(
                f" The {leg['name']} leg was not applicable: {leg['reason']}."
                for leg in legs
                if leg["verdict"] == "NOT_APPLICABLE"
            )
            if report["change"]["scripts"]["revert"] is None:
                extra += (
                    " The change is forward-only (no revert script): without a snapshot it is "
                    "irreversible."
                )
            return (
                "Every rollback path rehearsed brought the database back to exactly its "
                "prior content." + extra
            )
        return "No rollback path was proven, so the result is UNKNOWN, which is not a pass."
    parts = []
    for leg in failed:
        if leg["differences"]:
            what = "; ".join(d["summary"] for d in leg["differences"])
            parts.append(f"The {leg['name']} leg failed: {what}.")
        else:
            parts.append(f"The {leg['name']} leg failed: {leg['reason']}.")
    passed = [str(leg["name"]) for leg in legs if leg["verdict"] == "PASS"]
    if any(leg["name"] == "revert" for leg in failed) and any(
        d["detail"].get("values_now_null")
        or d["detail"].get("values_lost")
        or d["detail"].get("rows_missing")
        for leg in failed
        for d in leg["differences"]
    ):
        parts.append(
            "Running this change in production and then its revert script would lose "
            "that data for good; only a restore from a snapshot would bring it back."
        )
    if passed:
        parts.append("Legs that passed: " + ", ".join(passed) + ".")
    return " ".join(parts)


COPY_KIND = {"postgresql": "a server copy", "sqlite": "a byte copy"}
"""What a carried point was copied as, by engine (docs/report.md, `carried`)."""


def _leg_lines(leg: Mapping[str, Any], engine: str) -> list[str]:
    lines = ["", f"### {leg['name']}: {leg['verdict']}", ""]
    copy = COPY_KIND.get(engine, "a copy")
    fingerprints = leg["fingerprints"]
    carried = leg.get("carried", {})
    for point in LEG_POINTS[LegName(leg["name"])]:
        if str(point) in fingerprints:
            line = f"- {Point(point)}: `{_code(fingerprints[str(point)])}`"
            if str(point) in carried:
                origin = _code(carried[str(point)])
                line += f" (carried over from `{origin}`: {copy}, not read)"
            lines.append(line)
    for r in leg["invariants"]:
        lines.append(
            f"- invariant `{_code(r['check'])}`: {'holds' if r['holds'] else 'DOES NOT HOLD'}"
        )
    settings = leg["settings"]
    if settings:
        lines.append(
            "- connection settings: " + ", ".join(f"{k}={settings[k]}" for k in sorted(settings))
        )
    for r in leg.get("verify_rows", ()):
        n = int(r["rows"])
        lines.append(
            f"- verify statement {int(r['statement'])} returned {n:,} row{'' if n == 1 else 's'}"
        )
    if leg["differences"]:
        lines += ["", "What did not come back:", ""]
        lines += [line for d in leg["differences"] for line in difference_lines(d)]
    if leg["tolerated"]:
        lines += [
            "",
            "Tolerated (sequence counters advance outside transactions; "
            "set strict_sequences = true to count them):",
            "",
        ]
        lines += [line for d in leg["tolerated"] for line in difference_lines(d)]
    return lines


def _count(value: Any, unit: str = "") -> str:
    return "-" if value is None else f"{int(value):,} {unit}".rstrip()


def _relations(items: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join(
        f"{_text(w['relation'])} ({_text(w['kind'])}"
        + ("" if w["bytes"] is None else f", {int(w['bytes']):,} bytes")
        + ")"
        for w in items
    )


def impact_lines(impact: Mapping[str, Any]) -> list[str]:
    """The impact section: what the apply did while it ran, measured (core.impact)."""
    lines = ["", "## Impact", ""]
    table: list[str] = []
    if not impact["measured"]:
        lines.append(f"- not measured: {_text(impact['reason'] or '')}")
    else:
        postgres = impact["engine"] == "postgresql"
        total = f"- measured on the transaction leg's apply: {len(impact['statements'])} "
        total += f"statement(s) in {duration_text(impact['duration_us'])}; "
        if postgres:
            settings = impact["settings"]
            total += f"{_count(impact['wal_bytes'], 'bytes')} of WAL"
            if "wal_level" in settings:
                total += f" (wal_level {_text(settings['wal_level'])})"
        else:
            total += (
                f"{_count(impact['pages_written'], 'pages')} written; database write lock held "
                f"{duration_text(impact['write_lock_us'])}"
            )
        lines.append(total)
        for lk in impact["locks"]:
            lines.append(
                f"- {_text(lk['mode'])} on {_text(lk['relation'])} ({_text(lk['kind'])}): "
                f"{blocks(str(lk['mode']))}, from statement {int(lk['statement'])} to commit, "
                f"{duration_text(int(lk['held_us']))}"
            )
        for w in impact["rewrites"]:
            rows = w["rows_before"]
            lines.append(
                f"- {'rewritten' if postgres else 'rebuilt'} by statement {int(w['statement'])}: "
                + _relations([w])
                + ("" if rows is None else f", {int(rows):,} rows before")
            )
        for b in impact["indexes_built"]:
            lines.append(
                f"- index built by statement {int(b['statement'])}: {_relations([b])}, "
                f"statement took {duration_text(int(b['duration_us']))}"
            )
        columns = "locks taken | WAL |" if postgres else "pages written | rows changed |"
        table += ["", f"| # | statement | time | {columns}", "|---|---|---|---|---|"]
        for st in impact["statements"]:
            if postgres:
                what = ", ".join(
                    f"{_text(lk['mode'])} {_text(lk['relation'])}" for lk in st["locks"]
                )
                tail = f"{what or '-'} | {_count(st['wal_bytes'], 'bytes')} |"
            else:
                tail = f"{_count(st['pages_written'])} | {_count(st['rows_changed'])} |"
            table.append(
                f"| {int(st['index'])} | `{_code(st['statement'])}` | "
                f"{duration_text(int(st['duration_us']))} | {tail}"
            )
    limits = impact["limits"]
    for origin in ("change", "policy"):
        if limits[origin]:
            lines.append(
                f"- {origin} limits: "
                + ", ".join(f"{k} = {int(v):,}" for k, v in sorted(limits[origin].items()))
            )
    for over in impact["over_limits"]:
        lines.append(f"- **over a limit**: {_text(over)}")
    return lines + table


def render_report_md(report: Mapping[str, Any]) -> bytes:
    """report.md for `report` (report.json's content), as UTF-8 bytes."""
    change, source, isolation = report["change"], report["source"], report["isolation"]
    lines = [
        markdown_title(change["id"], report["overall"]),
        "",
        f"- change content id: `{_code(change['content_id'])}`",
        f"- source: `{_code(source['dsn'])}`",
        f"- source fingerprint: `{_code(source['fingerprint'])}`",
        f"- isolation: **{_text(isolation['verdict'])}**",
        f"- rehearsed {_text(report['started_at'])} to {_text(report['finished_at'])}",
        "",
        "## Legs",
        "",
        "| leg | verdict | reason |",
        "|---|---|---|",
    ]
    for leg in report["legs"]:
        lines.append(f"| {leg['name']} | {leg['verdict']} | {_text(leg['reason'] or '')} |")
    for leg in report["legs"]:
        lines += _leg_lines(leg, str(report["source"].get("engine")))
    sf = report["surfaces"]
    lines += ["", "## Surfaces", ""]
    lines.append(f"- verdict: **{_text(sf['verdict'])}**; scoping {_text(sf['scoping']['status'])}")
    lines.append(f"- {forbidden_line(sf['forbidden'])}")
    if sf["observed"]["undeclared"]:
        lines.append(
            "- changed but not declared: "
            + ", ".join(_text(n) for n in sf["observed"]["undeclared"])
        )
    for e in sf["enforcement"]:
        lines.append(
            f"- {_text(e['decision'])}: {_text(e['kind'])} {_text(e['object'])} at "
            f"{_text(e['script'])} statement {int(e['statement'])}: {_text(e['reason'])}"
        )
    for f in sf["forbidden"]:
        lines.append(
            f"- forbidden {_text(f['kind'])} {_text(f['name'])}: {_text(f['status'])} "
            f"({_text(f['evidence'])})"
        )
    lines += impact_lines(report["impact"])
    lines += ["", "## Isolation proof", ""]
    for c in isolation["checks"]:
        lines.append(
            f"- {'PASS' if c['holds'] is True else 'FAIL'} {_text(c['name'])}: "
            f"{_text(c['evidence'])}"
        )
    after = source.get("after")
    if after is not None:
        # An observation, not a check: others writing the source do not unmake the proof.
        lines.append(
            f"- {'MOVED ON' if after['moved_on'] else 'UNCHANGED'} source after the rehearsal: "
            f"{_text(after['evidence'])}"
        )
    if report["excluded"]:
        lines += [
            "",
            "Excluded from fingerprints (statistics, not content): "
            + ", ".join(_text(x) for x in report["excluded"]),
        ]
    if change["no_mutation"]:
        lines += [
            "",
            "This change is declared `no_mutation = true`: its apply is expected to "
            "change nothing, and the legs check that it did not.",
        ]
    lines += ["", "## What this means", "", _text(plain_words(report)), ""]
    return "\n".join(lines).encode("utf-8")
