"""Governance: the hash-chained ledger, its state, operator keys and single-use grants, and the
governed flow built on them (docs/governance.md).

    events.py     event kinds, the leaf-hash rule, the one UTC time spelling (pure)
    state.py      the fold of events 1..N and the rule each event kind obeys (pure), from:
      records.py          the folded state's types: LedgerState, its records, LedgerRuleError
      fold_state.py       the working state the rules read and write, their shared lookups
      bodies.py           every event kind's body schema, parsed strictly before any rule
      rules_tickets.py    tickets and blockers: conditions discharged only with evidence
      rules_grants.py     grants consumed: id, nonce and payload each once, for ever
      rules_decisions.py  decisions, holds, validator pins, and the operator signatures on them
      rules_lanes.py      rehearsals, preflights, packet checks, lane refusals
      rules_policy.py     the policy in force: `policy.set`, first at event 1, then signed by a
                          quorum of the operators in force
    evidence.py   what counts as evidence: the one predicate every path asks (pure)
    in_force.py   the policy in force, read from the folded ledger (never the file alone);
                  the file compared with it; `policy adopt`
    ledger.py     the SQLite store, chain verification, signed checkpoints (IO around a pure core)
    store.py      which store a policy names: SQLite file or PostgreSQL (engines/postgres_ledger)
    keys.py       Ed25519 key files and key ids (the one key module, packet signing included)
    envelope.py   DSSE envelopes for grants and checkpoints (PAE shared with packet attestations)
    grants.py     issuing, checking (pure) and consuming (ledger) grants
    lanes.py      the ladder: evidence, blockers by lane, gates, HOLD, APPLY_NOW (pure)
    preflight.py  the checks before a run, read from the ledger and recorded in it
    decision.py   the decision packet (pure) and an operator's signed decision
    checkpoint.py the checkpoint and the current state, from ledger and validated packets (pure)
    issuance.py   an operator issues or co-signs a grant file against the policy
    flow.py       the governed rehearsal and the gate into a production lane
    status.py     `rollproof status`: the checkpoint with the packets validated now
    workspace.py  `rollproof init`
    views.py      the folded state as text and JSON

The flow modules (preflight and after) are imported from their modules, not from this package,
so that `rollproof.core.policy` (which reads key files through `keys.py`) can load without them.

Errors, all `RollproofError`s:

    CheckFailedError                       exit 1
    ├── LedgerIntegrityError               the ledger's bytes do not verify (seq names the event)
    │   └── LedgerRollbackError            it does not extend the trusted checkpoint
    ├── LedgerRuleError                    an event breaks a governance rule
    │   └── AlreadyConsumedError           a grant id, nonce or payload was consumed before
    ├── CheckpointError                    a checkpoint malformed or not signed by a trusted key
    └── NoPolicyInForceError (in_force.py) the ledger records no policy.set
    UsageError                             exit 2
    ├── LedgerNotFoundError, LedgerRangeError, KeyFileError, GrantIssueError
    HeldError                              exit 3
    ├── LaneRefusedError (flow.py)         a lane not entered; recorded as lane.refused
    ├── PreflightBlockedError (flow.py)    preflight FAIL, or an UNKNOWN the lane does not allow
    ├── DecisionRefusedError (decision.py) not an operator's key, or no grant behind a PROCEED
    ├── PolicyAdoptionRefusedError (in_force.py)  keys not operators in force, or below quorum
    └── GrantRefusedError                  every refusal; `reason` is a RefusalReason
        ├── GrantMalformedError, GrantUnknownKeyError, GrantSignatureError,
        ├── GrantSelfSignedError, GrantAudienceError, GrantLaneError, GrantChangeError,
        └── GrantSourceError, GrantEvidenceError, GrantNotYetValidError, GrantExpiredError,
            GrantReplayError
"""

from rollproof.core.keys import (
    KeyFileError,
    PublicKey,
    SigningKey,
    load_public_key,
    load_signing_key,
    short_key_id,
)
from rollproof.governance.events import Event, EventKind, NewEvent, format_utc, leaf_hash
from rollproof.governance.grants import (
    ConsumedGrant,
    Grant,
    GrantAudienceError,
    GrantChangeError,
    GrantEvidenceError,
    GrantExpiredError,
    GrantIssueError,
    GrantLaneError,
    GrantMalformedError,
    GrantNotYetValidError,
    GrantRefusedError,
    GrantReplayError,
    GrantSelfSignedError,
    GrantSignatureError,
    GrantSourceError,
    GrantUnknownKeyError,
    RefusalReason,
    check_grant,
    consume_grant,
    cosign_grant,
    issue_grant,
)
from rollproof.governance.keys import generate_key_pair
from rollproof.governance.ledger import (
    DEFAULT_LEDGER_PATH,
    Checkpoint,
    CheckpointError,
    LedgerHead,
    LedgerIntegrityError,
    LedgerNotFoundError,
    LedgerRollbackError,
    VerifiedLedger,
    append_events,
    fold_ledger,
    load_checkpoint,
    read_verified,
    verify_chain,
    write_checkpoint,
)
from rollproof.governance.records import (
    Blocker,
    BlockerState,
    Condition,
    Decision,
    LedgerRuleError,
    LedgerState,
    Ticket,
    TicketState,
)
from rollproof.governance.rules_decisions import (
    pin_validator,
    record_decision,
    release_hold,
    set_hold,
)
from rollproof.governance.rules_grants import AlreadyConsumedError
from rollproof.governance.rules_lanes import record_rehearsal
from rollproof.governance.rules_tickets import (
    classify_blocker,
    close_blocker,
    close_ticket,
    discharge_condition,
    open_blocker,
    open_ticket,
    record_unknown,
    update_blocker,
    update_ticket,
)
from rollproof.governance.state import LedgerRangeError, fold

__all__ = [
    "DEFAULT_LEDGER_PATH",
    "AlreadyConsumedError",
    "Blocker",
    "BlockerState",
    "Checkpoint",
    "CheckpointError",
    "Condition",
    "ConsumedGrant",
    "Decision",
    "Event",
    "EventKind",
    "Grant",
    "GrantAudienceError",
    "GrantChangeError",
    "GrantEvidenceError",
    "GrantExpiredError",
    "GrantIssueError",
    "GrantLaneError",
    "GrantMalformedError",
    "GrantNotYetValidError",
    "GrantRefusedError",
    "GrantReplayError",
    "GrantSelfSignedError",
    "GrantSignatureError",
    "GrantSourceError",
    "GrantUnknownKeyError",
    "KeyFileError",
    "LedgerHead",
    "LedgerIntegrityError",
    "LedgerNotFoundError",
    "LedgerRangeError",
    "LedgerRollbackError",
    "LedgerRuleError",
    "LedgerState",
    "NewEvent",
    "PublicKey",
    "RefusalReason",
    "SigningKey",
    "Ticket",
    "TicketState",
    "VerifiedLedger",
    "append_events",
    "check_grant",
    "classify_blocker",
    "close_blocker",
    "close_ticket",
    "consume_grant",
    "cosign_grant",
    "discharge_condition",
    "fold",
    "fold_ledger",
    "format_utc",
    "generate_key_pair",
    "issue_grant",
    "leaf_hash",
    "load_checkpoint",
    "load_public_key",
    "load_signing_key",
    "open_blocker",
    "open_ticket",
    "pin_validator",
    "read_verified",
    "record_decision",
    "record_rehearsal",
    "record_unknown",
    "release_hold",
    "set_hold",
    "short_key_id",
    "update_blocker",
    "update_ticket",
    "verify_chain",
    "write_checkpoint",
]
