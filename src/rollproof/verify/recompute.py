"""Recompute a packet's claims from its own evidence: pure checks over parsed documents.

Longer than 600 lines because every claim of report.json is recomputed here from the same
parsed evidence (change copy, secrets, legs, forward-only legs, verdicts, exit codes,
renderings), and each check reads the others' results in order; split apart, every part would
need the whole Evidence and the same helpers.

Runs after the file-level stages (manifest, hashes, strict JSON, schemas) passed, so every
document here is authentic relative to the manifest and shaped as its schema says. What is left
is the logic: is every claim what the evidence gives? Each check below names the fabrication it
stops.

* **Change copy**: the content id is recomputed from the report's change section and the
  change's `[impact]` limits (`impact.limits.change`), with `rollproof.core.change.Change`, the
  one definition of the canonical form; every script in change/ has the recorded sha256;
  change.toml says what the report says (flags, scripts, surfaces, connection settings, impact
  limits). Stops a packet whose change/ is not the change that was rehearsed, so RERUN.sh
  cannot re-run something else.
* **Secrets**: no DSN in the report or the recorded command line carries a password.
* **Verdicts**: every leg verdict is recomputed with `rollproof.core.invariants.judge_leg` over the
  fingerprints/*.json files (each rebuilt by `fingerprint_from_json`, which recomputes its
  digest). A PASS needs every fingerprint point of its leg and every invariant holding; a PASS
  over `after_apply == before` without `no_mutation` is the fabricated no-mutation rollback. A leg
  whose script failed or could not run honestly did not reach its invariants: it is accepted
  only as FAIL, NOT_APPLICABLE or UNKNOWN, with a reason, no recorded invariants, and the
  fingerprints taken so far (a prefix of the leg's points); NOT_APPLICABLE with every point taken
  is refused (a leg that ran to the end was applicable). Every leg's `before` is the source
  fingerprint. The overall status is recomputed with `rollproof.core.model.overall_verdict` (and
  `combine_verdicts` with the surfaces verdict), the isolation verdict from its checks, and the
  summary line and report.md's title must say the same.
* **Exit codes**: the recorded exit code of the rehearsal is the one its verdicts give (an
  undeclared access denied at run time holds it: 3).
* **Verify rows**: under `verify_expect = "no-rows"` a read-only leg recorded as PASS may not
  record a verify statement that returned rows; rows are recorded on the read-only leg only.
  What the report says a statement returned cannot be recomputed without the database:
  commands.sh and RERUN.sh re-run it.
* **Forward-only changes**: a change recorded without a revert script has revert and reapply
  legs that are NOT_APPLICABLE for exactly that reason, with no fingerprints; a change with
  one may not claim it has none.
* **Legs and isolation checks**: the report's legs are exactly the legs the recorded command
  requested (`--legs` in exit_codes.json's argv, or the default legs), so a failing leg cannot
  be deleted; its isolation checks are exactly its engine's (`ISOLATION_CHECKS`), or its
  dump kind's for a dump source (`verify/dumps.py`), so a failing check cannot be deleted
  either.
* **Renderings**: commands.sh, RERUN.sh and report.md are byte for byte what rollproof renders
  for this report (`rollproof.verify.scripts`, `rollproof.verify.report_md`).
"""

from __future__ import annotations

import itertools
import posixpath
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollproof.core.brackets import select_lines, strip_bracket
from rollproof.core.canonical import sha256_hex
from rollproof.core.change import (
    CONNECTION_DEFAULTS,
    NO_REVERT,
    VERIFY_NO_ERROR,
    VERIFY_NO_ROWS,
    Change,
    Script,
)
from rollproof.core.errors import ExitCode
from rollproof.core.fingerprint import Fingerprint
from rollproof.core.impact import LimitError, limits_json, parse_limits
from rollproof.core.invariants import judge_leg
from rollproof.core.isolation import (
    RETIRED_CHECKS,
    IsolationCheck,
    IsolationProof,
)
from rollproof.core.model import (
    DEFAULT_LEGS,
    LEG_POINTS,
    IsolationVerdict,
    LegName,
    Point,
    Verdict,
    combine_verdicts,
    overall_verdict,
    rehearsal_exit_code,
    surfaces_verdict,
    undeclared_denial,
)
from rollproof.core.redact import redact_argv, redact_dsn
from rollproof.verify.dumps import check_dump_source, checks_owed
from rollproof.verify.findings import Finding, FindingCode
from rollproof.verify.layout import CHANGE_DIR, COMMANDS_SH, REPORT_MD, RERUN_SH
from rollproof.verify.report_md import forbidden_line, markdown_title, render_report_md
from rollproof.verify.scripts import recorded_exit_code, render_commands, render_rerun

