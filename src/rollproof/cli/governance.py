"""Commands about governance: init, ledger, tickets, blockers, grants, preflight, decide,
status, and the demo (plain and governed)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.text import Text

from rollproof.cli.app import (
    VERDICT_STYLE,
    _err,
    _now,
    _out,
    _progress,
    _read_grant,
    _render_result,
    _shell_word,
    cli,
    main,
)
from rollproof.core.errors import ExitCode

if TYPE_CHECKING:
    from rollproof.core.policy import Policy
    from rollproof.governance.events import NewEvent
    from rollproof.governance.store import LedgerStore


def _policy_option(f: Callable[..., None]) -> Callable[..., None]:
    return click.option(
        "--policy",
        "policy_path",
        type=click.Path(path_type=Path),
        default=None,
        help="Policy file (default: ./rollproof.toml).",
    )(f)


def _governed_policy(policy_path: Path | None) -> Policy:
    from rollproof.core.policy import load_policy

    policy = load_policy(policy_path)
    policy.governed()  # a usage error naming what is missing
    return policy


def _store(policy: Policy) -> LedgerStore:
    from rollproof.governance.store import open_ledger

    return open_ledger(policy.governed().ledger)


def _pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key.strip() or not text.strip():
            raise click.UsageError(f"{what} must be ID=TEXT, got {value!r}")
        if key.strip() in out:
            raise click.UsageError(f"{what} {key.strip()!r} given twice")
        out[key.strip()] = text.strip()
    return out


def _append(policy: Policy, events: list[NewEvent]) -> None:
    appended = _store(policy).append_events(events, now=_now())
    for event in appended:
        _out.print(f"ledger event {event.seq}: {event.kind}", markup=False)


@cli.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    default=Path(),
    help="Where to write rollproof.toml (default: here).",
)
@click.option(
    "--executor-key",
    type=click.Path(path_type=Path),
    default=None,
    metavar="PUB",
    help="The executor's public key: grants are addressed to it.",
)
@click.option(
    "--operator",
    "operators",
    multiple=True,
    metavar="NAME=PUB",
    help="An operator and their public key file; may be repeated.",
)
@click.option(
    "--production", multiple=True, metavar="DSN", help="A production source; may be repeated."
)
@click.option(
    "--ci-trigger",
    "ci_triggers",
    multiple=True,
    metavar="GLOB",
    help="A file that triggers CI or a deploy (declares the CI scope); may be repeated.",
)
def init(
    directory: Path,
    executor_key: Path | None,
    operators: tuple[str, ...],
    production: tuple[str, ...],
    ci_triggers: tuple[str, ...],
) -> None:
    """Write a commented, governed rollproof.toml and create its ledger (never overwrites)."""
    from rollproof.governance.workspace import init_workspace

    made = init_workspace(
        directory,
        executor=executor_key,
        operators={k: Path(v) for k, v in _pairs(operators, "--operator").items()},
        production=list(production),
        ci_triggers=list(ci_triggers) or None,
        now=_now(),
    )
    _out.print(f"policy: {made.policy}", markup=False)
    pinned = f"validator pinned {made.pinned}" if made.pinned else "existing ledger kept"
    _out.print(f"ledger: {made.ledger} ({pinned})", markup=False)


@cli.group()
def ledger() -> None:
    """The hash-chained governance ledger: verify, fold, checkpoint, pin."""


@ledger.command("verify")
@_policy_option
def ledger_verify(policy_path: Path | None) -> None:
    """Re-derive every hash from the stored bytes; refuse a ledger that does not extend the
    newest trusted signed checkpoint (exit 1)."""
    from rollproof.governance.preflight import trusted_checkpoint
    from rollproof.governance.state import fold

    policy = _governed_policy(policy_path)
    checkpoint = trusted_checkpoint(policy.governed())
    verified = _store(policy).read_verified(trusted_checkpoint=checkpoint)
    state = fold(verified.events)
    anchored = (
        f"extends the signed checkpoint at {checkpoint.size}"
        if checkpoint is not None
        else "no signed checkpoint yet (rollproof ledger checkpoint)"
    )
    _out.print(
        f"VERIFIED {_store(policy).where}: {verified.head.size} events, head "
        f"{verified.head.hash}; folds through {state.through}; {anchored}",
        markup=False,
    )


@ledger.command("fold")
@click.option("--through", type=int, default=None, metavar="N", help="Fold events 1..N only.")
@click.option("--json", "as_json", is_flag=True, help="Print the state as JSON.")
@_policy_option
def ledger_fold(through: int | None, as_json: bool, policy_path: Path | None) -> None:
    """Print the governance state after events 1..N (default: the head)."""
    from rollproof.governance.preflight import trusted_checkpoint
    from rollproof.governance.state import fold
    from rollproof.governance.views import state_json, state_lines

    policy = _governed_policy(policy_path)
    verified = _store(policy).read_verified(
        trusted_checkpoint=trusted_checkpoint(policy.governed())
    )
    state = fold(verified.events, through=through)
    if as_json:
        _out.print(json.dumps(state_json(state), indent=2), markup=False)
        return
    for line in state_lines(state):
        _out.print(line, markup=False)


@ledger.command("checkpoint")
@click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(path_type=Path),
    metavar="OPKEY",
    help="An operator's private key.",
)
@_policy_option
def ledger_checkpoint(key_path: Path, policy_path: Path | None) -> None:
    """Sign the verified head (size and hash) into the policy's checkpoint file."""
    from rollproof.governance.issuance import operator_key

    policy = _governed_policy(policy_path)
    gov = policy.governed()
    key, name = operator_key(gov, key_path)
    made = _store(policy).write_checkpoint(key, gov.checkpoint, now=_now())
    _out.print(
        f"checkpoint {gov.checkpoint}: size {made.size}, head {made.head}, signed by {name}",
        markup=False,
    )


