"""The governance ledger: an append-only, hash-chained SQLite file, and its signed checkpoints.

One table row per event: `seq` (1..N), `time`, `kind`, `body` (RFC 8785 canonical JSON, a BLOB),
`prev_hash`, `hash`; the hash rule is in `rollproof.governance.events`. A second table,
`consumed_grants(grant_id UNIQUE, nonce UNIQUE, payload_sha256 UNIQUE, seq UNIQUE)`, holds one
row per `grant.consumed` event, written in the same transaction as that event.

`verify_stored` is the pure verification core (rows in, `VerifiedLedger` out, or the first bad
event named); the functions around it only read and write SQLite. Invariants, each against a
named attack or failure:

* appends run in one `BEGIN IMMEDIATE` transaction that re-verifies the chain, folds the state
  (`state.py`), refuses an event that breaks a rule, inserts and commits: concurrent writers are
  serialised, never fork the chain, and never commit an event the fold would refuse;
* seq is the primary key and prev_hash and hash are UNIQUE, and an INSERT trigger refuses a row
  that does not extend the head: even a writer that bypasses this module cannot fork or gap it;
* UPDATE and DELETE triggers RAISE on every table: rewriting history needs a deliberate schema
  change, which verification detects (the schema must be exactly rollproof's);
* verification rehashes the stored body bytes (not a re-serialisation), and refuses a body that
  is not canonical JSON, an unknown kind, a time not in the one UTC spelling, a gap, a link to
  the wrong predecessor, and a `consumed_grants` table that disagrees with the events (a deleted
  row there would re-open a grant for replay);
* a chain that verifies proves only internal consistency: whoever can rewrite the file can
  recompute every hash, restore an older copy, or truncate it. A **signed checkpoint**, kept
  outside the database, anchors it. The check: the ledger's size >= checkpoint.size, and the hash
  of event checkpoint.size (GENESIS for 0) == checkpoint.head; otherwise `LedgerRollbackError`;
* a checkpoint file is only replaced by one that extends it (`write_checkpoint`).

Checkpoint file: a DSSE envelope (`envelope.py`), payloadType
`application/vnd.rollproof.ledger-checkpoint+json`, payload the canonical JSON
`{"schema": "rollproof/ledger-checkpoint/v1", "size": N, "head": <64 hex>, "time": <UTC>}`.

Every append re-reads and re-folds the whole ledger: a governance ledger holds thousands of
events, not millions, and the guarantee is worth more than the milliseconds.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rollproof.core.canonical import canonical_json
from rollproof.core.errors import CheckFailedError, EnvironmentProblemError, UsageError
from rollproof.core.keys import PublicKey, SigningKey
from rollproof.core.strictjson import StrictJsonError, loads_strict
from rollproof.evidence.write import atomic_write_bytes
from rollproof.governance.envelope import (
    EnvelopeError,
    check_signatures,
    encode_envelope,
    parse_envelope,
    sign_envelope,
)
from rollproof.governance.events import (
    GENESIS,
    HEX64,
    Event,
    EventKind,
    NewEvent,
    body_bytes,
    format_utc,
    leaf_hash,
    parse_utc,
)
from rollproof.governance.records import LedgerState
from rollproof.governance.rules_grants import AlreadyConsumedError
from rollproof.governance.state import fold, fold_events

DEFAULT_LEDGER_PATH = Path(".rollproof") / "ledger.db"
LEDGER_FORMAT = "rollproof/ledger/v1"
CHECKPOINT_PAYLOAD_TYPE = "application/vnd.rollproof.ledger-checkpoint+json"
CHECKPOINT_SCHEMA = "rollproof/ledger-checkpoint/v1"
BUSY_TIMEOUT_S = 30.0

_SCHEMA: tuple[str, ...] = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) STRICT",
    """CREATE TABLE events (
    seq INTEGER PRIMARY KEY NOT NULL CHECK (seq >= 1),
    time TEXT NOT NULL,
    kind TEXT NOT NULL,
    body BLOB NOT NULL,
    prev_hash TEXT NOT NULL UNIQUE CHECK (length(prev_hash) = 64),
    hash TEXT NOT NULL UNIQUE CHECK (length(hash) = 64)
) STRICT""",
    """CREATE TABLE consumed_grants (
    grant_id TEXT NOT NULL UNIQUE,
    nonce TEXT NOT NULL UNIQUE,
    payload_sha256 TEXT NOT NULL UNIQUE,
    seq INTEGER NOT NULL UNIQUE
) STRICT""",
    f"""CREATE TRIGGER events_extend_head BEFORE INSERT ON events
