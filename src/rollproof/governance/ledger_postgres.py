"""The governance ledger kept in PostgreSQL, for a team that shares one.

Same events, same hash chain, same fold and the same pure verification core as the SQLite
ledger (`rollproof.governance.ledger.verify_stored`); only the storage differs. Tables live in
the schema `rollproof_ledger` of the database the DSN names:

    meta(key, value)                         the format, "rollproof/ledger/v1"
    events(seq, time, kind, body, prev_hash, hash)
    consumed_grants(grant_id, nonce, payload_sha256, seq)   one row per grant.consumed

Invariants, each against a named failure:

* appends are serialised by a transaction-scoped advisory lock taken before the chain is
  read: two writers on two machines never both extend the same head (no fork), and the
  re-verify + fold + insert + commit sequence is atomic as in SQLite's `BEGIN IMMEDIATE`;
* `seq` is the primary key and `prev_hash`/`hash` are UNIQUE, and a BEFORE INSERT trigger
  refuses a row that does not extend the head, so a writer that bypasses this module (and the
  lock) still cannot fork or gap the chain;
* `consumed_grants` has UNIQUE grant_id, nonce and payload digest, written in the transaction
  that writes the `grant.consumed` event: two concurrent consumers of one grant cannot both
  commit (the second fails on the index, or waits on the lock and then fails the fold);
* UPDATE, DELETE and TRUNCATE triggers raise on every table; a ledger whose tables,
  constraints, triggers or trigger functions differ from rollproof's (a trigger dropped to
  rewrite history) is refused: its schema is compared with a copy created and rolled back in
  the same transaction, so the comparison does not depend on the server's version;
* verification reads everything in one REPEATABLE READ READ ONLY transaction and hands the raw
  rows to `verify_stored`: body bytes are rehashed as stored, never re-serialised.

Checkpoints are the same signed files as for the SQLite ledger (`write_checkpoint`).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from rollproof.core.canonical import canonical_json
from rollproof.core.errors import EnvironmentProblemError
from rollproof.core.keys import SigningKey
from rollproof.engines.postgres.conn import connect, describe_error, parse_pg_dsn
from rollproof.evidence.write import atomic_write_bytes
from rollproof.governance.envelope import encode_envelope, sign_envelope
from rollproof.governance.events import (
    GENESIS,
    Event,
    EventKind,
    NewEvent,
    format_utc,
)
from rollproof.governance.ledger import (
    CHECKPOINT_PAYLOAD_TYPE,
    CHECKPOINT_SCHEMA,
    EXPECTED_SCHEMA,
    LEDGER_FORMAT,
    Builder,
    Checkpoint,
    CheckpointError,
    LedgerHead,
    LedgerIntegrityError,
    LedgerNotFoundError,
    StoredLedger,
    VerifiedLedger,
    chain_events,
    load_checkpoint,
    verify_stored,
)
from rollproof.governance.records import LedgerState
from rollproof.governance.rules_grants import AlreadyConsumedError
from rollproof.governance.state import fold

SCHEMA = "rollproof_ledger"
LOCK_KEY = 0x726F6C6C70726F6F  # "rollproo": one advisory lock for every rollproof ledger append

_GRANT_KINDS = frozenset({EventKind.GRANT_CONSUMED, EventKind.GRANT_REFUSED})
_GENERAL_KINDS = frozenset(EventKind) - _GRANT_KINDS


def _ddl(schema: str) -> list[str]:
    s = sql.Identifier(schema).as_string(None)
    statements = [
        f"CREATE SCHEMA {s}",
        f"CREATE TABLE {s}.meta (key text PRIMARY KEY, value text NOT NULL)",
        f"""CREATE TABLE {s}.events (
            seq bigint PRIMARY KEY CHECK (seq >= 1),
            time text NOT NULL,
            kind text NOT NULL,
            body bytea NOT NULL,
            prev_hash text NOT NULL UNIQUE CHECK (length(prev_hash) = 64),
            hash text NOT NULL UNIQUE CHECK (length(hash) = 64))""",
        f"""CREATE TABLE {s}.consumed_grants (
            grant_id text NOT NULL UNIQUE,
            nonce text NOT NULL UNIQUE,
            payload_sha256 text NOT NULL UNIQUE,
            seq bigint NOT NULL UNIQUE REFERENCES {s}.events (seq))""",
        f"""CREATE FUNCTION {s}.extend_head() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    IF NEW.seq IS DISTINCT FROM (SELECT coalesce(max(seq), 0) + 1 FROM {s}.events)
       OR NEW.prev_hash IS DISTINCT FROM coalesce(
           (SELECT hash FROM {s}.events WHERE seq = NEW.seq - 1), '{GENESIS}') THEN
        RAISE EXCEPTION 'ledger events must extend the head';
    END IF;
    RETURN NEW;