@ledger.command("pin")
@click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(path_type=Path),
    metavar="OPKEY",
    help="An operator's private key (the pin is signed).",
)
@_policy_option
def ledger_pin(key_path: Path, policy_path: Path | None) -> None:
    """Pin the running validator's hash in the ledger (after an upgrade), signed."""
    from rollproof.governance.issuance import operator_key
    from rollproof.governance.state import pin_validator
    from rollproof.verify.pin import validator_sha256

    policy = _governed_policy(policy_path)
    key, name = operator_key(policy.governed(), key_path)
    _append(policy, [pin_validator(validator_sha256(), key=key)])
    _out.print(f"validator {validator_sha256()} pinned by {name}", markup=False)


@cli.group()
def ticket() -> None:
    """Tickets in the ledger: open, update, close."""


@ticket.command("open")
@click.argument("ticket_id", metavar="ID")
@click.option("--title", required=True)
@click.option("--change", "change_id", default=None, metavar="CHANGE")
@_policy_option
def ticket_open(
    ticket_id: str, title: str, change_id: str | None, policy_path: Path | None
) -> None:
    """Open ticket ID."""
    from rollproof.governance.state import open_ticket

    _append(_governed_policy(policy_path), [open_ticket(ticket_id, title, change_id=change_id)])


@ticket.command("update")
@click.argument("ticket_id", metavar="ID")
@click.option("--title", default=None)
@click.option("--note", default=None)
@_policy_option
def ticket_update(
    ticket_id: str, title: str | None, note: str | None, policy_path: Path | None
) -> None:
    """Retitle ticket ID or add a note to it."""
    from rollproof.governance.state import update_ticket

    if title is None and note is None:
        raise click.UsageError("give --title or --note")
    _append(_governed_policy(policy_path), [update_ticket(ticket_id, title=title, note=note)])


@ticket.command("close")
@click.argument("ticket_id", metavar="ID")
@click.option("--reason", required=True)
@_policy_option
def ticket_close(ticket_id: str, reason: str, policy_path: Path | None) -> None:
    """Close ticket ID (only once every blocker filed against it is closed)."""
    from rollproof.governance.state import close_ticket

    _append(_governed_policy(policy_path), [close_ticket(ticket_id, reason=reason)])


@cli.group()
def blocker() -> None:
    """Blockers in the ledger. States move only with evidence: there is no --state."""


