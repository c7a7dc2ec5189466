"""A range packet: `rollproof rehearse-dir --out OUT` writes one, validated as a whole.

    OUT/RANGE.json            the range manifest (canonical JSON, schema rollproof/range/v1)
    OUT/<index>-<id>/         one normal packet per migration, rehearsed at its position
    OUT/range-<a>-to-<b>/     the range's own round trip, one more normal packet

RANGE.json lists, in order, every sub-packet: its directory, the migration it rehearsed (null
for the range), its tree hash, overall verdict and exit code; and the range's overall verdict
(the worst) and exit code (the highest). The validator checks, failing closed with one code:

RANGE_MALFORMED           RANGE.json unreadable, not canonical, or not the v1 shape
RANGE_PACKET_EXTRA        anything at the top of OUT that RANGE.json does not list
RANGE_PACKET_MISSING      a listed directory absent, or migrations the range's own packet
                          rehearsed (its change.toml's `# migrations:` line) not listed
RANGE_ORDER               migrations not in ascending index order, or the range not last
RANGE_PACKET_INVALID      a sub-packet the single-packet validator rejects (its first finding)
RANGE_PACKET_MISMATCH     a sub-packet whose tree hash, or change id, is not what is listed
                          (a swapped or replaced sub-packet)
RANGE_VERDICT_CONTRADICTS a listed verdict or exit code, or the range's worst, not what the
                          verified sub-packets say

Pure, like validate.py: the single-packet check is passed in, so this module imports only
core and verify.findings.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from rollproof.core.brackets import select_lines, strip_bracket
from rollproof.core.canonical import canonical_json
from rollproof.core.model import Verdict
from rollproof.core.strictjson import StrictJsonError, loads_strict
from rollproof.verify.findings import Finding, FindingCode, ValidationReport, VerifiedPacket

RANGE_FILE = "RANGE.json"
RANGE_SCHEMA = "rollproof/range/v1"
VERDICT_ORDER = ("PASS", "NOT_APPLICABLE", "UNKNOWN", "FAIL")
"""From best to worst: the range's overall verdict is the worst of its sub-packets'."""
_DIR = re.compile(r"^(?:(\d{1,6})-|range-)[A-Za-z0-9][A-Za-z0-9._-]{0,160}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ENTRY_KEYS = {"dir", "migration", "tree_hash", "overall", "exit_code"}
_TOP_KEYS = {"schema", "format", "packets", "overall", "exit_code"}
CHANGE_TOML = "change/change.toml"
MIGRATIONS_LINE = "# migrations: "

CheckOne = Callable[[Any], ValidationReport]
"""The single-packet validator over a `PacketTree` (validate.check_tree, bound)."""
Subtree = Callable[[str], Any]
"""The `PacketTree` of one top-level directory, re-rooted."""


def worst(verdicts: list[str]) -> str:
    return max(verdicts, key=VERDICT_ORDER.index, default="UNKNOWN")


def range_document(entries: list[dict[str, Any]], fmt: str) -> bytes:
    """RANGE.json's bytes for these entries (dir, migration, tree_hash, overall, exit_code)."""
    return canonical_json(
        {
            "schema": RANGE_SCHEMA,
            "format": fmt,
            "packets": entries,
            "overall": worst([str(e["overall"]) for e in entries]),
            "exit_code": max((int(e["exit_code"]) for e in entries), default=0),
        }
    )


def _malformed(message: str) -> list[Finding]:
    return [Finding(FindingCode.RANGE_MALFORMED, message, RANGE_FILE)]