WHEN NEW.seq IS NOT (SELECT COALESCE(MAX(seq), 0) + 1 FROM events)
  OR NEW.prev_hash IS NOT COALESCE((SELECT hash FROM events WHERE seq = NEW.seq - 1), '{GENESIS}')
BEGIN SELECT RAISE(ABORT, 'ledger events must extend the head'); END""",
    """CREATE TRIGGER consumed_grants_cite_event BEFORE INSERT ON consumed_grants
WHEN (SELECT kind FROM events WHERE seq = NEW.seq) IS NOT 'grant.consumed'
BEGIN SELECT RAISE(ABORT, 'a consumed grant must cite its grant.consumed event'); END""",
    *(
        f"""CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table}
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: {op} on {table} refused'); END"""
        for table in ("events", "consumed_grants", "meta")
        for op in ("UPDATE", "DELETE")
    ),
)

SchemaRow = tuple[str, str, str, str | None]


def _schema_of(conn: sqlite3.Connection) -> tuple[SchemaRow, ...]:
    rows = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")
    return tuple((str(t), str(n), str(tb), s) for t, n, tb, s in rows)


def _expected_schema() -> tuple[SchemaRow, ...]:
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        for statement in _SCHEMA:
            conn.execute(statement)
        return _schema_of(conn)


EXPECTED_SCHEMA = _expected_schema()


# --- errors ------------------------------------------------------------------------------------


class LedgerIntegrityError(CheckFailedError):
    """The ledger's bytes do not verify; `seq` names the first bad event when there is one."""

    def __init__(self, message: str, *, seq: int | None = None) -> None:
        self.seq = seq
        super().__init__(f"ledger event {seq}: {message}" if seq is not None else message)


class LedgerRollbackError(LedgerIntegrityError):
    """The ledger does not extend the trusted checkpoint: restored, truncated or forked."""


class LedgerNotFoundError(UsageError):
    """There is no ledger file where one was asked for."""


class CheckpointError(CheckFailedError):
    """A checkpoint file that is malformed or not signed by a trusted key."""


# --- values ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LedgerHead:
    size: int
    hash: str


@dataclass(frozen=True, slots=True)
class VerifiedLedger:
    head: LedgerHead
    events: tuple[Event, ...]


@dataclass(frozen=True, slots=True)
class StoredLedger:
    """The raw contents of a ledger file, as read and not yet trusted."""

    integrity: str
    schema: tuple[SchemaRow, ...]
    format: str | None
    rows: tuple[tuple[Any, ...], ...]
    consumed: tuple[tuple[Any, ...], ...]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    size: int
    head: str
    time: str
    signers: frozenset[str]


# --- the pure verification core ----------------------------------------------------------------


def _verify_row(row: tuple[Any, ...], seq: int, prev: str) -> tuple[Event, Any]:
    got_seq, time, kind, body, prev_hash, stored_hash = row
    if got_seq != seq:
        # Stops a deleted event from going unnoticed: seq must count 1, 2, 3 ...
        raise LedgerIntegrityError(
            f"missing (the next stored event is {got_seq}): an event was deleted", seq=seq
        )
    if not all(isinstance(v, str) for v in (time, kind, prev_hash, stored_hash)) or not isinstance(
        body, bytes
    ):
        raise LedgerIntegrityError("a column has the wrong type", seq=seq)
    if prev_hash != prev:
        # Stops reordering, deleting or splicing in events: each must name its predecessor.
        what = "genesis" if seq == 1 else f"the hash of event {seq - 1}"
        raise LedgerIntegrityError(
            f"prev_hash does not match {what} (events reordered, removed or forked)", seq=seq
        )
    if leaf_hash(seq=seq, time=time, kind=kind, body=body, prev_hash=prev_hash) != stored_hash:
        # Stops any edit of a stored byte: body, time, kind or the hash itself.
        raise LedgerIntegrityError(
            "hash does not match its contents (body, time, kind or hash altered)", seq=seq
        )
    try:
        parse_utc(time)
    except ValueError:
        raise LedgerIntegrityError("time is not an ISO-8601 UTC time", seq=seq) from None
    try:
        known = EventKind(kind)
    except ValueError:
        raise LedgerIntegrityError(f"unknown kind {kind!r}", seq=seq) from None
    try:
        parsed = loads_strict(body)
    except StrictJsonError as e:
        raise LedgerIntegrityError(f"body is not strict JSON: {e}", seq=seq) from e
    # Stops two byte strings meaning one body: readers and the hash must agree on the bytes.
    if not isinstance(parsed, dict) or canonical_json(parsed) != body:
        raise LedgerIntegrityError("body is not a canonical JSON object", seq=seq)
    event = Event(seq, time, known, body, prev_hash, stored_hash)
    return event, parsed