SCRIPT_NAMES = ("apply", "revert", "verify")


@dataclass(frozen=True, slots=True)
class Evidence:
    """The parsed, schema-valid documents of a packet whose bytes matched its manifest."""

    report: Mapping[str, Any]
    exit_codes: Mapping[str, Any]
    fingerprints: Mapping[str, Fingerprint]  # by "sha256:<hex>"
    files: Mapping[str, bytes]


def summary_text(change_id: str, overall: str, legs: list[tuple[str, str]], isolation: str) -> str:
    """report.json's `summary` line (report.py writes it with this function)."""
    shown = ", ".join(f"{name} {verdict}" for name, verdict in legs)
    return f"{change_id}: {overall} ({shown}); isolation {isolation}"


def expected_exit_code(
    isolation: IsolationVerdict, overall: Verdict, *, denied: bool = False
) -> ExitCode:
    """The rehearse command's exit code for these verdicts (one rule: model.py)."""
    return rehearsal_exit_code(isolation, overall, denied=denied)


def surfaces_verdict_of(surfaces: Mapping[str, Any]) -> Verdict:
    """The surfaces verdict recomputed from report.json's `surfaces` (one rule: model.py)."""
    return surfaces_verdict(
        undeclared_changed=bool(surfaces["observed"]["undeclared"]),
        forbidden_touched=any(f["status"] == "TOUCHED" for f in surfaces["forbidden"]),
        denied=any(e["decision"] == "denied" for e in surfaces["enforcement"]),
    )


# -- secrets ---------------------------------------------------------------------------------


def check_secrets(ev: Evidence) -> list[Finding]:
    out = []
    dsn = str(ev.report["source"]["dsn"])
    if redact_dsn(dsn) != dsn:
        out.append(
            Finding(FindingCode.SECRET_PRESENT, "source.dsn holds a password", "report.json")
        )
    scratch = ev.report["source"].get("scratch")
    if scratch is not None and redact_dsn(str(scratch)) != scratch:
        out.append(
            Finding(FindingCode.SECRET_PRESENT, "source.scratch holds a password", "report.json")
        )
    for command in ev.exit_codes["commands"]:
        if redact_argv(command["argv"]) != command["argv"]:
            out.append(
                Finding(
                    FindingCode.SECRET_PRESENT,
                    f"the recorded {command['name']} command line holds a password",
                    "exit_codes.json",
                )
            )
    return out


# -- the change copy -------------------------------------------------------------------------


def _script(doc: Mapping[str, Any] | None) -> Script | None:
    if doc is None:
        return None
    lines = doc.get("lines")
    return Script(
        text="",
        sha256=doc["sha256"],
        path=doc["path"],
        lines=None if lines is None else (int(lines[0]), int(lines[1])),
        strip_transaction=bool(doc.get("strip_transaction", False)),
    )


def recomputed_content_id(
    change: Mapping[str, Any], limits: Mapping[str, Any], *, no_transaction: bool = False
) -> str:
    """The content id of the report's change section and its `[impact]` limits (recorded in
    `impact.limits.change`), and `transaction = false` from the change copy's change.toml;
    `LimitError` on a value that is no limit."""
    scripts = change["scripts"]
    apply, revert = _script(scripts["apply"]), _script(scripts["revert"])
    if apply is None:
        raise ValueError("apply is required")
    return Change(
        id=change["id"],
        apply=apply,
        revert=revert,
        verify=_script(scripts["verify"]),
        no_mutation=change["no_mutation"],
        strict_sequences=change["strict_sequences"],
        reads=tuple(change["surfaces"]["reads"]),
        writes=tuple(change["surfaces"]["writes"]),
        connection=dict(change["connection"]),
        directory=Path(),
        files={},
        verify_expect=change.get("verify_expect", VERIFY_NO_ERROR),
        impact_limits=parse_limits(limits, "impact.limits.change"),
        no_transaction="transaction = false" if no_transaction else None,
    ).content_id


def _toml_limits(toml: Mapping[str, Any]) -> dict[str, int] | None:
    """change.toml's `[impact]` limits as report.json records them; None if not limits."""
    try:
        return limits_json(parse_limits(toml.get("impact", {})))
    except LimitError:
        return None