def _shape(doc: Any) -> str | None:
    """Why `doc` is not a v1 range manifest, or None."""
    if not isinstance(doc, dict) or set(doc) != _TOP_KEYS:
        return f"must hold exactly the keys {sorted(_TOP_KEYS)}"
    if doc["schema"] != RANGE_SCHEMA:
        return f"schema is not {RANGE_SCHEMA}"
    if not isinstance(doc["format"], str) or not isinstance(doc["packets"], list):
        return "format must be a string and packets a list"
    if doc["overall"] not in VERDICT_ORDER or type(doc["exit_code"]) is not int:
        return "overall must be a verdict and exit_code an integer"
    if not doc["packets"]:
        return "packets is empty"
    for i, e in enumerate(doc["packets"]):
        if not isinstance(e, dict) or set(e) != _ENTRY_KEYS:
            return f"packets[{i}] must hold exactly the keys {sorted(_ENTRY_KEYS)}"
        if not isinstance(e["dir"], str) or not _DIR.fullmatch(e["dir"]):
            return f"packets[{i}].dir is not <index>-<id> or range-<id>"
        if not (e["migration"] is None or isinstance(e["migration"], str)):
            return f"packets[{i}].migration must be a string or null"
        if not isinstance(e["tree_hash"], str) or not _HEX64.match(e["tree_hash"]):
            return f"packets[{i}].tree_hash is not 64 hex digits"
        if e["overall"] not in VERDICT_ORDER or type(e["exit_code"]) is not int:
            return f"packets[{i}] overall must be a verdict and exit_code an integer"
    return None


def _order(entries: list[dict[str, Any]]) -> list[Finding]:
    last_index = 0
    for i, e in enumerate(entries):
        name = e["dir"]
        is_range = e["migration"] is None
        if is_range != name.startswith("range-"):
            return [Finding(FindingCode.RANGE_ORDER, "range entry and dir disagree", name)]
        if is_range and i != len(entries) - 1:
            return [Finding(FindingCode.RANGE_ORDER, "the range packet must be last", name)]
        if not is_range:
            index = int(name.split("-", 1)[0])
            if index <= last_index:
                return [
                    Finding(
                        FindingCode.RANGE_ORDER,
                        f"index {index} does not follow {last_index}: not in the order rehearsed",
                        name,
                    )
                ]
            last_index = index
    return []


def _range_migrations(files: Mapping[str, bytes]) -> list[str] | None:
    """The migrations the range packet's change.toml says it rehearsed (its comment line)."""
    text = files.get(CHANGE_TOML, b"").decode("utf-8", "replace")
    for line in text.splitlines():
        if line.startswith(MIGRATIONS_LINE):
            return line[len(MIGRATIONS_LINE) :].split()
    return None


def _script_text(vp: VerifiedPacket, name: str) -> str | None:
    """The SQL a verified packet's change ran as `name`, from its own change copy: inline
    (`<name>_sql`) or its file with the recorded `lines` and `strip_transaction`."""
    doc = vp.report["change"]["scripts"][name]
    if doc is None:
        return None
    if doc["path"] is None:
        toml = tomllib.loads(vp.files[CHANGE_TOML].decode("utf-8"))
        text = toml.get(f"{name}_sql")
        return text if isinstance(text, str) else None
    text = vp.files[f"change/{doc['path']}"].decode("utf-8")
    lines = doc.get("lines")
    if lines is not None:
        text = select_lines(text, int(lines[0]), int(lines[1])) or ""
    if doc.get("strip_transaction"):
        text = strip_bracket(text) or ""
    return text


def _joined(texts: list[str | None]) -> str | None:
    """The range change's script from its migrations' (formats.changes.range_change)."""
    if any(t is None for t in texts):
        return None
    return "\n".join((t or "").rstrip() + "\n" for t in texts)


def _bound(entries: list[dict[str, Any]], verified: list[VerifiedPacket]) -> list[Finding]:
    """The range's own packet is what binds its migrations: it must be there, say which
    migrations it rehearsed (exactly the listed ones), have run exactly their ups in order and
    their downs in reverse order, and start from the first migration's source. Without it, a
    failing migration could be dropped with the range packet and the rest pass as the range."""
    last = entries[-1]
    if last["migration"] is not None:
        return [
            Finding(
                FindingCode.RANGE_PACKET_MISSING,
                "no range packet (range-<first>-to-<last>): the range's own rehearsal is what "
                "binds its migrations",
                RANGE_FILE,
            )
        ]
    whole, parts = verified[-1], verified[:-1]
    said = _range_migrations(whole.files)
    listed_ids = [e["migration"] for e in entries[:-1]]
    if said != listed_ids:
        shown = "no migrations line" if said is None else "migrations " + " ".join(said)
        return [
            Finding(
                FindingCode.RANGE_PACKET_MISSING,
                f"the range rehearsed {shown}; RANGE.json lists {' '.join(listed_ids)}",
                last["dir"],
            )
        ]
    apply = _joined([_script_text(p, "apply") for p in parts])
    reverts = [_script_text(p, "revert") for p in reversed(parts)]
    revert = _joined(reverts) if all(r is not None for r in reverts) else None
    if _script_text(whole, "apply") != apply or _script_text(whole, "revert") != revert:
        return [
            Finding(
                FindingCode.RANGE_PACKET_MISMATCH,
                "the range's own change is not its listed migrations' ups in order and downs "
                "in reverse order (a sub-packet from another range)",
                last["dir"],
            )
        ]
    first = parts[0].report["source"]["fingerprint"] if parts else None
    if first is not None and first != whole.report["source"]["fingerprint"]:
        return [
            Finding(
                FindingCode.RANGE_PACKET_MISMATCH,
                "starts from another source than the range's own packet",
                entries[0]["dir"],
            )
        ]
    return []