def verify_stored(
    stored: StoredLedger, *, trusted_checkpoint: Checkpoint | None = None
) -> VerifiedLedger:
    """Verify a ledger's raw contents; raise on the first thing that is wrong."""
    if stored.integrity != "ok":
        raise LedgerIntegrityError(f"the SQLite file is damaged: {stored.integrity}")
    if stored.schema != EXPECTED_SCHEMA:
        # Stops a ledger whose append-only triggers or constraints were dropped or changed.
        have = {r[1]: r for r in stored.schema}
        want = {r[1]: r for r in EXPECTED_SCHEMA}
        missing = sorted(set(want) - set(have))
        extra = sorted(set(have) - set(want))
        altered = sorted(n for n in set(want) & set(have) if want[n] != have[n])
        raise LedgerIntegrityError(
            "not a rollproof ledger, or its schema was altered: "
            f"missing {missing}, unexpected {extra}, altered {altered}"
        )
    if stored.format != LEDGER_FORMAT:
        raise LedgerIntegrityError(f"unknown ledger format {stored.format!r}")
    events: list[Event] = []
    consumed_in_events: set[tuple[Any, ...]] = set()
    prev = GENESIS
    for index, row in enumerate(stored.rows):
        event, body = _verify_row(row, index + 1, prev)
        if event.kind is EventKind.GRANT_CONSUMED:
            consumed_in_events.add(
                (body.get("grant_id"), body.get("nonce"), body.get("payload_sha256"), event.seq)
            )
        events.append(event)
        prev = event.hash
    if consumed_in_events != set(stored.consumed):
        # Stops a replay enabled by deleting (or pre-filling) a consumed_grants row.
        raise LedgerIntegrityError(
            "the consumed_grants table does not match the grant.consumed events"
        )
    head = LedgerHead(len(events), prev)
    if trusted_checkpoint is not None:
        _check_extends(events, head, trusted_checkpoint)
    return VerifiedLedger(head, tuple(events))


def _check_extends(events: Sequence[Event], head: LedgerHead, cp: Checkpoint) -> None:
    if head.size < cp.size:
        # Stops a restored older copy of the file, or a truncated one.
        raise LedgerRollbackError(
            f"the ledger has {head.size} events but the trusted checkpoint covers {cp.size}: "
            "an older copy was restored or the ledger was truncated"
        )
    at = GENESIS if cp.size == 0 else events[cp.size - 1].hash
    if at != cp.head:
        # Stops a forked or rewritten history with the hashes recomputed.
        raise LedgerRollbackError(
            f"event {cp.size} does not match the trusted checkpoint's head: "
            "the ledger was forked or rewritten",
            seq=cp.size or None,
        )


# --- SQLite ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _translated(path: Path) -> Iterator[None]:
    """Translate SQLite errors at the one boundary that talks to SQLite."""
    try:
        yield
    except sqlite3.OperationalError as e:
        raise EnvironmentProblemError(f"ledger {path}: {e}") from e
    except sqlite3.DatabaseError as e:
        raise LedgerIntegrityError(f"ledger {path} cannot be read: {e}") from e


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    if readonly:
        uri = f"{path.absolute().as_uri()}?mode=ro"
        return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    path.parent.mkdir(parents=True, exist_ok=True)
    return sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)


def _read_stored(conn: sqlite3.Connection) -> StoredLedger:
    """Read everything verification needs; the caller holds a transaction for a consistent view."""
    integrity = "; ".join(str(r[0]) for r in conn.execute("PRAGMA quick_check"))
    schema = _schema_of(conn)
    if schema != EXPECTED_SCHEMA:
        return StoredLedger(integrity, schema, None, (), ())
    fmt = conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
    rows = conn.execute(
        "SELECT seq, time, kind, body, prev_hash, hash FROM events ORDER BY seq"
    ).fetchall()
    consumed = conn.execute(
        "SELECT grant_id, nonce, payload_sha256, seq FROM consumed_grants ORDER BY seq"
    ).fetchall()
    return StoredLedger(
        integrity,
        schema,
        None if fmt is None else str(fmt[0]),
        tuple(tuple(r) for r in rows),
        tuple(tuple(r) for r in consumed),
    )