def _toml_mismatches(change: Mapping[str, Any], toml: Mapping[str, Any]) -> list[str]:
    out = []
    if "id" in toml and toml["id"] != change["id"]:
        out.append(f"id is {toml['id']!r}, the report says {change['id']!r}")
    for flag in ("no_mutation", "strict_sequences"):
        if toml.get(flag, False) != change[flag]:
            out.append(f"{flag} is {toml.get(flag, False)}, the report says {change[flag]}")
    expect = toml.get("verify_expect", VERIFY_NO_ERROR)
    if expect != change.get("verify_expect", VERIFY_NO_ERROR):
        out.append(
            f"verify_expect is {expect!r}, the report says "
            f"{change.get('verify_expect', VERIFY_NO_ERROR)!r}"
        )
    for name in SCRIPT_NAMES:
        doc = change["scripts"][name]
        if name in toml:
            given = toml[name]
            selection = given if isinstance(given, dict) else {"file": given}
            file = selection.get("file")
            path = posixpath.normpath(file) if isinstance(file, str) else file
            if (
                doc is None
                or doc["path"] != path
                # repr, not ==: TOML's 9.0 or 1 must not pass for the recorded 9 or true
                or repr(selection.get("lines")) != repr(doc.get("lines"))
                or repr(selection.get("strip_transaction", False))
                != repr(doc.get("strip_transaction", False))
            ):
                out.append(f"{name} = {given!r} is not the recorded script")
        elif f"{name}_sql" in toml:
            text = toml[f"{name}_sql"]
            if (
                doc is None
                or doc["path"] is not None
                or not isinstance(text, str)
                or sha256_hex(text.encode("utf-8")) != doc["sha256"]
            ):
                out.append(f"{name}_sql is not the recorded script")
        elif doc is not None:
            out.append(f"{name} is recorded but change.toml has none")
    surfaces = toml.get("surfaces", {})
    for key in ("reads", "writes"):
        if list(surfaces.get(key, [])) != list(change["surfaces"][key]):
            out.append(f"surfaces.{key} is not the recorded list")
    connection = toml.get("connection", {})
    for key, default in CONNECTION_DEFAULTS.items():
        if connection.get(key, default) != change["connection"].get(key):
            out.append(f"connection.{key} is not the recorded setting")
    return out


def _says_no_transaction(data: bytes | None) -> bool:
    """Whether the copied change.toml says `transaction = false` (unreadable: no; the change
    stage reports that file on its own)."""
    try:
        return tomllib.loads((data or b"").decode("utf-8")).get("transaction", True) is False
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False


NO_TRANSACTION_REASON = "the migration is marked to run outside a transaction: "
"""The transaction leg's reason under `transaction = false`, followed by the marker
(rehearse/flow.py writes it; a test runs both)."""
DEFAULT_MARKER = "change.toml `transaction = false`"


def _transaction_mismatches(report: Mapping[str, Any], toml: Mapping[str, Any]) -> list[str]:
    """`transaction = false` is not in the content id, so it must agree with the legs: the
    transaction leg NOT_APPLICABLE for the marker exactly when change.toml says so. Otherwise a
    failing transaction leg could be re-worded away by adding the key to the copy."""
    flag = toml.get("transaction", True)
    marker = toml.get("transaction_marker")
    if type(flag) is not bool or not (marker is None or (isinstance(marker, str) and not flag)):
        return ["transaction / transaction_marker are not a boolean and a marker text"]
    leg = next((x for x in report["legs"] if x["name"] == LegName.TRANSACTION), None)
    said = None if leg is None else leg.get("reason")
    claims = isinstance(said, str) and said.startswith(NO_TRANSACTION_REASON)
    if flag:
        if claims:
            return [f"the transaction leg says {said!r}, change.toml has no transaction = false"]
        return []
    if leg is None:
        return []
    expected = NO_TRANSACTION_REASON + (marker or DEFAULT_MARKER)
    if leg["verdict"] != Verdict.NOT_APPLICABLE or said != expected or leg["fingerprints"]:
        return ["transaction = false, but the transaction leg is not NOT_APPLICABLE for it"]
    return []