@blocker.command("open")
@click.argument("blocker_id", metavar="ID")
@click.option("--title", required=True)
@click.option(
    "--condition",
    "conditions",
    multiple=True,
    required=True,
    metavar="ID=TEXT",
    help="A discharge condition; an ID naming a lane is discharged by that lane's evidence.",
)
@click.option("--ticket", "ticket_id", default=None, metavar="TICKET")
@click.option("--change", "change_id", default=None, metavar="CHANGE")
@_policy_option
def blocker_open(
    blocker_id: str,
    title: str,
    conditions: tuple[str, ...],
    ticket_id: str | None,
    change_id: str | None,
    policy_path: Path | None,
) -> None:
    """Open blocker ID with its discharge conditions."""
    from rollproof.governance.state import open_blocker

    event = open_blocker(
        blocker_id,
        title,
        _pairs(conditions, "--condition"),
        ticket_id=ticket_id,
        change_id=change_id,
    )
    _append(_governed_policy(policy_path), [event])


@blocker.command("update")
@click.argument("blocker_id", metavar="ID")
@click.option("--title", default=None)
@click.option("--add-condition", "added", multiple=True, metavar="ID=TEXT")
@click.option("--note", default=None)
@click.option("--discharge", "condition", default=None, metavar="CONDITION")
@click.option(
    "--evidence",
    type=click.Path(path_type=Path),
    default=None,
    metavar="PACKET",
    help="With --discharge: the validated packet (recorded PASS in the ledger) that discharges it.",
)
@_policy_option
def blocker_update(
    blocker_id: str,
    title: str | None,
    added: tuple[str, ...],
    note: str | None,
    condition: str | None,
    evidence: Path | None,
    policy_path: Path | None,
) -> None:
    """Retitle blocker ID, add conditions or a note, or discharge a condition with evidence."""
    from rollproof.governance.state import discharge_condition, update_blocker
    from rollproof.verify.reader import validate_packet

    if (condition is None) != (evidence is None):
        raise click.UsageError("--discharge and --evidence go together")
    policy = _governed_policy(policy_path)
    events = []
    if title is not None or added or note is not None:
        events.append(
            update_blocker(
                blocker_id, title=title, add_conditions=_pairs(added, "--add-condition"), note=note
            )
        )
    if condition is not None and evidence is not None:
        tree = validate_packet(evidence).tree_hash
        events.append(discharge_condition(blocker_id, condition, packet_tree_hash=tree))
    if not events:
        raise click.UsageError("nothing to update")
    _append(policy, events)


@blocker.command("close")
@click.argument("blocker_id", metavar="ID")
@click.option("--reason", required=True)
@_policy_option
def blocker_close(blocker_id: str, reason: str, policy_path: Path | None) -> None:
    """Close blocker ID (only once every condition is discharged with evidence)."""
    from rollproof.governance.state import close_blocker

    _append(_governed_policy(policy_path), [close_blocker(blocker_id, reason=reason)])


@cli.group()
def grant() -> None:
    """Operator-signed, single-use grants: issue, co-sign, consume."""


@grant.command("issue")
@click.option("--lane", required=True)
@click.option("--change", "change_id", required=True, metavar="CHANGE")
@click.option("--source", required=True, metavar="DSN", help="Fingerprinted now, read-only.")
@click.option("--expires", required=True, metavar="DURATION", help="e.g. 2h, 90m, 1d.")
@click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(path_type=Path),
    metavar="OPKEY",
    help="The operator's private key.",
)
@click.option(
    "--evidence",
    type=click.Path(path_type=Path),
    default=None,
    metavar="PACKET",
    help="The validated packet the lane stands on (lanes above the first).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Grant file (mode 0600; default: <change>.<lane>.grant.json).",
)
@_policy_option
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

    issued = issue_grant_file(
        _governed_policy(policy_path),
        key_path=key_path,
        lane=lane,
        change_id=change_id,
        source=source,
        expires=parse_duration(expires),
        out=out or Path(f"{change_id}.{lane}.grant.json"),
        now=_now(),
        evidence=evidence,
    )
    _out.print(
        f"grant {issued.grant_id}: lane {issued.lane}, change {issued.change_id}, "
        f"expires {issued.expires}, {issued.signers} signature(s)",
        markup=False,
    )
    _out.print(f"written to {issued.path} (mode 0600; hand it to the executor)", markup=False)