def read_stored(path: Path) -> StoredLedger:
    """The raw contents of the ledger at `path`, read in one read-only transaction."""
    if not path.is_file():
        raise LedgerNotFoundError(f"no ledger at {path}")
    with _translated(path), contextlib.closing(_connect(path, readonly=True)) as conn:
        conn.execute("BEGIN")
        try:
            return _read_stored(conn)
        finally:
            conn.execute("ROLLBACK")


def read_verified(path: Path, *, trusted_checkpoint: Checkpoint | None = None) -> VerifiedLedger:
    return verify_stored(read_stored(path), trusted_checkpoint=trusted_checkpoint)


def verify_chain(path: Path, *, trusted_checkpoint: Checkpoint | None = None) -> LedgerHead:
    """Re-derive every hash of the ledger at `path`; the head, or the first bad event named."""
    return read_verified(path, trusted_checkpoint=trusted_checkpoint).head


def fold_ledger(
    path: Path, *, through: int | None = None, trusted_checkpoint: Checkpoint | None = None
) -> LedgerState:
    """Verify the ledger at `path`, then fold it through `through` (its head when None)."""
    return fold(read_verified(path, trusted_checkpoint=trusted_checkpoint).events, through=through)


Builder = Callable[[LedgerState], Sequence[NewEvent]]


def _insert(conn: sqlite3.Connection, event: Event, body: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO events (seq, time, kind, body, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?)",
        (event.seq, event.time, str(event.kind), event.body, event.prev_hash, event.hash),
    )
    if event.kind is not EventKind.GRANT_CONSUMED:
        return
    keys = ("grant_id", "nonce", "payload_sha256")
    values = [body.get(k) for k in keys]
    if not all(isinstance(v, str) for v in values):
        return  # a malformed body: the fold refuses it next, before anything commits
    try:
        # The single-use guarantee: UNIQUE indexes checked in the transaction that writes the
        # event, so two consumers cannot both pass a check and both write (no check-then-write).
        conn.execute(
            "INSERT INTO consumed_grants (grant_id, nonce, payload_sha256, seq) "
            "VALUES (?, ?, ?, ?)",
            (*values, event.seq),
        )
    except sqlite3.IntegrityError as e:
        # The index has decided; this read only names which value was seen before.
        field = next(
            (
                k
                for k, v in zip(keys, values, strict=True)
                if conn.execute(f"SELECT 1 FROM consumed_grants WHERE {k} = ?", (v,)).fetchone()
            ),
            "grant_id",
        )
        raise AlreadyConsumedError(event.seq, field, str(body[field])) from e


def append_events(
    path: Path, events: Sequence[NewEvent] | Builder, *, now: datetime
) -> tuple[Event, ...]:
    """Append `events` (or what `events(state)` builds from the current state) atomically.

    Creates the ledger if `path` does not exist. All events get the time `now`. Grant events
    are refused here (see `record_grant_event`). Raises `LedgerIntegrityError` if the stored
    ledger does not verify and `LedgerRuleError` if a new event breaks a rule; nothing is
    written then.
    """
    return _append(path, events, now=now, allowed=_GENERAL_KINDS)


def record_grant_event(path: Path, event: NewEvent, *, now: datetime) -> Event:
    """Append one `grant.consumed` or `grant.refused` event; `grants.py` is its only caller.

    Kept apart from `append_events` so that no other code path can write a consumption that
    did not go through `consume_grant`'s signature and scope checks.
    """
    (appended,) = _append(path, [event], now=now, allowed=_GRANT_KINDS)
    return appended


_GRANT_KINDS = frozenset({EventKind.GRANT_CONSUMED, EventKind.GRANT_REFUSED})
_GENERAL_KINDS = frozenset(EventKind) - _GRANT_KINDS