END $f$""",
        f"""CREATE FUNCTION {s}.cite_event() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    IF (SELECT kind FROM {s}.events WHERE seq = NEW.seq) IS DISTINCT FROM 'grant.consumed' THEN
        RAISE EXCEPTION 'a consumed grant must cite its grant.consumed event';
    END IF;
    RETURN NEW;
END $f$""",
        f"""CREATE FUNCTION {s}.append_only() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: % on % refused', TG_OP, TG_TABLE_NAME;
END $f$""",
        f"CREATE TRIGGER events_extend_head BEFORE INSERT ON {s}.events "
        f"FOR EACH ROW EXECUTE FUNCTION {s}.extend_head()",
        f"CREATE TRIGGER consumed_grants_cite_event BEFORE INSERT ON {s}.consumed_grants "
        f"FOR EACH ROW EXECUTE FUNCTION {s}.cite_event()",
    ]
    for table in ("meta", "events", "consumed_grants"):
        statements.append(
            f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {s}.{table} "
            f"FOR EACH ROW EXECUTE FUNCTION {s}.append_only()"
        )
        statements.append(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {s}.{table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {s}.append_only()"
        )
    return statements


_DESCRIBE = """
SELECT 'column', c.relname || '.' || a.attname,
       pg_catalog.format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull::text
FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(s)s AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind = 'r'
UNION ALL
SELECT 'relation', c.relname, c.relkind::text
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(s)s
UNION ALL
SELECT 'constraint', c.relname || '.' || co.contype::text,
       replace(pg_catalog.pg_get_constraintdef(co.oid), %(s)s, '@')
FROM pg_catalog.pg_constraint co JOIN pg_catalog.pg_class c ON c.oid = co.conrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(s)s
UNION ALL
SELECT 'trigger', t.tgname, replace(pg_catalog.pg_get_triggerdef(t.oid), %(s)s, '@')
       || ' ' || t.tgenabled::text
FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(s)s AND NOT t.tgisinternal
UNION ALL
SELECT 'function', p.proname, replace(p.prosrc, %(s)s, '@') || ' ' || p.prosecdef::text
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = %(s)s
ORDER BY 1, 2, 3
"""


def _describe(conn: psycopg.Connection[Any], schema: str) -> list[tuple[str, str, str]]:
    return [(str(a), str(b), str(c)) for a, b, c in conn.execute(_DESCRIBE, {"s": schema})]


def _check_schema(conn: psycopg.Connection[Any]) -> None:
    """Refuse a ledger schema that differs from a fresh one (made and rolled back here)."""
    have = _describe(conn, SCHEMA)
    probe = f"rollproof_ledger_probe_{secrets.token_hex(4)}"
    with conn.transaction(force_rollback=True):
        for statement in _ddl(probe):
            conn.execute(statement.encode())
        want = _describe(conn, probe)
    if have != want:
        missing = sorted({r[1] for r in want} - {r[1] for r in have})
        altered = sorted({r[1] for r in set(want) ^ set(have)} - set(missing))
        # Stops a ledger whose append-only triggers or constraints were dropped or changed.
        raise LedgerIntegrityError(
            "not a rollproof ledger, or its schema was altered: "
            f"missing {missing}, altered or unexpected {altered}"
        )


def _exists(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", (SCHEMA,)
    ).fetchone()
    return row is not None


@contextlib.contextmanager
def _connection(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    target = parse_pg_dsn(dsn, what="ledger")
    conn = connect(target, what="ledger")
    try:
        yield conn
    except psycopg.Error as e:
        raise EnvironmentProblemError(f"ledger {target.shown}: {describe_error(e)}") from None
    finally:
        conn.close()


def _read_stored(conn: psycopg.Connection[Any]) -> StoredLedger:
    _check_schema(conn)
    fmt = conn.execute(f"SELECT value FROM {SCHEMA}.meta WHERE key = 'format'").fetchone()
    rows = conn.execute(
        f"SELECT seq, time, kind, body, prev_hash, hash FROM {SCHEMA}.events ORDER BY seq"
    ).fetchall()
    consumed = conn.execute(
        f"SELECT grant_id, nonce, payload_sha256, seq FROM {SCHEMA}.consumed_grants ORDER BY seq"
    ).fetchall()
    # The schema was checked above against PostgreSQL's own copy; the pure core's schema check
    # is SQLite's, so it is handed the rows that pass it.
    return StoredLedger(
        "ok",
        EXPECTED_SCHEMA,
        None if fmt is None else str(fmt[0]),
        tuple((int(r[0]), r[1], r[2], bytes(r[3]), r[4], r[5]) for r in rows),
        tuple((r[0], r[1], r[2], int(r[3])) for r in consumed),
    )


def ledger_exists(dsn: str) -> bool:
    """Whether the database holds a rollproof ledger (its schema), without verifying it."""
    with _connection(dsn) as conn:
        return _exists(conn)


def read_stored(dsn: str) -> StoredLedger:
    """The raw contents of the ledger, read in one REPEATABLE READ transaction."""
    with _connection(dsn) as conn:
        if not _exists(conn):
            raise LedgerNotFoundError(f"no ledger in {parse_pg_dsn(dsn).shown}")
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        try:
            return _read_stored(conn)
        finally:
            conn.execute("ROLLBACK")


def read_verified(dsn: str, *, trusted_checkpoint: Checkpoint | None = None) -> VerifiedLedger:
    return verify_stored(read_stored(dsn), trusted_checkpoint=trusted_checkpoint)


def verify_chain(dsn: str, *, trusted_checkpoint: Checkpoint | None = None) -> LedgerHead:
    """Re-derive every hash of the ledger; the head, or the first bad event named."""
    return read_verified(dsn, trusted_checkpoint=trusted_checkpoint).head


def fold_ledger(
    dsn: str, *, through: int | None = None, trusted_checkpoint: Checkpoint | None = None
) -> LedgerState:
    return fold(read_verified(dsn, trusted_checkpoint=trusted_checkpoint).events, through=through)


def append_events(
    dsn: str, events: Sequence[NewEvent] | Builder, *, now: datetime
) -> tuple[Event, ...]:
    """As `rollproof.governance.ledger.append_events`, on a PostgreSQL ledger."""
    return _append(dsn, events, now=now, allowed=_GENERAL_KINDS)


def record_grant_event(dsn: str, event: NewEvent, *, now: datetime) -> Event:
    """As `rollproof.governance.ledger.record_grant_event` (for `consume_grant` only)."""
    (appended,) = _append(dsn, [event], now=now, allowed=_GRANT_KINDS)
    return appended


def _append(
    dsn: str,
    events: Sequence[NewEvent] | Builder,
    *,
    now: datetime,
    allowed: frozenset[EventKind],
) -> tuple[Event, ...]:
    time = format_utc(now)
    with _connection(dsn) as conn, conn.transaction():
        # Serialises appends from every client: taken before the head is read.
        conn.execute("SELECT pg_catalog.pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        if not _exists(conn):
            for statement in _ddl(SCHEMA):
                conn.execute(statement.encode())
            conn.execute(
                f"INSERT INTO {SCHEMA}.meta (key, value) VALUES ('format', %s)", (LEDGER_FORMAT,)
            )
        return _append_locked(conn, events, time, allowed)


def _append_locked(
    conn: psycopg.Connection[Any],
    events: Sequence[NewEvent] | Builder,
    time: str,
    allowed: frozenset[EventKind],
) -> tuple[Event, ...]:
    return chain_events(
        _read_stored(conn), events, time, allowed, lambda e, body: _insert(conn, e, body)
    )


def _insert(conn: psycopg.Connection[Any], event: Event, body: dict[str, Any]) -> None:
    conn.execute(
        f"INSERT INTO {SCHEMA}.events (seq, time, kind, body, prev_hash, hash) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        (event.seq, event.time, str(event.kind), event.body, event.prev_hash, event.hash),
    )
    if event.kind is not EventKind.GRANT_CONSUMED:
        return
    keys = ("grant_id", "nonce", "payload_sha256")
    values = [body.get(k) for k in keys]
    if not all(isinstance(v, str) for v in values):
        return  # a malformed body: the fold refuses it next, before anything commits
    try:
        with conn.transaction():  # a savepoint, so the index's verdict can be read
            conn.execute(
                f"INSERT INTO {SCHEMA}.consumed_grants (grant_id, nonce, payload_sha256, seq) "
                "VALUES (%s, %s, %s, %s)",
                (*values, event.seq),
            )
    except psycopg.errors.UniqueViolation as e:
        field = next(
            (
                k
                for k, v in zip(keys, values, strict=True)
                if conn.execute(
                    sql.SQL("SELECT 1 FROM {}.consumed_grants WHERE {} = %s").format(
                        sql.Identifier(SCHEMA), sql.Identifier(k)
                    ),
                    (v,),
                ).fetchone()
            ),
            "grant_id",
        )
        raise AlreadyConsumedError(event.seq, field, str(body[field])) from e


def write_checkpoint(dsn: str, key: SigningKey, out_path: Path, *, now: datetime) -> Checkpoint:
    """As `rollproof.governance.ledger.write_checkpoint`, for a PostgreSQL ledger."""
    previous = None
    if out_path.exists():
        try:
            previous = load_checkpoint(out_path, [key.public])
        except CheckpointError as e:
            raise CheckpointError(f"{e}; refusing to replace {out_path}") from e
    head = read_verified(dsn, trusted_checkpoint=previous).head
    time = format_utc(now)
    payload = canonical_json(
        {"schema": CHECKPOINT_SCHEMA, "size": head.size, "head": head.hash, "time": time}
    )
    envelope = sign_envelope(CHECKPOINT_PAYLOAD_TYPE, payload, [key])
    atomic_write_bytes(out_path, encode_envelope(envelope))
    return Checkpoint(head.size, head.hash, time, frozenset({key.key_id}))