@grant.command("cosign")
@click.argument("grant_file", metavar="FILE", type=click.Path(path_type=Path))
@click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(path_type=Path),
    metavar="OPKEY",
    help="Another operator's private key.",
)
@_policy_option
def grant_cosign(grant_file: Path, key_path: Path, policy_path: Path | None) -> None:
    """Add another operator's signature to a grant (lanes that need several)."""
    from rollproof.governance.issuance import cosign_grant_file

    issued = cosign_grant_file(_governed_policy(policy_path), grant_file, key_path=key_path)
    _out.print(f"grant {issued.grant_id}: {issued.signers} signature(s)", markup=False)


@grant.command("consume")
@click.option("--grant", "grant_file", type=click.Path(path_type=Path), default=None)
@click.option("--lane", required=True)
@click.option("--change", "change_id", required=True, metavar="CHANGE")
@click.option("--source", required=True, metavar="DSN")
@_policy_option
def grant_consume(
    grant_file: Path | None, lane: str, change_id: str, source: str, policy_path: Path | None
) -> None:
    """Enter a production lane: consume its grant (once) and lift HOLD for the change.

    rollproof never runs the change against production; the deploy that follows is yours.
    Refusals exit 3 and are recorded in the ledger.
    """
    from rollproof.governance.flow import enter_lane

    consumed = enter_lane(
        _governed_policy(policy_path),
        lane=lane,
        change_id=change_id,
        source=source,
        grant=None if grant_file is None else _read_grant(grant_file),
        clock=_now,
    )
    _out.print(
        f"grant {consumed.grant.grant_id} consumed at ledger event {consumed.event.seq}; "
        f"HOLD lifted for {change_id} in lane {lane} until {consumed.grant.expires}",
        markup=False,
    )


@cli.command()
@click.argument("change", type=click.Path(path_type=Path))
@click.option("--source", required=True, metavar="DSN")
@click.option("--lane", default=None, help="The lane the run is for (default: the first).")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@_policy_option
def preflight(
    change: Path, source: str, lane: str | None, as_json: bool, policy_path: Path | None
) -> None:
    """Check CHANGE against the ledger before a run: each check PASS, FAIL or UNKNOWN.

    Exit 0 when the run may go ahead, 1 on a FAIL, 3 on an UNKNOWN the lane does not allow.
    Results are recorded in the ledger; every UNKNOWN opens or classifies a blocker.
    """
    from rollproof.core.change import load_change
    from rollproof.governance.preflight import run_preflight

    result = run_preflight(
        _governed_policy(policy_path), load_change(change), source, lane=lane, now=_now()
    )
    if as_json:
        checks = [
            {"check": str(c.check), "verdict": str(c.verdict), "detail": c.detail}
            for c in result.checks
        ]
        body = {"overall": str(result.overall), "recorded_at": result.recorded_at}
        _out.print(json.dumps({**body, "checks": checks}, indent=2), markup=False)
    else:
        where = (
            f"recorded at ledger event {result.recorded_at}"
            if result.recorded_at is not None
            else "NOT recorded (the ledger does not verify)"
        )
        _out.print(f"preflight {result.change_id} (lane {result.lane.name}), {where}")
        for c in result.checks:
            style = VERDICT_STYLE[str(c.verdict)]
            _out.print(Text(f"  {c.verdict!s:<8}", style=style), Text(f"{c.check}: {c.detail}"))
        allowed = [str(c.check) for c in result.checks if c.verdict.value == "UNKNOWN"]
        go = "may proceed" if result.may_proceed else "may NOT proceed"
        note = f" (UNKNOWN allowed in this lane: {', '.join(allowed)})" if allowed else ""
        _out.print(f"overall: {result.overall}; {go}{note if result.may_proceed else ''}")
    raise SystemExit(int(result.exit_code))


