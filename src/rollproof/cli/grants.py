"""Commands on a change's way to production: grants, preflight, decide, status."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import RenderableType
from rich.text import Text

from rollproof.cli.app import cli
from rollproof.cli.console import VERDICT_STYLE, err, markup, render, show
from rollproof.cli.options import (
    PATH,
    change_option,
    evidence_option,
    governed_policy,
    json_option,
    key_option,
    now,
    out_option,
    path_option,
    policy_option,
    read_grant,
    source_option,
)

if TYPE_CHECKING:
    from rollproof.governance.preflight import Preflight


@cli.group()
def grant() -> None:
    """Operator-signed, single-use grants: issue, co-sign, consume."""


@grant.command("issue")
@click.option("--lane", required=True)
@click.option(
    "--change",
    "change_id",
    required=True,
    metavar="CHANGE",
    help="The change's id, or its directory (with change.toml): then the grant binds its "
    "content id, and an edit (a script, a setting, an [impact] limit) voids it.",
)
@source_option(
    "Fingerprinted now, read-only; a dump (pgdump:PATH, sqlitedump:PATH) is bound by its "
    "sha256 instead."
)
@click.option("--expires", required=True, metavar="DURATION", help="e.g. 2h, 90m, 1d.")
@key_option("The operator's private key.")
@evidence_option("The validated packet the lane stands on (lanes above the first).")
@out_option("Grant file (mode 0600; default: <change>.<lane>.grant.json).")
@policy_option()
def grant_issue(
    lane: str,
    change_id: str,
    source: str,
    expires: str,
    key_path: Path,
    evidence: Path | None,
    out: Path | None,
    policy_path: Path | None,
) -> None:
    """Sign a grant for one lane of one change, addressed to the policy's executor."""
    from rollproof.governance.issuance import issue_grant_file, parse_duration

    content_id = content_of = None
    if (Path(change_id) / "change.toml").is_file():
        from rollproof.core.change import load_change

        content_of, loaded = change_id, load_change(Path(change_id))
        change_id, content_id = loaded.id, loaded.content_id
    issued = issue_grant_file(
        governed_policy(policy_path),
        key_path=key_path,
        lane=lane,
        change_id=change_id,
        source=source,
        expires=parse_duration(expires),
        out=out or Path(f"{change_id}.{lane}.grant.json"),
        now=now(),
        evidence=evidence,
        content_id=content_id,
        content_of=content_of,
    )
    show(
        f"grant {issued.grant_id}: lane {issued.lane}, change {issued.change_id}, "
        f"expires {issued.expires}, {issued.signers} signature(s)",
        f"written to {issued.path} (mode 0600; hand it to the executor)",
    )


@grant.command("cosign")
@click.argument("grant_file", metavar="FILE", type=PATH)
@key_option("Another operator's private key.")
@policy_option()
def grant_cosign(grant_file: Path, key_path: Path, policy_path: Path | None) -> None:
    """Add another operator's signature to a grant (lanes that need several)."""
    from rollproof.governance.issuance import cosign_grant_file

    issued = cosign_grant_file(governed_policy(policy_path), grant_file, key_path=key_path)
    show(f"grant {issued.grant_id}: {issued.signers} signature(s)")


@grant.command("consume")
@path_option("--grant", "grant_file", default=None)
@click.option("--lane", required=True)
@change_option(required=True)
@source_option()
@policy_option()
def grant_consume(
    grant_file: Path | None, lane: str, change_id: str, source: str, policy_path: Path | None
) -> None:
    """Enter a production lane: consume its grant (once) and lift HOLD for the change.

    rollproof never runs the change against production; the deploy that follows is yours.
    Refusals exit 3 and are recorded in the ledger.
    """
    from rollproof.governance.flow import enter_lane

    consumed = enter_lane(
        governed_policy(policy_path),
        lane=lane,
        change_id=change_id,
        source=source,
        grant=None if grant_file is None else read_grant(grant_file),
        clock=now,
    )
    show(
        f"grant {consumed.grant.grant_id} consumed at ledger event {consumed.event.seq}; "
        f"HOLD lifted for {change_id} in lane {lane} until {consumed.grant.expires}"
    )