def _selection_problems(
    change: Mapping[str, Any], copy: Mapping[str, bytes]
) -> list[tuple[str, str]]:
    """A script's `lines` must exist in its copied file, `strip_transaction` must find one
    whole-script BEGIN ... COMMIT there, and two selections of one file must not overlap: what
    the loader refuses (core/change.py) cannot be evidence of a rehearsal."""
    out: list[tuple[str, str]] = []
    spans: dict[str, list[tuple[int, int, str]]] = {}
    for name in SCRIPT_NAMES:
        doc = change["scripts"][name]
        if doc is None or doc["path"] is None or doc["path"] not in copy:
            continue
        lines, strip = doc.get("lines"), doc.get("strip_transaction", False)
        try:
            text = copy[doc["path"]].decode("utf-8")
        except UnicodeDecodeError:
            out.append((doc["path"], f"{name}: not UTF-8 text"))
            continue
        if lines is not None:
            picked = select_lines(text, int(lines[0]), int(lines[1]))
            if picked is None:
                out.append((doc["path"], f"{name}: the file has no lines {lines[0]}..{lines[1]}"))
                continue
            text = picked
            spans.setdefault(doc["path"], []).append((int(lines[0]), int(lines[1]), name))
        if strip and strip_bracket(text) is None:
            out.append(
                (doc["path"], f"{name}: strip_transaction, but it is not one BEGIN ... COMMIT")
            )
    for path, ranges in sorted(spans.items()):
        for (a0, a1, an), (b0, b1, bn) in itertools.pairwise(sorted(ranges)):
            if b0 <= a1:
                out.append((path, f"{an} lines {a0}..{a1} overlap {bn} lines {b0}..{b1}"))
    return out