def check_range(
    top: set[str], data: bytes | None, subtree: Subtree, check_one: CheckOne
) -> ValidationReport:
    """Check a range packet: `top` the names at OUT's top, `data` RANGE.json's bytes."""
    if data is None:
        return ValidationReport(tuple(_malformed("is not a regular file")), (), None)
    try:
        doc = loads_strict(data)
    except StrictJsonError as bad:
        return ValidationReport(tuple(_malformed(f"not strict JSON: {bad}")), (), None)
    problem = _shape(doc)
    if problem is None and canonical_json(doc) != data:
        problem = "not canonical JSON (RFC 8785)"
    if problem is not None:
        return ValidationReport(tuple(_malformed(problem)), (), None)
    entries: list[dict[str, Any]] = doc["packets"]
    listed = [e["dir"] for e in entries]
    findings = [
        Finding(FindingCode.RANGE_PACKET_EXTRA, "not listed in RANGE.json", name)
        for name in sorted(top - {RANGE_FILE} - set(listed))
    ]
    if len(set(listed)) != len(listed):
        findings.append(
            Finding(FindingCode.RANGE_MALFORMED, "a directory is listed twice", RANGE_FILE)
        )
    findings += [
        Finding(FindingCode.RANGE_PACKET_MISSING, "listed in RANGE.json, not present", name)
        for name in listed
        if name not in top
    ]
    findings = findings or _order(entries)
    if findings:
        return ValidationReport(tuple(findings), (), None)
    verified: list[VerifiedPacket] = []
    for e in entries:
        report = check_one(subtree(e["dir"]))
        if report.packet is None or report.findings:
            first = report.findings[0] if report.findings else "no verified packet"
            findings.append(Finding(FindingCode.RANGE_PACKET_INVALID, str(first), e["dir"]))
            continue
        vp = report.packet
        named = e["dir"] if e["migration"] is None else e["dir"].split("-", 1)[1]
        if vp.tree_hash != e["tree_hash"] or named != vp.change_id:
            findings.append(
                Finding(
                    FindingCode.RANGE_PACKET_MISMATCH,
                    f"holds change {vp.change_id} with tree hash {vp.tree_hash}, not the "
                    "listed packet",
                    e["dir"],
                )
            )
        elif str(vp.overall) != e["overall"] or vp.exit_code != e["exit_code"]:
            findings.append(
                Finding(
                    FindingCode.RANGE_VERDICT_CONTRADICTS,
                    f"listed {e['overall']} exit {e['exit_code']}, the packet says "
                    f"{vp.overall} exit {vp.exit_code}",
                    e["dir"],
                )
            )
        verified.append(vp)
    if findings:
        return ValidationReport(tuple(findings), (), None)
    bound = _bound(entries, verified)
    if bound:
        return ValidationReport(tuple(bound), (), None)
    overall = worst([str(v.overall) for v in verified])
    code = max(v.exit_code for v in verified)
    if doc["overall"] != overall or doc["exit_code"] != code:
        return ValidationReport(
            (
                Finding(
                    FindingCode.RANGE_VERDICT_CONTRADICTS,
                    f"the range says {doc['overall']} exit {doc['exit_code']}; its packets' "
                    f"worst is {overall} exit {code}",
                    RANGE_FILE,
                ),
            ),
            (),
            None,
        )
    head = verified[-1]
    return ValidationReport(
        (), (), replace(head, overall=Verdict(overall), exit_code=code, parts=tuple(verified))
    )
