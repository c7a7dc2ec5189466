"""`rollproof status`: the checkpoint of one change, or the current state of every change.

    change_status(policy, change_id, now=...) -> Status     checkpoint.json and checkpoint.md
    all_status(policy, now=...) -> Status                   current-state.json and .md
    write_status(status, out_dir) -> [paths]

The IO around `checkpoint.py`'s pure documents: the ledger is read and verified from its bytes
(against the newest trusted signed checkpoint) and its policy in force governs (`in_force.py`),
and each change's newest recorded packet is validated again **now**, from disk, by the
validator; a packet that is missing, invalid, or holds
another tree than the ledger recorded makes the change BLOCKED, whatever the ledger says.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rollproof.core.errors import RollproofError, UsageError
from rollproof.core.policy import Policy
from rollproof.evidence.write import atomic_write_bytes
from rollproof.governance.checkpoint import (
    Evidence,
    change_checkpoint,
    current_state,
    render_checkpoint,
    render_current_state,
)
from rollproof.governance.flow import packet_location
from rollproof.governance.in_force import load_in_force
from rollproof.governance.lanes import changes_in, latest_rehearsal
from rollproof.governance.records import RehearsalRecord

_SAFE = str.maketrans({c: "_" for c in "/\\:@+"})


@dataclass(frozen=True, slots=True)
class Status:
    name: str
    """The file stem: `checkpoint-<change>` or `current-state`."""
    doc: Mapping[str, Any]
    markdown: str


def load_evidence(policy: Policy, record: RehearsalRecord) -> Evidence:
    """The recorded packet as the validator finds it now (with the executor's key trusted and a
    signature required when the policy in force requires signed evidence)."""
    from rollproof.verify.attest import TrustedKey
    from rollproof.verify.reader import check_packet

    if record.packet is None:
        return Evidence(record, None, None, "the ledger records no packet path")
    path = packet_location(policy, record.packet)
    gov = policy.governed()
    signed = gov.signed_evidence and gov.executor is not None
    try:
        report = (
            check_packet(
                path,
                trusted_keys=[TrustedKey(gov.executor.raw)],
                require_signature=True,
            )
            if signed and gov.executor is not None
            else check_packet(path)
        )
    except RollproofError as e:
        return Evidence(record, Path(record.packet), None, str(e))
    if report.packet is None:
        return Evidence(record, Path(record.packet), None, str(report.findings[0]))
    if report.packet.tree_hash != record.packet_tree_hash:
        return Evidence(
            record,
            Path(record.packet),
            None,
            f"it holds tree {report.packet.tree_hash}, the ledger recorded another",
        )
    return Evidence(record, Path(record.packet), report.packet)


def change_status(policy: Policy, change_id: str, *, now: datetime) -> Status:
    found = load_in_force(policy)
    policy, state, checkpoint = found.policy, found.state, found.checkpoint
    gov = policy.governed()
    if change_id not in changes_in(state):
        raise UsageError(f"the ledger has nothing about change {change_id!r}")
    record = latest_rehearsal(gov, state, change_id)
    evidence = None if record is None else load_evidence(policy, record)
    doc = change_checkpoint(gov, state, change_id, evidence, now=now, ledger_checkpoint=checkpoint)
    return Status(f"checkpoint-{change_id.translate(_SAFE)}", doc, render_checkpoint(doc))


def all_status(policy: Policy, *, now: datetime) -> Status:
    found = load_in_force(policy)
    policy, state = found.policy, found.state
    gov = policy.governed()
    evidences: dict[str, Evidence | None] = {}
    for change_id in changes_in(state):
        record = latest_rehearsal(gov, state, change_id)
        evidences[change_id] = None if record is None else load_evidence(policy, record)
    doc = current_state(gov, state, evidences, now=now)
    return Status("current-state", doc, render_current_state(doc))


def write_status(status: Status, out_dir: Path) -> tuple[Path, Path]:
    """Write `<name>.md` and `<name>.json` into `out_dir` (each atomically)."""
    md = out_dir / f"{status.name}.md"
    js = out_dir / f"{status.name}.json"
    atomic_write_bytes(md, status.markdown.encode("utf-8"))
    atomic_write_bytes(js, (json.dumps(status.doc, indent=2, sort_keys=True) + "\n").encode())
    return md, js
