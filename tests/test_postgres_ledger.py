"""The governance ledger kept in PostgreSQL: the SQLite ledger's behaviour, shared by a team.

Each test gets its own database on the source test server (the ledger is not a rehearsal
source; any server does). The same events written to a SQLite ledger and a PostgreSQL ledger
give the same hashes, heads, folds and checkpoints.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from psycopg import sql

from rollproof.core.keys import SigningKey
from rollproof.governance import ledger as sqlite_ledger
from rollproof.governance import ledger_postgres as pgl
from rollproof.governance.events import EventKind, NewEvent, format_utc
from rollproof.governance.ledger import LedgerIntegrityError, LedgerRollbackError
from rollproof.governance.rules_grants import AlreadyConsumedError
from tests.pg_fixtures import Servers, admin, pg_servers_fixture, with_db  # noqa: F401

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
KEY = SigningKey.from_private(Ed25519PrivateKey.generate())


@pytest.fixture
def ledger_dsn(pg_servers: Servers) -> Iterator[str]:
    name = f"rp_ledger_{secrets.token_hex(4)}"
    with admin(pg_servers.source) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield with_db(pg_servers.source, name)
    with admin(pg_servers.source) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def ticket(n: int) -> NewEvent:
    return NewEvent(EventKind.TICKET_OPENED, {"ticket_id": f"T{n}", "title": f"ticket {n}"})


def consumed(nonce: str) -> NewEvent:
    return NewEvent(
        EventKind.GRANT_CONSUMED,
        {
            "grant_id": secrets.token_hex(16),
            "nonce": nonce,
            "payload_sha256": secrets.token_hex(32),
            "lane": "production-apply",
            "change_id": "c1",
            "source_fingerprint": "sha256:" + "a" * 64,
            "audience": "b" * 64,
            "issuer": "c" * 64,
            "signers": ["c" * 64],
            "not_before": format_utc(NOW),
            "expires": format_utc(NOW),
        },
    )


def test_same_events_same_chain_fold_and_checkpoint_as_sqlite(
    ledger_dsn: str, tmp_path: Path
) -> None:
    path = tmp_path / "ledger.db"
    batches = [[ticket(1)], [ticket(2), ticket(3)], [consumed("d" * 32)]]
    for batch in batches:
        kinds = {e.kind for e in batch}
        if EventKind.GRANT_CONSUMED in kinds:
            a = [sqlite_ledger.record_grant_event(path, batch[0], now=NOW)]
            b = [pgl.record_grant_event(ledger_dsn, batch[0], now=NOW)]
        else:
            a = list(sqlite_ledger.append_events(path, batch, now=NOW))
            b = list(pgl.append_events(ledger_dsn, batch, now=NOW))
        assert a == b
    assert pgl.verify_chain(ledger_dsn) == sqlite_ledger.verify_chain(path)
    assert pgl.fold_ledger(ledger_dsn) == sqlite_ledger.fold_ledger(path)
    assert pgl.fold_ledger(ledger_dsn, through=2) == sqlite_ledger.fold_ledger(path, through=2)
    cp_pg = pgl.write_checkpoint(ledger_dsn, KEY, tmp_path / "pg.json", now=NOW)
    cp_sqlite = sqlite_ledger.write_checkpoint(path, KEY, tmp_path / "sqlite.json", now=NOW)
    assert (cp_pg.size, cp_pg.head) == (cp_sqlite.size, cp_sqlite.head)
    trusted = sqlite_ledger.load_checkpoint(tmp_path / "pg.json", [KEY.public])
    assert pgl.verify_chain(ledger_dsn, trusted_checkpoint=trusted).size == 4


def test_history_cannot_be_rewritten(ledger_dsn: str) -> None:
    pgl.append_events(ledger_dsn, [ticket(1), ticket(2)], now=NOW)
    for statement in (
        "UPDATE rollproof_ledger.events SET kind = 'ticket.closed' WHERE seq = 1",
        "DELETE FROM rollproof_ledger.events WHERE seq = 2",
        "TRUNCATE rollproof_ledger.consumed_grants",
    ):
        with admin(ledger_dsn) as conn, pytest.raises(psycopg.errors.RaiseException):
            conn.execute(statement)
    # An administrator who disables the triggers to edit a byte is caught by the chain ...
    with admin(ledger_dsn) as conn:
        conn.execute("ALTER TABLE rollproof_ledger.events DISABLE TRIGGER events_no_change")
        conn.execute("UPDATE rollproof_ledger.events SET time = time || '' WHERE seq = 2")
        conn.execute(
            'UPDATE rollproof_ledger.events SET body = convert_to(\'{"ticket_id":"T9",'
            '"title":"ticket 2"}\', \'UTF8\') WHERE seq = 2'
        )
    # ... and by the schema check first, since a trigger is no longer what rollproof made.
    with pytest.raises(LedgerIntegrityError, match="schema was altered"):
        pgl.verify_chain(ledger_dsn)
    with admin(ledger_dsn) as conn:
        conn.execute("ALTER TABLE rollproof_ledger.events ENABLE TRIGGER events_no_change")
    with pytest.raises(LedgerIntegrityError, match=r"ledger event 2: hash does not match"):
        pgl.verify_chain(ledger_dsn)


def test_a_restored_older_ledger_fails_the_checkpoint(ledger_dsn: str, tmp_path: Path) -> None:
    pgl.append_events(ledger_dsn, [ticket(1), ticket(2)], now=NOW)
    pgl.write_checkpoint(ledger_dsn, KEY, tmp_path / "cp.json", now=NOW)
    trusted = sqlite_ledger.load_checkpoint(tmp_path / "cp.json", [KEY.public])
    with admin(ledger_dsn) as conn:
        conn.execute("ALTER TABLE rollproof_ledger.events DISABLE TRIGGER events_no_change")
        conn.execute("DELETE FROM rollproof_ledger.events WHERE seq = 2")
        conn.execute("ALTER TABLE rollproof_ledger.events ENABLE TRIGGER events_no_change")
    with pytest.raises(LedgerRollbackError, match="an older copy was restored"):
        pgl.verify_chain(ledger_dsn, trusted_checkpoint=trusted)


def test_concurrent_appends_never_fork_the_chain(ledger_dsn: str) -> None:
    pgl.append_events(ledger_dsn, [ticket(0)], now=NOW)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        barrier.wait()
        try:
            for i in range(3):
                pgl.append_events(ledger_dsn, [ticket(100 * n + i)], now=NOW)
        except BaseException as e:  # collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert pgl.verify_chain(ledger_dsn).size == 1 + 8 * 3


def test_concurrent_consumers_of_one_grant_consume_it_once(ledger_dsn: str) -> None:
    pgl.append_events(ledger_dsn, [ticket(0)], now=NOW)
    nonce = secrets.token_hex(16)
    barrier = threading.Barrier(6)
    outcomes: list[str] = []

    def consumer() -> None:
        barrier.wait()
        try:
            pgl.record_grant_event(ledger_dsn, consumed(nonce), now=NOW)
            outcomes.append("consumed")
        except AlreadyConsumedError:
            outcomes.append("refused")

    threads = [threading.Thread(target=consumer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["consumed"] + ["refused"] * 5
    state = pgl.fold_ledger(ledger_dsn)
    assert [g.nonce for g in state.consumed_grants.values()] == [nonce]
    assert pgl.verify_chain(ledger_dsn).size == 2


def test_a_ledger_exists_once_written_and_a_missing_one_is_named(ledger_dsn: str) -> None:
    assert pgl.ledger_exists(ledger_dsn) is False
    with pytest.raises(sqlite_ledger.LedgerNotFoundError, match="no ledger in"):
        pgl.verify_chain(ledger_dsn)
    pgl.append_events(ledger_dsn, [ticket(1)], now=NOW)
    assert pgl.ledger_exists(ledger_dsn) is True


def test_general_appends_cannot_write_a_consumption(ledger_dsn: str) -> None:
    with pytest.raises(ValueError, match="written by consume_grant only"):
        pgl.append_events(ledger_dsn, [consumed("e" * 32)], now=NOW)
