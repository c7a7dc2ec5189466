"""Governance: the hash-chained ledger, its state, operator keys and single-use grants.

    events.py    event kinds, the leaf-hash rule, the one UTC time spelling (pure)
    state.py     the fold of events 1..N and every rule an event must obey (pure)
    ledger.py    the SQLite store, chain verification, signed checkpoints (IO around a pure core)
    keys.py      Ed25519 key files and key ids
    envelope.py  DSSE envelopes for grants and checkpoints (PAE shared with packet attestations)
    grants.py    issuing, checking (pure) and consuming (ledger) grants

Errors, all `RollproofError`s:

    CheckFailedError                       exit 1
    ├── LedgerIntegrityError               the ledger's bytes do not verify (seq names the event)
    │   └── LedgerRollbackError            it does not extend the trusted checkpoint
    ├── LedgerRuleError                    an event breaks a governance rule
    │   └── AlreadyConsumedError           a grant id, nonce or payload was consumed before
    └── CheckpointError                    a checkpoint malformed or not signed by a trusted key
    UsageError                             exit 2
    ├── LedgerNotFoundError, LedgerRangeError, KeyFileError, GrantIssueError
    HeldError                              exit 3
    └── GrantRefusedError                  every refusal; `reason` is a RefusalReason
        ├── GrantMalformedError, GrantUnknownKeyError, GrantSignatureError,
        ├── GrantSelfSignedError, GrantAudienceError, GrantLaneError, GrantChangeError,
        └── GrantSourceError, GrantEvidenceError, GrantNotYetValidError, GrantExpiredError,
            GrantReplayError
"""

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
from rollproof.governance.keys import (
    KeyFileError,
    PublicKey,
    SigningKey,
    generate_key_pair,
    load_public_key,
    load_signing_key,
    short_key_id,
)
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
from rollproof.governance.state import (
    AlreadyConsumedError,
    Blocker,
    BlockerState,
    Condition,
    Decision,
    LedgerRangeError,
    LedgerRuleError,
    LedgerState,
    Ticket,
    TicketState,
    classify_blocker,
    close_blocker,
    close_ticket,
    discharge_condition,
    fold,
    open_blocker,
    open_ticket,
    pin_validator,
    record_decision,
    record_rehearsal,
    record_unknown,
    release_hold,
    set_hold,
    update_blocker,
    update_ticket,
)

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