def _append(
    path: Path,
    events: Sequence[NewEvent] | Builder,
    *,
    now: datetime,
    allowed: frozenset[EventKind],
) -> tuple[Event, ...]:
    time = format_utc(now)
    with _translated(path), contextlib.closing(_connect(path, readonly=False)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            appended = _append_locked(conn, events, time, allowed)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    return appended


def _append_locked(
    conn: sqlite3.Connection,
    events: Sequence[NewEvent] | Builder,
    time: str,
    allowed: frozenset[EventKind],
) -> tuple[Event, ...]:
    if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute("INSERT INTO meta (key, value) VALUES ('format', ?)", (LEDGER_FORMAT,))
    return chain_events(
        _read_stored(conn), events, time, allowed, lambda e, body: _insert(conn, e, body)
    )


def chain_events(
    stored: StoredLedger,
    events: Sequence[NewEvent] | Builder,
    time: str,
    allowed: frozenset[EventKind],
    insert: Callable[[Event, dict[str, Any]], None],
) -> tuple[Event, ...]:
    """Verify the stored chain, then hash and insert each new event after it (any store).

    The caller holds the store's append lock and transaction; `insert` writes one event in it.
    Each event is folded before the next is made, so a rule-breaking event raises before the
    caller commits anything.
    """
    verified = verify_stored(stored)
    folder = fold_events(verified.events)
    new = events(folder.state()) if callable(events) else events
    if not new:
        raise ValueError("nothing to append")
    appended: list[Event] = []
    prev, seq = verified.head.hash, verified.head.size
    for item in new:
        if item.kind not in allowed:
            raise ValueError(f"{item.kind} events are written by consume_grant only")
        seq += 1
        body = body_bytes(item.body)
        event = Event(
            seq,
            time,
            item.kind,
            body,
            prev,
            leaf_hash(seq=seq, time=time, kind=item.kind, body=body, prev_hash=prev),
        )
        insert(event, dict(item.body))
        folder.apply(event)  # refuses a rule-breaking event before COMMIT
        appended.append(event)
        prev = event.hash
    return tuple(appended)


# --- checkpoints -------------------------------------------------------------------------------


def parse_checkpoint(data: bytes, trusted_keys: Sequence[PublicKey]) -> Checkpoint:
    """Verify a checkpoint file's signature with `trusted_keys`, then read it."""
    try:
        envelope = parse_envelope(data, CHECKPOINT_PAYLOAD_TYPE)
    except EnvelopeError as e:
        raise CheckpointError(f"checkpoint is malformed: {e}") from e
    check = check_signatures(envelope, {k.key_id: k for k in trusted_keys})
    if check.invalid:
        raise CheckpointError("checkpoint has a signature by a trusted key that does not verify")
    if not check.verified:
        # Stops a checkpoint minted by whoever rewrote the ledger.
        raise CheckpointError("checkpoint is not signed by a trusted key")
    try:
        doc = loads_strict(envelope.payload)
    except StrictJsonError as e:
        raise CheckpointError(f"checkpoint payload is not strict JSON: {e}") from e
    if not isinstance(doc, dict) or set(doc) != {"schema", "size", "head", "time"}:
        raise CheckpointError("checkpoint payload must have exactly schema, size, head, time")
    if doc["schema"] != CHECKPOINT_SCHEMA:
        raise CheckpointError(f"checkpoint schema is not {CHECKPOINT_SCHEMA}")
    size, head, time = doc["size"], doc["head"], doc["time"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise CheckpointError("checkpoint size is not a non-negative integer")
    if not isinstance(head, str) or not HEX64.fullmatch(head):
        raise CheckpointError("checkpoint head is not 64 lowercase hex digits")
    try:
        parse_utc(time)
    except (TypeError, ValueError):
        raise CheckpointError("checkpoint time is not an ISO-8601 UTC time") from None
    return Checkpoint(size, head, time, check.verified)


def load_checkpoint(path: Path, trusted_keys: Sequence[PublicKey]) -> Checkpoint:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror}") from e
    return parse_checkpoint(data, trusted_keys)


def write_checkpoint(
    ledger_path: Path, key: SigningKey, out_path: Path, *, now: datetime
) -> Checkpoint:
    """Sign the verified head of the ledger into `out_path` (outside the database).

    If `out_path` already holds a checkpoint, it must verify with `key` and the ledger must
    extend it: a checkpoint never moves backwards, so signing a restored older ledger fails.
    """
    previous = None
    if out_path.exists():
        try:
            previous = load_checkpoint(out_path, [key.public])
        except CheckpointError as e:
            raise CheckpointError(f"{e}; refusing to replace {out_path}") from e
    head = read_verified(ledger_path, trusted_checkpoint=previous).head
    time = format_utc(now)
    payload = canonical_json(
        {"schema": CHECKPOINT_SCHEMA, "size": head.size, "head": head.hash, "time": time}
    )
    envelope = sign_envelope(CHECKPOINT_PAYLOAD_TYPE, payload, [key])
    atomic_write_bytes(out_path, encode_envelope(envelope))
    return Checkpoint(head.size, head.hash, time, frozenset({key.key_id}))