@cli.command()
@click.argument("change", type=PATH)
@source_option()
@click.option("--lane", default=None, help="The lane the run is for (default: the first).")
@json_option("Print the checks as JSON.")
@policy_option()
def preflight(
    change: Path, source: str, lane: str | None, as_json: bool, policy_path: Path | None
) -> None:
    """Check CHANGE against the ledger before a run: each check PASS, FAIL or UNKNOWN.

    Exit 0 when the run may go ahead, 1 on a FAIL, 3 on an UNKNOWN the lane does not allow or
    a production lane whose evidence's measured impact is over a limit (impact-limits).
    Results are recorded in the ledger; every UNKNOWN opens or classifies a blocker.
    """
    from rollproof.core.change import load_change
    from rollproof.governance.preflight import run_preflight

    result = run_preflight(
        governed_policy(policy_path), load_change(change), source, lane=lane, now=now()
    )
    render(as_json, lambda: _preflight_json(result), _preflight_lines(result), ascii_json=True)
    raise SystemExit(int(result.exit_code))


def _preflight_json(result: Preflight) -> dict[str, Any]:
    checks = [
        {"check": str(c.check), "verdict": str(c.verdict), "detail": c.detail}
        for c in result.checks
    ]
    return {"overall": str(result.overall), "recorded_at": result.recorded_at, "checks": checks}


def _preflight_lines(result: Preflight) -> Iterator[RenderableType]:
    where = (
        f"recorded at ledger event {result.recorded_at}"
        if result.recorded_at is not None
        else "NOT recorded (the ledger does not verify)"
    )
    yield markup(f"preflight {result.change_id} (lane {result.lane.name}), {where}")
    for c in result.checks:
        verdict = Text(f"  {c.verdict!s:<8}", style=VERDICT_STYLE[str(c.verdict)])
        yield Text.assemble(verdict, " ", Text(f"{c.check}: {c.detail}"))
    allowed = [str(c.check) for c in result.checks if c.verdict.value == "UNKNOWN"]
    go = "may proceed" if result.may_proceed else "may NOT proceed"
    note = f" (UNKNOWN allowed in this lane: {', '.join(allowed)})" if allowed else ""
    yield markup(f"overall: {result.overall}; {go}{note if result.may_proceed else ''}")


@cli.command()
@click.argument("change_id", metavar="CHANGE")
@click.option("--hold", "hold", is_flag=True, help="Keep production on HOLD.")
@click.option("--proceed", "proceed", default=None, metavar="LANE", help="Proceed to LANE.")
@click.option("--reason", required=True)
@key_option("The operator's private key: the decision is signed.")
@policy_option()
def decide(
    change_id: str,
    hold: bool,
    proceed: str | None,
    reason: str,
    key_path: Path,
    policy_path: Path | None,
) -> None:
    """Record an operator's signed decision: --hold or --proceed LANE. Nothing is chosen for
    the operator: exactly one of the two is required."""
    from rollproof.core.keys import load_signing_key
    from rollproof.governance.decision import decide as record
    from rollproof.governance.records import Decision

    if hold == (proceed is not None):
        raise click.UsageError("choose exactly one: --hold or --proceed LANE")
    event = record(
        governed_policy(policy_path),
        change_id,
        Decision.HOLD if hold else Decision.PROCEED,
        key=load_signing_key(key_path),
        reason=reason,
        lane=proceed,
        now=now(),
    )
    what = "HOLD" if hold else f"PROCEED to {proceed}"
    show(f"ledger event {event.seq}: decision {what} for {change_id}, signed")


@cli.command()
@click.argument("change_id", metavar="CHANGE", required=False)
@out_option("Where to write the .md and .json (default: .rollproof/status beside the policy).")
@json_option("Print the JSON instead of the Markdown.")
@policy_option()
def status(
    change_id: str | None, out: Path | None, as_json: bool, policy_path: Path | None
) -> None:
    """Print the checkpoint of CHANGE, or the current state of every change in the ledger.

    Every line is derived from the ledger (verified from its bytes) and the packets
    (validated now). Written as checkpoint-<CHANGE>.md/.json or current-state.md/.json.
    """
    from rollproof.governance.status import all_status, change_status, write_status

    policy = governed_policy(policy_path)
    result = (
        all_status(policy, now=now())
        if change_id is None
        else change_status(policy, change_id, now=now())
    )
    md, js = write_status(result, out or policy.directory / ".rollproof" / "status")
    render(as_json, lambda: result.doc, [result.markdown], ascii_json=True, sort_keys=True, end="")
    show(f"written: {md} and {js}", console=err)
