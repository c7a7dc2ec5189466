"""Commands about the policy in force: which one governs, and adopting a changed file."""

from __future__ import annotations

from pathlib import Path

import click

from rollproof.cli.app import cli
from rollproof.cli.console import render, show
from rollproof.cli.options import PATH, governed_policy, json_option, now, policy_option


@cli.group()
def policy() -> None:
    """The policy in force: the ledger's, not the file's. Editing rollproof.toml changes
    nothing until a quorum of the operators in force adopts it."""


@policy.command("status")
@json_option("Print the comparison as JSON.")
@policy_option()
def policy_status(as_json: bool, policy_path: Path | None) -> None:
    """Show the policy in force (ledger event, sha256, signers) and whether the file is it.

    Exit 0 when the file is the policy in force, 3 when it differs (it governs nothing)."""
    from rollproof.governance.in_force import file_matches, load_in_force

    file_policy = governed_policy(policy_path)
    found = load_in_force(file_policy)
    record = found.state.policy
    assert record is not None  # load_in_force raised otherwise
    same, detail = file_matches(file_policy, found.state)
    gov = found.policy.governed()
    doc = {
        "in_force": {
            "seq": record.seq,
            "sha256": record.sha256,
            "signers": [gov.operator_name(k) or k for k in record.signers],
            "operators": sorted(gov.operators),
            "quorum": record.quorum,
        },
        "file_is_in_force": same,
        "detail": detail,
    }
    lines = [
        f"policy in force: ledger event {record.seq}, sha256 {record.sha256}",
        f"operators: {', '.join(sorted(gov.operators)) or 'none'}; a change needs "
        f"{record.quorum} of their signatures",
        ("SAME: " if same else "DIFFERS: ") + detail,
    ]
    render(as_json, lambda: doc, lines, ascii_json=True)
    raise SystemExit(0 if same else 3)


@policy.command("adopt")
@click.option(
    "--key",
    "key_paths",
    multiple=True,
    required=True,
    type=PATH,
    metavar="OPKEY",
    help="A private key of an operator of the policy in force; repeat it for each signer.",
)
@policy_option()
def policy_adopt(key_paths: tuple[Path, ...], policy_path: Path | None) -> None:
    """Make the policy file the policy in force, signed by operators of the policy in force.

    The file's canonical content (keys resolved to their bytes) and its sha256 are appended as
    a `policy.set` ledger event. It needs as many distinct signatures by operators of the policy
    in force as the most any lane's grant needs (all of them when there are fewer); a key that
    is not one of them is refused (exit 3), whatever the file lists. Operators added by the file
    can act only once this is recorded.
    """
    from rollproof.core.keys import load_signing_key
    from rollproof.governance.in_force import adopt_file

    file_policy = governed_policy(policy_path)
    keys = [load_signing_key(p) for p in key_paths]
    event = adopt_file(file_policy, keys, now=now())
    show(f"ledger event {event.seq}: policy.set; the policy file is now the policy in force")
