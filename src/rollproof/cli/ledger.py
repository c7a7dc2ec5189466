"""Commands about the governance ledger: init, ledger, tickets, blockers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from rollproof.cli.app import cli
from rollproof.cli.console import render, show
from rollproof.cli.options import (
    change_option,
    evidence_option,
    governed_policy,
    id_argument,
    json_option,
    key_option,
    now,
    path_option,
    policy_option,
)

if TYPE_CHECKING:
    from rollproof.core.policy import Policy
    from rollproof.governance.events import NewEvent
    from rollproof.governance.store import LedgerStore


def _store(policy: Policy) -> LedgerStore:
    from rollproof.governance.store import open_ledger

    return open_ledger(policy.governed().ledger)


def _pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key.strip() or not text.strip():
            raise click.UsageError(f"{what} must be ID=TEXT, got {value!r}")
        if key.strip() in pairs:
            raise click.UsageError(f"{what} {key.strip()!r} given twice")
        pairs[key.strip()] = text.strip()
    return pairs


def _append(policy: Policy, *events: NewEvent) -> None:
    """Append `events` to the policy's ledger in one transaction; print each one's position."""
    appended = _store(policy).append_events(list(events), now=now())
    show(*(f"ledger event {event.seq}: {event.kind}" for event in appended))


@cli.command()
@path_option(
    "--dir", "directory", default=Path(), help="Where to write rollproof.toml (default: here)."
)
@path_option(
    "--executor-key",
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
@click.option(
    "--ledger",
    "ledger_at",
    default=None,
    metavar="PATH|DSN",
    help="Where the ledger lives: a path relative to rollproof.toml or a postgresql:// DSN "
    "for a team's shared ledger (default: .rollproof/ledger.db).",
)
def init(
    directory: Path,
    executor_key: Path | None,
    operators: tuple[str, ...],
    production: tuple[str, ...],
    ci_triggers: tuple[str, ...],
    ledger_at: str | None,
) -> None:
    """Write a commented, governed rollproof.toml and create its ledger (never overwrites)."""
    from rollproof.governance.workspace import init_workspace

    made = init_workspace(
        directory,
        executor=executor_key,
        operators={k: Path(v) for k, v in _pairs(operators, "--operator").items()},
        production=list(production),
        ci_triggers=list(ci_triggers) or None,
        ledger=ledger_at,
        now=now(),
    )
    pinned = f"validator pinned {made.pinned}" if made.pinned else "existing ledger kept"
    show(f"policy: {made.policy}", f"ledger: {made.ledger} ({pinned})")


@cli.group()
def ledger() -> None:
    """The hash-chained governance ledger: verify, fold, checkpoint, pin."""


@ledger.command("verify")
@policy_option()
def ledger_verify(policy_path: Path | None) -> None:
    """Re-derive every hash from the stored bytes; refuse a ledger that does not extend the
    newest trusted signed checkpoint (exit 1)."""
    from rollproof.governance.preflight import trusted_checkpoint
    from rollproof.governance.state import fold

    policy = governed_policy(policy_path)
    checkpoint = trusted_checkpoint(policy.governed())
    store = _store(policy)
    verified = store.read_verified(trusted_checkpoint=checkpoint)
    state = fold(verified.events)
    anchored = (
        f"extends the signed checkpoint at {checkpoint.size}"
        if checkpoint is not None
        else "no signed checkpoint yet (rollproof ledger checkpoint)"
    )
    show(
        f"VERIFIED {store.where}: {verified.head.size} events, head "
        f"{verified.head.hash}; folds through {state.through}; {anchored}"
    )


@ledger.command("fold")
@click.option("--through", type=int, default=None, metavar="N", help="Fold events 1..N only.")
@json_option("Print the state as JSON.")
@policy_option()
def ledger_fold(through: int | None, as_json: bool, policy_path: Path | None) -> None:
    """Print the governance state after events 1..N (default: the head)."""
    from rollproof.governance.preflight import trusted_checkpoint
    from rollproof.governance.state import fold
    from rollproof.governance.views import state_json, state_lines

    policy = governed_policy(policy_path)
    verified = _store(policy).read_verified(
        trusted_checkpoint=trusted_checkpoint(policy.governed())
    )
    state = fold(verified.events, through=through)
    render(as_json, lambda: state_json(state), state_lines(state), ascii_json=True)


@ledger.command("checkpoint")
@key_option("An operator's private key.")
@policy_option()
def ledger_checkpoint(key_path: Path, policy_path: Path | None) -> None:
    """Sign the verified head (size and hash) into the policy's checkpoint file."""
    from rollproof.governance.issuance import operator_key

    policy = governed_policy(policy_path)
    gov = policy.governed()
    key, name = operator_key(gov, key_path)
    made = _store(policy).write_checkpoint(key, gov.checkpoint, now=now())
    show(f"checkpoint {gov.checkpoint}: size {made.size}, head {made.head}, signed by {name}")