def check_change(ev: Evidence) -> list[Finding]:
    change = ev.report["change"]
    out = []
    try:
        recomputed: str | None = recomputed_content_id(
            change,
            ev.report["impact"]["limits"]["change"],
            no_transaction=_says_no_transaction(ev.files.get(f"{CHANGE_DIR}/change.toml")),
        )
    except LimitError:
        recomputed = None
    if recomputed != change["content_id"]:
        out.append(
            Finding(
                FindingCode.CONTENT_ID_MISMATCH,
                "change.content_id is not the digest of the recorded change",
                "report.json",
            )
        )
    prefix = CHANGE_DIR + "/"
    copy = {p[len(prefix) :]: d for p, d in ev.files.items() if p.startswith(prefix)}
    recorded = {
        doc["path"]: doc["sha256"]
        for doc in change["scripts"].values()
        if doc is not None and doc["path"] is not None
    }
    expected = {"change.toml", *recorded}
    for rel in sorted(set(copy) - expected):
        out.append(
            Finding(
                FindingCode.CHANGE_COPY_MISMATCH,
                "not a file of the recorded change",
                prefix + rel,
            )
        )
    for rel in sorted(set(expected) - set(copy)):
        out.append(
            Finding(FindingCode.CHANGE_COPY_MISMATCH, "recorded script is missing", prefix + rel)
        )
    for rel, sha in sorted(recorded.items()):
        if rel in copy and sha256_hex(copy[rel]) != sha:
            out.append(
                Finding(
                    FindingCode.CHANGE_COPY_MISMATCH,
                    "sha256 differs from the recorded script's",
                    prefix + rel,
                )
            )
    if "change.toml" in copy:
        try:
            toml = tomllib.loads(copy["change.toml"].decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            out.append(
                Finding(
                    FindingCode.CHANGE_COPY_MISMATCH,
                    f"not readable TOML: {e}",
                    prefix + "change.toml",
                )
            )
        else:
            out += [
                Finding(FindingCode.CHANGE_COPY_MISMATCH, m, prefix + "change.toml")
                for m in _toml_mismatches(change, toml) + _transaction_mismatches(ev.report, toml)
            ]
            if _toml_limits(toml) != ev.report["impact"]["limits"]["change"]:
                out.append(
                    Finding(
                        FindingCode.CHANGE_COPY_MISMATCH,
                        "[impact] is not the recorded impact.limits.change",
                        prefix + "change.toml",
                    )
                )
    out += [
        Finding(FindingCode.CHANGE_COPY_MISMATCH, m, prefix + rel)
        for rel, m in _selection_problems(change, copy)
    ]
    return out


# -- verdicts --------------------------------------------------------------------------------


def _referenced(report: Mapping[str, Any]) -> set[str]:
    refs = {str(report["source"]["fingerprint"])}
    for leg in report["legs"]:
        refs.update(str(d) for d in leg["fingerprints"].values())
    return refs


def _check_leg(
    leg: Mapping[str, Any], ev: Evidence, *, no_mutation: bool, strict_sequences: bool
) -> list[Finding]:
    name = LegName(leg["name"])
    recorded = Verdict(leg["verdict"])
    points = {Point(p): str(d) for p, d in leg["fingerprints"].items()}
    order = LEG_POINTS[name]
    out = []

    def finding(code: FindingCode, message: str) -> Finding:
        return Finding(code, f"{name}: {message}", "report.json")

    stray = [p for p in points if p not in order]
    if stray:
        out.append(
            finding(
                FindingCode.LEG_POINTS_INCOMPLETE,
                "fingerprint points that are not this leg's: " + ", ".join(stray),
            )
        )
        return out
    source = str(ev.report["source"]["fingerprint"])
    if Point.BEFORE in points and points[Point.BEFORE] != source:
        out.append(
            finding(
                FindingCode.LEG_BEFORE_NOT_SOURCE,
                "`before` is not the source fingerprint (every leg starts from the snapshot)",
            )
        )
        return out

    invariants = list(leg["invariants"])
    complete = all(p in points for p in order)
    if complete and (recorded is Verdict.PASS or invariants):
        judged = judge_leg(
            name,
            {p: ev.fingerprints[points[p]] for p in order},
            no_mutation=no_mutation,
            strict_sequences=strict_sequences,
        )
        if recorded is Verdict.PASS and judged.verdict is not Verdict.PASS:
            unchanged = any(not r.holds and r.invariant.op == "!=" for r in judged.results)
            if unchanged:
                out.append(
                    finding(
                        FindingCode.NO_MUTATION_FABRICATED,
                        "PASS recorded over an apply that changed nothing "
                        "(after_apply == before) in a change not declared no_mutation",
                    )
                )
            else:
                out.append(
                    finding(
                        FindingCode.LEG_VERDICT_CONTRADICTS,
                        f"PASS recorded, the fingerprints give {judged.verdict}: {judged.reason}",
                    )
                )
        elif recorded is not judged.verdict:
            out.append(
                finding(
                    FindingCode.LEG_VERDICT_CONTRADICTS,
                    f"{recorded} recorded, the fingerprints give {judged.verdict}",
                )
            )
        else:
            given = [{"check": str(r.invariant), "holds": r.holds} for r in judged.results]
            if invariants != given:
                out.append(
                    finding(
                        FindingCode.LEG_INVARIANTS_MISMATCH,
                        "the recorded invariants are not the ones the fingerprints give",
                    )
                )
        return out

    # The leg did not reach its invariants: a script failed or could not run honestly.
    if recorded is Verdict.PASS:
        missing = [str(p) for p in order if p not in points]
        out.append(
            finding(
                FindingCode.LEG_POINTS_INCOMPLETE,
                "PASS recorded without fingerprints at " + ", ".join(missing),
            )
        )
    elif invariants:
        out.append(
            finding(
                FindingCode.LEG_INVARIANTS_MISMATCH,
                "invariants recorded for a leg that did not reach them",
            )
        )
    elif set(points) != set(order[: len(points)]):
        out.append(
            finding(
                FindingCode.LEG_POINTS_INCOMPLETE,
                "the fingerprints recorded are not the points a leg reaches in order",
            )
        )
    elif not leg["reason"]:
        out.append(finding(FindingCode.LEG_VERDICT_CONTRADICTS, f"{recorded} without a reason"))
    elif recorded is Verdict.NOT_APPLICABLE and complete:
        out.append(
            finding(
                FindingCode.LEG_VERDICT_CONTRADICTS,
                "NOT_APPLICABLE recorded for a leg that reached every fingerprint point",
            )
        )
    return out


def _check_forward_only(report: Mapping[str, Any]) -> list[Finding]:
    """A change without a revert script has revert and reapply legs that are NOT_APPLICABLE
    for exactly that reason, with no fingerprints; a change with one may not claim it."""
    forward_only = report["change"]["scripts"]["revert"] is None
    out = []
    for leg in report["legs"]:
        if leg["name"] not in (LegName.REVERT, LegName.REAPPLY):
            continue
        claims = leg["verdict"] == Verdict.NOT_APPLICABLE and leg["reason"] == NO_REVERT
        honest = claims and not leg["fingerprints"] and not leg["invariants"]
        if forward_only and not honest:
            out.append(
                Finding(
                    FindingCode.LEG_VERDICT_CONTRADICTS,
                    f"{leg['name']}: the change has no revert script, so the leg can only be "
                    f"NOT_APPLICABLE ({NO_REVERT}) with no fingerprints",
                    "report.json",
                )
            )
        elif not forward_only and claims:
            out.append(
                Finding(
                    FindingCode.LEG_VERDICT_CONTRADICTS,
                    f"{leg['name']}: says the change has no revert script, but it has one",
                    "report.json",
                )
            )
    return out


def _check_verify_rows(report: Mapping[str, Any]) -> list[Finding]:
    """Rows are recorded on the read-only leg only, once a statement, in order; and
    under `verify_expect = "no-rows"` a read-only PASS with a statement that returned rows is
    the fabrication this stops (the verify failed, the report says it passed)."""
    no_rows = report["change"].get("verify_expect", VERIFY_NO_ERROR) == VERIFY_NO_ROWS
    out = []
    for leg in report["legs"]:
        if "verify_rows" not in leg:
            if no_rows and leg["name"] == LegName.READ_ONLY and "verify" in leg["statements"]:
                out.append(
                    Finding(
                        FindingCode.LEG_VERDICT_CONTRADICTS,
                        f'read-only: verify_expect = "{VERIFY_NO_ROWS}" but no verify rows are '
                        "recorded",
                        "report.json",
                    )
                )
            continue
        name, rows = leg["name"], leg["verify_rows"]
        numbers = [r["statement"] for r in rows]
        if name != LegName.READ_ONLY or "verify" not in leg["statements"]:
            problem = "verify rows recorded for a leg that ran no verify script"
        elif numbers != sorted(set(numbers)):
            problem = "verify rows name statements out of order or twice"
        elif no_rows and rows and leg["verdict"] == Verdict.PASS:
            first = rows[0]
            problem = (
                f"PASS recorded, but verify statement {first['statement']} returned "
                f'{first["rows"]} row(s) and the change says verify_expect = "{VERIFY_NO_ROWS}"'
            )
        else:
            continue
        out.append(
            Finding(FindingCode.LEG_VERDICT_CONTRADICTS, f"{name}: {problem}", "report.json")
        )
    return out


CARRIED_POINTS: Mapping[str, Mapping[tuple[str, str], str]] = {
    "postgresql": {
        (LegName.RESTORE.value, Point.AFTER_RESTORE.value): "snapshot",
        (LegName.REVERT.value, Point.AFTER_APPLY.value): "restore.after_apply",
        (LegName.REAPPLY.value, Point.AFTER_APPLY.value): "restore.after_apply",
    },
    "sqlite": {
        (LegName.REVERT.value, Point.AFTER_APPLY.value): "restore.after_apply",
        (LegName.REAPPLY.value, Point.AFTER_APPLY.value): "restore.after_apply",
    },
}
"""The only points a rehearsal carries over, by engine, each with its one origin
(rehearse/flow.py). On PostgreSQL, whose clones are server copies (CREATE DATABASE ... TEMPLATE),
the restore leg's clone is a copy of the sealed snapshot, and the revert leg (with the reapply
leg, which continues on the revert leg's clone and records the same after_apply) starts from a
copy of the restore leg's applied clone. On SQLite only the second: a byte copy of the closed
clone, hashed against it (engines/sqlite/session.py, `branch`); its restore is read. Any other
pair names a copy no rehearsal of that engine made."""


def _full_fingerprints(exit_codes: Mapping[str, Any]) -> bool:
    """Whether the recorded rehearse command asked to read every point."""
    argv: list[str] = next(
        (c["argv"] for c in exit_codes["commands"] if c["name"] == "rehearse"), []
    )
    return "--full-fingerprints" in argv


def _check_carried(report: Mapping[str, Any], *, full: bool = False) -> list[Finding]:
    """Stops an unread point passed off as a copy of something it is not: a point carried over
    (`carried`) must be one the leg records, on an engine that copies clones, from an origin
    that gives exactly its digest: "snapshot" only for after_restore, whose digest must then be
    the snapshot's (the source fingerprint); "<leg>.<point>" only for an after_apply copied from
    another leg's after_apply that was read there (not itself carried), with the same digest."""
    legs = {str(leg["name"]): leg for leg in report["legs"]}
    source = str(report["source"]["fingerprint"])
    engine = report["source"].get("engine")
    out = []
    for leg in report["legs"]:
        for point, origin in leg.get("carried", {}).items():
            why = _unfounded(leg, str(point), str(origin), legs, source, engine)
            if why is None and full:
                why = "the recorded command read every point (--full-fingerprints)"
            if why is not None:
                out.append(
                    Finding(
                        FindingCode.LEG_CARRIED_UNFOUNDED,
                        f"{leg['name']}: {point} carried over from {origin}: {why}",
                        "report.json",
                    )
                )
    return out


def _unfounded(
    leg: Mapping[str, Any],
    point: str,
    origin: str,
    legs: Mapping[str, Mapping[str, Any]],
    source: str,
    engine: Any,
) -> str | None:
    """Why the carried point is not founded, or None when it is."""
    carries = CARRIED_POINTS.get(str(engine))
    if carries is None:
        return f"a {engine} clone is never copied, every point of it is read"
    digest = leg["fingerprints"].get(point)
    if digest is None:
        return "the leg records no fingerprint there"
    allowed = carries.get((str(leg["name"]), point))
    why = _unfounded_origin(leg, point, origin, digest, legs, source)
    if why is None and allowed != origin:
        return f"no {engine} rehearsal carries that point over" + (
            "" if allowed is None else f" from anywhere but {allowed}"
        )
    return why


def _unfounded_origin(
    leg: Mapping[str, Any],
    point: str,
    origin: str,
    digest: str,
    legs: Mapping[str, Mapping[str, Any]],
    source: str,
) -> str | None:
    """Why the origin does not give the point's digest, or None."""
    if origin == "snapshot":
        if point != "after_restore":
            return "only a restore is a copy of the snapshot"
        return None if digest == source else "its digest is not the snapshot's"
    name, _, at = origin.partition(".")
    other = legs.get(name)
    if other is None or other is leg:
        return "the report has no other leg of that name"
    if point != "after_apply" or at != "after_apply":
        return "only an apply is carried over from another leg's apply"
    if other["fingerprints"].get(at) != digest:
        return "its digest is not that leg's"
    if at in other.get("carried", {}):
        return "that leg did not read it either"
    return None


def requested_legs(exit_codes: Mapping[str, Any]) -> tuple[LegName, ...] | None:
    """The legs the recorded rehearse command asked for, in rollproof's order: every
    `--legs A,B` (or `--legs=A,B`) of its argv, or the default legs when there is none; None
    when a name is not a leg (the command could not have run)."""
    argv = next(c["argv"] for c in exit_codes["commands"] if c["name"] == "rehearse")
    given: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--legs" and i + 1 < len(argv):
            given.append(argv[i + 1])
        elif arg.startswith("--legs="):
            given.append(arg.removeprefix("--legs="))
    if not given:
        return DEFAULT_LEGS
    valid = {leg.value: leg for leg in LegName}
    chosen = set()
    for raw in given:
        for name in raw.split(","):
            if name.strip() not in valid:
                return None
            chosen.add(valid[name.strip()])
    return tuple(leg for leg in LegName if leg in chosen)


def check_verdicts(ev: Evidence) -> list[Finding]:
    report = ev.report
    out: list[Finding] = []

    refs = _referenced(report)
    for digest in sorted(refs - set(ev.fingerprints)):
        out.append(
            Finding(
                FindingCode.FINGERPRINT_MISSING,
                f"{digest} is referenced but has no fingerprints/ file",
                "report.json",
            )
        )
    for digest in sorted(set(ev.fingerprints) - refs):
        out.append(
            Finding(
                FindingCode.FINGERPRINT_UNREFERENCED,
                "no leg or source refers to this fingerprint",
                f"fingerprints/{digest.removeprefix('sha256:')}.json",
            )
        )
    if out:
        return out

    names = [LegName(leg["name"]) for leg in report["legs"]]
    if len(set(names)) != len(names) or names != sorted(names, key=list(LegName).index):
        return [
            Finding(
                FindingCode.LEGS_MALFORMED,
                "legs must be distinct and in rollproof's order: " + ", ".join(names),
                "report.json",
            )
        ]

    requested = requested_legs(ev.exit_codes)
    if requested is None or tuple(names) != requested:
        shown = "an unreadable --legs" if requested is None else ",".join(requested)
        return [
            Finding(
                FindingCode.LEGS_NOT_REQUESTED,
                f"the report's legs ({','.join(names) or 'none'}) are not the legs the recorded "
                f"command requested ({shown})",
                "report.json",
            )
        ]
    dump_findings = check_dump_source(report)
    if dump_findings:
        return dump_findings
    owner, expected_checks = checks_owed(report["source"])
    checks_given = tuple(str(c["name"]) for c in report["isolation"]["checks"])
    if checks_given != expected_checks:
        return [
            Finding(
                FindingCode.ISOLATION_CHECKS_MISMATCH,
                f"isolation checks ({', '.join(checks_given)}) are not the "
                f"{owner}'s ({', '.join(expected_checks or ())})"
                + (
                    "; "
                    + ", ".join(sorted(RETIRED_CHECKS.intersection(checks_given)))
                    + " is retired: it judged what others wrote to the source"
                    if RETIRED_CHECKS.intersection(checks_given)
                    else ""
                ),
                "report.json",
            )
        ]

    change = report["change"]
    out += _check_forward_only(report)
    out += _check_verify_rows(report)
    out += _check_carried(report, full=_full_fingerprints(ev.exit_codes))
    for leg in report["legs"]:
        out += _check_leg(
            leg,
            ev,
            no_mutation=change["no_mutation"],
            strict_sequences=change["strict_sequences"],
        )
    if out:
        return out

    verdicts = [Verdict(leg["verdict"]) for leg in report["legs"]]
    overall = overall_verdict(verdicts, names)
    if "surfaces" in report:
        surfaces = surfaces_verdict_of(report["surfaces"])
        if Verdict(report["surfaces"]["verdict"]) is not surfaces:
            out.append(
                Finding(
                    FindingCode.OVERALL_CONTRADICTS,
                    f"surfaces.verdict is {report['surfaces']['verdict']}, "
                    f"its evidence gives {surfaces}",
                    "report.json",
                )
            )
        overall = combine_verdicts(overall, surfaces)
    if Verdict(report["overall"]) is not overall:
        out.append(
            Finding(
                FindingCode.OVERALL_CONTRADICTS,
                f"overall is {report['overall']}, the legs give {overall}",
                "report.json",
            )
        )

    checks = tuple(
        IsolationCheck(c["name"], c["holds"], c["evidence"]) for c in report["isolation"]["checks"]
    )
    isolation = IsolationProof(checks).verdict
    if IsolationVerdict(report["isolation"]["verdict"]) is not isolation:
        out.append(
            Finding(
                FindingCode.ISOLATION_CONTRADICTS,
                f"isolation verdict is {report['isolation']['verdict']}, its checks give "
                f"{isolation}",
                "report.json",
            )
        )
    if out:
        return out

    legs = [(str(leg["name"]), str(leg["verdict"])) for leg in report["legs"]]
    summary = summary_text(change["id"], str(overall), legs, str(isolation))
    forbidden = forbidden_line(report["surfaces"]["forbidden"])
    if report["surfaces"]["forbidden_summary"] != forbidden:
        out.append(
            Finding(
                FindingCode.REPORT_TEXT_CONTRADICTS,
                f"surfaces.forbidden_summary is not {forbidden!r}",
                "report.json",
            )
        )
    if report["summary"] != summary:
        out.append(
            Finding(
                FindingCode.REPORT_TEXT_CONTRADICTS,
                f"summary says {report['summary']!r}, the verdicts give {summary!r}",
                "report.json",
            )
        )
    first_line = ev.files[REPORT_MD].split(b"\n", 1)[0]
    if first_line != markdown_title(change["id"], str(overall)).encode("utf-8"):
        out.append(
            Finding(
                FindingCode.REPORT_TEXT_CONTRADICTS,
                "the title does not state the recomputed overall verdict",
                REPORT_MD,
            )
        )
    return out


# -- exit codes and scripts ------------------------------------------------------------------


def check_exit_codes(ev: Evidence) -> list[Finding]:
    report = ev.report
    denied = "surfaces" in report and any(
        undeclared_denial(e["decision"], e["reason"]) for e in report["surfaces"]["enforcement"]
    )
    expected = expected_exit_code(
        IsolationVerdict(report["isolation"]["verdict"]), Verdict(report["overall"]), denied=denied
    )
    recorded = recorded_exit_code(ev.exit_codes)
    if recorded != int(expected):
        return [
            Finding(
                FindingCode.EXIT_CODE_CONTRADICTS,
                f"rehearse recorded exit code {recorded}, its verdicts give {int(expected)}",
                "exit_codes.json",
            )
        ]
    return []


def check_scripts(ev: Evidence) -> list[Finding]:
    out = []
    if ev.files[COMMANDS_SH] != render_commands(ev.report, ev.exit_codes):
        out.append(
            Finding(
                FindingCode.SCRIPT_MISMATCH,
                "not the script rollproof writes for this report and these exit codes",
                COMMANDS_SH,
            )
        )
    if ev.files[REPORT_MD] != render_report_md(ev.report):
        out.append(
            Finding(
                FindingCode.REPORT_TEXT_CONTRADICTS,
                "not the report.md rollproof renders from this report.json",
                REPORT_MD,
            )
        )
    if ev.files[RERUN_SH] != render_rerun(ev.report):
        out.append(
            Finding(
                FindingCode.SCRIPT_MISMATCH,
                "not the script rollproof writes for this report",
                RERUN_SH,
            )
        )
    return out