@cli.command()
@click.argument("change_id", metavar="CHANGE")
@click.option("--hold", "hold", is_flag=True, help="Keep production on HOLD.")
@click.option("--proceed", "proceed", default=None, metavar="LANE", help="Proceed to LANE.")
@click.option("--reason", required=True)
@click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(path_type=Path),
    metavar="OPKEY",
    help="The operator's private key: the decision is signed.",
)
@_policy_option
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
    from rollproof.governance.state import Decision

    if hold == (proceed is not None):
        raise click.UsageError("choose exactly one: --hold or --proceed LANE")
    event = record(
        _governed_policy(policy_path),
        change_id,
        Decision.HOLD if hold else Decision.PROCEED,
        key=load_signing_key(key_path),
        reason=reason,
        lane=proceed,
        now=_now(),
    )
    what = "HOLD" if hold else f"PROCEED to {proceed}"
    _out.print(f"ledger event {event.seq}: decision {what} for {change_id}, signed", markup=False)


@cli.command()
@click.argument("change_id", metavar="CHANGE", required=False)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to write the .md and .json (default: .rollproof/status beside the policy).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON instead of the Markdown.")
@_policy_option
def status(
    change_id: str | None, out: Path | None, as_json: bool, policy_path: Path | None
) -> None:
    """Print the checkpoint of CHANGE, or the current state of every change in the ledger.

    Every line is derived from the ledger (verified from its bytes) and the packets
    (validated now). Written as checkpoint-<CHANGE>.md/.json or current-state.md/.json.
    """
    from rollproof.governance.status import all_status, change_status, write_status

    policy = _governed_policy(policy_path)
    result = (
        all_status(policy, now=_now())
        if change_id is None
        else change_status(policy, change_id, now=_now())
    )
    md, js = write_status(result, out or policy.directory / ".rollproof" / "status")
    if as_json:
        _out.print(json.dumps(result.doc, indent=2, sort_keys=True), markup=False)
    else:
        _out.print(result.markdown, markup=False, end="")
    _err.print(f"written: {md} and {js}", markup=False)


@cli.command()
@click.option(
    "--dir",
    "workdir",
    type=click.Path(path_type=Path),
    default=Path("rollproof-demo"),
    show_default=True,
    help="Work directory for the sample database and reports.",
)
@click.option(
    "--governed",
    is_flag=True,
    help="The governed story instead: keys, policy, tickets, blockers, grants, preflight, "
    "rehearsal, decision (HOLD), checkpoint, and production lanes refused.",
)
def demo(workdir: Path, governed: bool) -> None:
    """Build a sample production database and rehearse two changes against it."""
    from rollproof.rehearse.demo import run_demo

    if governed:
        _governed_demo(workdir)
        return

    with _progress() as say:
        outcome = run_demo(workdir, progress=say)
    for (result, out_dir), story in zip(outcome.results, outcome.stories, strict=True):
        _out.rule(story.title)
        _out.print(story.intro)
        _render_result(result, out_dir)
        _out.print(story.explain(result))
        _out.print()
    _out.print(outcome.conclusion)
    _out.print(f"reports are in {outcome.packets_dir}")
    raise SystemExit(0 if outcome.as_expected else int(ExitCode.CHECK_FAILED))


def _governed_demo(workdir: Path) -> None:
    """Run the governed story's commands from `workdir`, as a user would type them."""
    import os

    from rollproof.rehearse.demo import prepare_governed_demo

    with _progress() as say:
        steps = prepare_governed_demo(workdir, progress=say)
    unexpected = []
    home = Path.cwd()
    os.chdir(workdir)
    try:
        for number, step in enumerate(steps, 1):
            _out.rule(f"{number}. {step.title}")
            _out.print("$ rollproof " + " ".join(_shell_word(a) for a in step.argv), markup=False)
            code = main(list(step.argv))
            if step.why:
                _out.print(f"→ exit {code}: {step.why}", markup=False)
            if code != step.expect:
                unexpected.append(f"step {number} exited {code}, expected {step.expect}")
    finally:
        os.chdir(home)
    _out.rule()
    if unexpected:
        _out.print("demo: UNEXPECTED: " + "; ".join(unexpected), markup=False)
        raise SystemExit(int(ExitCode.CHECK_FAILED))
    _out.print(
        "demo: as expected: the change was rehearsed under a consumed rehearsal-only grant, "
        "production stays on HOLD (the operator's decision), and every production lane was "
        f"refused without its own grant. Everything is in {workdir}.",
        markup=False,
    )