@ledger.command("pin")
@key_option("An operator's private key (the pin is signed).")
@policy_option()
def ledger_pin(key_path: Path, policy_path: Path | None) -> None:
    """Pin the running validator's hash in the ledger (after an upgrade), signed."""
    from rollproof.governance.issuance import operator_key
    from rollproof.governance.rules_decisions import pin_validator
    from rollproof.verify.pin import validator_sha256

    policy = governed_policy(policy_path)
    key, name = operator_key(policy.governed(), key_path)
    _append(policy, pin_validator(validator_sha256(), key=key))
    show(f"validator {validator_sha256()} pinned by {name}")


@cli.group()
def ticket() -> None:
    """Tickets in the ledger: open, update, close."""


@ticket.command("open")
@id_argument("ticket_id")
@click.option("--title", required=True)
@change_option(required=False)
@policy_option()
def ticket_open(
    ticket_id: str, title: str, change_id: str | None, policy_path: Path | None
) -> None:
    """Open ticket ID."""
    from rollproof.governance.rules_tickets import open_ticket

    _append(governed_policy(policy_path), open_ticket(ticket_id, title, change_id=change_id))


@ticket.command("update")
@id_argument("ticket_id")
@click.option("--title", default=None)
@click.option("--note", default=None)
@policy_option()
def ticket_update(
    ticket_id: str, title: str | None, note: str | None, policy_path: Path | None
) -> None:
    """Retitle ticket ID or add a note to it."""
    from rollproof.governance.rules_tickets import update_ticket

    if title is None and note is None:
        raise click.UsageError("give --title or --note")
    _append(governed_policy(policy_path), update_ticket(ticket_id, title=title, note=note))


@ticket.command("close")
@id_argument("ticket_id")
@click.option("--reason", required=True)
@policy_option()
def ticket_close(ticket_id: str, reason: str, policy_path: Path | None) -> None:
    """Close ticket ID (only once every blocker filed against it is closed)."""
    from rollproof.governance.rules_tickets import close_ticket

    _append(governed_policy(policy_path), close_ticket(ticket_id, reason=reason))


@cli.group()
def blocker() -> None:
    """Blockers in the ledger. States move only with evidence: there is no --state."""


@blocker.command("open")
@id_argument("blocker_id")
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
@change_option(required=False)
@policy_option()
def blocker_open(
    blocker_id: str,
    title: str,
    conditions: tuple[str, ...],
    ticket_id: str | None,
    change_id: str | None,
    policy_path: Path | None,
) -> None:
    """Open blocker ID with its discharge conditions."""
    from rollproof.governance.rules_tickets import open_blocker

    event = open_blocker(
        blocker_id,
        title,
        _pairs(conditions, "--condition"),
        ticket_id=ticket_id,
        change_id=change_id,
    )
    _append(governed_policy(policy_path), event)


@blocker.command("update")
@id_argument("blocker_id")
@click.option("--title", default=None)
@click.option("--add-condition", "added", multiple=True, metavar="ID=TEXT")
@click.option("--note", default=None)
@click.option("--discharge", "condition", default=None, metavar="CONDITION")
@evidence_option(
    "With --discharge: the validated packet (recorded PASS in the ledger) that discharges it."
)
@policy_option()
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
    from rollproof.governance.rules_tickets import discharge_condition, update_blocker
    from rollproof.verify.reader import validate_packet

    if (condition is None) != (evidence is None):
        raise click.UsageError("--discharge and --evidence go together")
    policy = governed_policy(policy_path)
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
    _append(policy, *events)


@blocker.command("close")
@id_argument("blocker_id")
@click.option("--reason", required=True)
@policy_option()
def blocker_close(blocker_id: str, reason: str, policy_path: Path | None) -> None:
    """Close blocker ID (only once every condition is discharged with evidence)."""
    from rollproof.governance.rules_tickets import close_blocker

    _append(governed_policy(policy_path), close_blocker(blocker_id, reason=reason))
