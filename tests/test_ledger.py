"""The governance ledger on real SQLite files: chain, tamper detection, checkpoints, fold rules."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from rollproof.core.canonical import canonical_json
from rollproof.core.errors import ExitCode
from rollproof.core.keys import SigningKey
from rollproof.core.model import IsolationVerdict, Verdict
from rollproof.governance import (
    BlockerState,
    CheckpointError,
    Decision,
    EventKind,
    LedgerIntegrityError,
    LedgerNotFoundError,
    LedgerRangeError,
    LedgerRollbackError,
    LedgerRuleError,
    NewEvent,
    TicketState,
    append_events,
    classify_blocker,
    close_blocker,
    close_ticket,
    discharge_condition,
    fold,
    fold_ledger,
    generate_key_pair,
    leaf_hash,
    load_checkpoint,
    load_signing_key,
    open_blocker,
    open_ticket,
    pin_validator,
    read_verified,
    record_decision,
    record_rehearsal,
    record_unknown,
    release_hold,
    set_hold,
    update_blocker,
    update_ticket,
    verify_chain,
    write_checkpoint,
)
from rollproof.governance.events import GENESIS

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
ISOLATED: dict[str, Any] = {"isolation": IsolationVerdict.PROVEN, "exit_code": 0}
"""The facts a validated, isolated, exit-0 packet records besides its overall verdict."""
TREE_PASS = "a" * 64
TREE_FAIL = "b" * 64
TREE_OTHER = "c" * 64


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def raw_tamper(path: Path, *statements: tuple[str, tuple[Any, ...]]) -> None:
    """Edit a ledger as an attacker with file access would: drop triggers, edit, restore them."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        triggers = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"
        ).fetchall()
        conn.execute("BEGIN")
        for name, _ in triggers:
            conn.execute(f'DROP TRIGGER "{name}"')
        for sql, params in statements:
            conn.execute(sql, params)
        for _, sql in triggers:
            conn.execute(sql)
        conn.execute("COMMIT")
    finally:
        conn.close()


def rows(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT seq, time, kind, body, prev_hash, hash FROM events ORDER BY seq"
        ).fetchall()


def rehash_from(path: Path, seq: int) -> None:
    """Recompute every hash from `seq` on, as an attacker hiding an edit would."""
    all_rows = rows(path)
    prev = GENESIS if seq == 1 else all_rows[seq - 2][5]
    edits = []
    for s, time, kind, body, _, _ in all_rows[seq - 1 :]:
        h = leaf_hash(seq=s, time=time, kind=kind, body=body, prev_hash=prev)
        edits.append(("UPDATE events SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, h, s)))
        prev = h
    raw_tamper(path, *edits)


def populate(path: Path, start: int = 0) -> None:
    """Seven realistic events: a ticket, a blocker with two conditions, evidence, a discharge."""
    events = [
        open_ticket("T1", "Drop legacy email column", change_id="c1"),
        open_blocker(
            "B1",
            "Rollback not proven everywhere",
            {"clone": "clone leg proven", "prod": "production leg proven"},
            ticket_id="T1",
            change_id="c1",
        ),
        record_rehearsal("c1", TREE_PASS, Verdict.PASS, **ISOLATED),
        discharge_condition("B1", "clone", packet_tree_hash=TREE_PASS),
        pin_validator("d" * 64),
        set_hold("c1", reason="production on HOLD by default"),
        record_decision("c1", Decision.HOLD, reason="await an operator grant"),
    ]
    for i, event in enumerate(events):
        append_events(path, [event], now=at(start + i))


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    return tmp_path / ".rollproof" / "ledger.db"


@pytest.fixture
def operator(tmp_path: Path) -> SigningKey:
    generate_key_pair(tmp_path / "keys" / "op.key", tmp_path / "keys" / "op.pub")
    return load_signing_key(tmp_path / "keys" / "op.key")


# --- the chain -----------------------------------------------------------------------------------


def test_leaf_hash_rule_is_exactly_as_documented() -> None:
    body = canonical_json({"ticket_id": "T1", "title": "x"})
    leaf = json.dumps(
        {
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "kind": "ticket.opened",
            "prev": GENESIS,
            "seq": 1,
            "time": "2026-03-01T09:00:00.000000Z",
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    expected = hashlib.sha256(b"\x00" + leaf).hexdigest()
    got = leaf_hash(
        seq=1,
        time="2026-03-01T09:00:00.000000Z",
        kind="ticket.opened",
        body=body,
        prev_hash=GENESIS,
    )
    assert got == expected
    # Golden value: a change to the rule (or to canonical JSON) must be deliberate.
    assert got == "206f3fc8ddaee9ccaa81de0b8accabf5d184538157fdb551bec0ab9c92ffefbc"


def test_appended_events_chain_from_genesis_and_verify(ledger: Path) -> None:
    populate(ledger)
    stored = rows(ledger)
    assert [r[0] for r in stored] == list(range(1, 8))
    assert stored[0][4] == GENESIS
    for prev, row in itertools.pairwise(stored):
        assert row[4] == prev[5]
    assert stored[0][1] == "2026-03-01T09:00:00.000000Z"
    assert stored[0][3] == canonical_json(
        {"change_id": "c1", "ticket_id": "T1", "title": "Drop legacy email column"}
    )
    head = verify_chain(ledger)
    assert (head.size, head.hash) == (7, stored[-1][5])


def test_verify_of_a_missing_ledger_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(LedgerNotFoundError, match="no ledger at"):
        verify_chain(tmp_path / "nope.db")


def test_a_non_ledger_sqlite_file_is_refused_for_append_and_verify(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(LedgerIntegrityError, match="not a rollproof ledger"):
        verify_chain(other)
    with pytest.raises(LedgerIntegrityError, match="not a rollproof ledger"):
        append_events(other, [pin_validator("d" * 64)], now=T0)
    with sqlite3.connect(other) as conn:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("t",)]


def test_naive_clock_is_a_caller_bug(ledger: Path) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        append_events(ledger, [pin_validator("d" * 64)], now=datetime(2026, 1, 1))


class LedgerMachine(RuleBasedStateMachine):
    """Any series of appends leaves a ledger that verifies, folds, and extends every checkpoint."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="ledger-machine-"))
        self.path = self.dir / "ledger.db"
        self.size = 0
        self.tickets: dict[str, bool] = {}
        self.packets: list[str] = []
        self.checkpoint_size = -1
        self.key = _MACHINE_KEY

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def _append(self, *events: NewEvent) -> None:
        append_events(self.path, list(events), now=at(self.size))
        self.size += len(events)

    @rule(title=st.text(min_size=1, max_size=30).filter(lambda s: not s.isspace()))
    def open_a_ticket(self, title: str) -> None:
        ticket_id = f"T{len(self.tickets) + 1}"
        self._append(open_ticket(ticket_id, title))
        self.tickets[ticket_id] = True

    @precondition(lambda self: any(self.tickets.values()))
    @rule(data=st.data(), note=st.text(min_size=1, max_size=50).filter(lambda s: not s.isspace()))
    def note_a_ticket(self, data: st.DataObject, note: str) -> None:
        open_ids = sorted(t for t, is_open in self.tickets.items() if is_open)
        self._append(update_ticket(data.draw(st.sampled_from(open_ids)), note=note))

    @precondition(lambda self: any(self.tickets.values()))
    @rule(data=st.data())
    def close_a_ticket(self, data: st.DataObject) -> None:
        open_ids = sorted(t for t, is_open in self.tickets.items() if is_open)
        ticket_id = data.draw(st.sampled_from(open_ids))
        self._append(close_ticket(ticket_id, reason="done"))
        self.tickets[ticket_id] = False

    @rule(verdict=st.sampled_from(list(Verdict)), raw=st.binary(min_size=8, max_size=8))
    def record_a_packet(self, verdict: Verdict, raw: bytes) -> None:
        tree = hashlib.sha256(raw + str(self.size).encode()).hexdigest()
        self._append(record_rehearsal("c1", tree, verdict, **ISOLATED))
        self.packets.append(tree)

    @rule(
        check=st.sampled_from(["scope", "guard", "pin"]),
        reason=st.sampled_from(["no pin", "timeout"]),
    )
    def an_unknown_check(self, check: str, reason: str) -> None:
        added: list[int] = []

        def build(state: Any) -> Any:
            events = record_unknown(state, change_id="c1", check=check, reason=reason)
            added.append(len(events))
            return events

        append_events(self.path, build, now=at(self.size))
        self.size += added[0]

    @precondition(lambda self: self.size > 0)
    @rule()
    def checkpoint(self) -> None:
        write_checkpoint(self.path, self.key, self.dir / "checkpoint.json", now=at(self.size))
        self.checkpoint_size = self.size

    @invariant()
    def verifies_and_folds(self) -> None:
        if self.size == 0:
            return
        cp = None
        if self.checkpoint_size >= 0:
            cp = load_checkpoint(self.dir / "checkpoint.json", [self.key.public])
            assert cp.size == self.checkpoint_size
        verified = read_verified(self.path, trusted_checkpoint=cp)
        assert verified.head.size == self.size
        state = fold(verified.events)
        assert state.through == self.size
        assert {t: s.state is TicketState.OPEN for t, s in state.tickets.items()} == self.tickets
        assert sorted(state.rehearsals) == sorted(self.packets)


_MACHINE_KEY = SigningKey.from_private(Ed25519PrivateKey.generate())

LedgerMachine.TestCase.settings = settings(max_examples=50, stateful_step_count=15, deadline=None)
TestAnySeriesOfAppendsVerifies = LedgerMachine.TestCase


# --- tampering -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "ledger.db"
    populate(path)
    return path


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scratch")


def _copy(template: Path, scratch: Path) -> Path:
    target = Path(tempfile.mkdtemp(dir=scratch)) / "ledger.db"
    shutil.copyfile(template, target)
    return target


def _flip_text(text: str, offset: int, alphabet: str) -> str:
    i = offset % len(text)
    replacement = next(c for c in alphabet if c != text[i])
    return text[:i] + replacement + text[i + 1 :]


@settings(max_examples=200, deadline=None)
@given(
    seq=st.integers(min_value=1, max_value=7),
    column=st.sampled_from(["body", "hash", "prev_hash", "time", "kind"]),
    offset=st.integers(min_value=0, max_value=10_000),
    xor=st.integers(min_value=1, max_value=255),
)
def test_any_single_byte_edit_is_caught_at_its_event(
    template: Path, scratch: Path, seq: int, column: str, offset: int, xor: int
) -> None:
    path = _copy(template, scratch)
    assert verify_chain(path).size == 7  # the positive twin: the untouched copy verifies
    row = dict(
        zip(["seq", "time", "kind", "body", "prev_hash", "hash"], rows(path)[seq - 1], strict=True)
    )
    value = row[column]
    if column == "body":
        i = offset % len(value)
        edited: Any = value[:i] + bytes([value[i] ^ xor]) + value[i + 1 :]
    elif column in ("hash", "prev_hash"):
        edited = _flip_text(value, offset, "0123456789abcdef")
    else:
        edited = _flip_text(value, offset, "0123456789abcdefghijklmnopqrstuvwxyz.-:TZ")
    raw_tamper(path, (f"UPDATE events SET {column} = ? WHERE seq = ?", (edited, seq)))
    with pytest.raises(LedgerIntegrityError) as caught:
        verify_chain(path)
    assert caught.value.seq == seq
    fragment = (
        "prev_hash does not match" if column == "prev_hash" else "hash does not match its contents"
    )
    assert fragment in str(caught.value)
    assert caught.value.exit_code == ExitCode.CHECK_FAILED


def _delete(seq: int) -> Callable[[Path], None]:
    return lambda p: raw_tamper(p, ("DELETE FROM events WHERE seq = ?", (seq,)))


def _swap(a: int, b: int) -> Callable[[Path], None]:
    return lambda p: raw_tamper(
        p,
        ("UPDATE events SET seq = 1000 WHERE seq = ?", (a,)),
        ("UPDATE events SET seq = ? WHERE seq = ?", (a, b)),
        ("UPDATE events SET seq = ? WHERE seq = 1000", (b,)),
    )


def _rewrite_last_body_noncanonical(p: Path) -> None:
    last = rows(p)[-1]
    spaced = json.dumps(json.loads(last[3]), indent=1).encode()
    raw_tamper(p, ("UPDATE events SET body = ? WHERE seq = ?", (spaced, last[0])))
    rehash_from(p, last[0])


def _rename_last_kind(kind: str) -> Callable[[Path], None]:
    def tamper(p: Path) -> None:
        raw_tamper(p, ("UPDATE events SET kind = ? WHERE seq = 7", (kind,)))
        rehash_from(p, 7)

    return tamper


def _drop_trigger(p: Path) -> None:
    with sqlite3.connect(p) as conn:
        conn.execute("DROP TRIGGER events_no_update")


def _truncate_file(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _forge_consumed_row(p: Path) -> None:
    raw_tamper(
        p,
        ("INSERT INTO consumed_grants VALUES (?, ?, ?, ?)", ("0" * 32, "1" * 32, "2" * 64, 7)),
    )


@pytest.mark.parametrize(
    ("tamper", "seq", "fragment"),
    [
        pytest.param(
            _delete(4), 4, "missing (the next stored event is 5)", id="middle-event-deleted"
        ),
        pytest.param(
            _delete(1), 1, "missing (the next stored event is 2)", id="first-event-deleted"
        ),
        pytest.param(
            _swap(3, 4), 3, "prev_hash does not match the hash of event 2", id="events-reordered"
        ),
        pytest.param(
            _rewrite_last_body_noncanonical,
            7,
            "not a canonical JSON object",
            id="body-reencoded-and-rehashed",
        ),
        pytest.param(
            _rename_last_kind("grant.approved"),
            7,
            "unknown kind 'grant.approved'",
            id="unknown-kind-rehashed",
        ),
        pytest.param(
            _drop_trigger,
            None,
            "schema was altered: missing ['events_no_update']",
            id="append-only-trigger-dropped",
        ),
        pytest.param(_truncate_file, None, "cannot be read", id="file-bytes-truncated"),
        pytest.param(
            _forge_consumed_row,
            None,
            "consumed_grants table does not match",
            id="consumed-row-forged",
        ),
    ],
)
def test_tampering_is_caught(
    template: Path, scratch: Path, tamper: Callable[[Path], None], seq: int | None, fragment: str
) -> None:
    path = _copy(template, scratch)
    assert verify_chain(path).size == 7  # positive twin
    tamper(path)
    with pytest.raises(LedgerIntegrityError) as caught:
        verify_chain(path)
    assert fragment in str(caught.value)
    assert caught.value.seq == seq


def test_a_rehashed_rewrite_verifies_alone_so_the_checkpoint_is_what_anchors_it(
    ledger: Path, operator: SigningKey, tmp_path: Path
) -> None:
    populate(ledger)
    cp_path = tmp_path / "checkpoint.json"
    write_checkpoint(ledger, operator, cp_path, now=at(10))
    cp = load_checkpoint(cp_path, [operator.public])
    assert verify_chain(ledger, trusted_checkpoint=cp).size == 7
    raw_tamper(
        ledger,
        (
            "UPDATE events SET body = ? WHERE seq = 6",
            (canonical_json({"change_id": "c1", "reason": "lifted"}),),
        ),
    )
    rehash_from(ledger, 6)
    assert verify_chain(ledger).size == 7  # internally consistent: the limit of a bare chain
    with pytest.raises(
        LedgerRollbackError,
        match="event 7 does not match the trusted checkpoint's head: the ledger was forked or rewritten",
    ):
        verify_chain(ledger, trusted_checkpoint=cp)


# --- checkpoints ---------------------------------------------------------------------------------


def test_restoring_an_older_copy_is_caught_by_the_checkpoint(
    ledger: Path, operator: SigningKey, tmp_path: Path
) -> None:
    populate(ledger)
    older = tmp_path / "older.db"
    shutil.copyfile(ledger, older)
    append_events(ledger, [update_ticket("T1", note="later")], now=at(20))
    cp_path = tmp_path / "checkpoint.json"
    write_checkpoint(ledger, operator, cp_path, now=at(21))
    cp = load_checkpoint(cp_path, [operator.public])
    assert (cp.size, cp.signers) == (8, frozenset({operator.key_id}))
    append_events(ledger, [update_ticket("T1", note="even later")], now=at(22))
    assert verify_chain(ledger, trusted_checkpoint=cp).size == 9  # positive twin: extends it
    shutil.copyfile(older, ledger)
    assert verify_chain(ledger).size == 7  # the older copy is itself a valid chain
    with pytest.raises(
        LedgerRollbackError,
        match="has 7 events but the trusted checkpoint covers 8: an older copy was restored",
    ):
        verify_chain(ledger, trusted_checkpoint=cp)


def test_truncated_rows_are_caught_by_the_checkpoint(
    ledger: Path, operator: SigningKey, tmp_path: Path
) -> None:
    populate(ledger)
    write_checkpoint(ledger, operator, tmp_path / "cp.json", now=at(10))
    cp = load_checkpoint(tmp_path / "cp.json", [operator.public])
    raw_tamper(ledger, ("DELETE FROM events WHERE seq = 7", ()))
    assert verify_chain(ledger).size == 6
    with pytest.raises(LedgerRollbackError, match="or the ledger was truncated"):
        verify_chain(ledger, trusted_checkpoint=cp)


def test_a_fork_is_caught_by_the_checkpoint(
    ledger: Path, operator: SigningKey, tmp_path: Path
) -> None:
    populate(ledger)
    fork = tmp_path / "fork.db"
    shutil.copyfile(ledger, fork)
    append_events(ledger, [update_ticket("T1", note="branch A")], now=at(10))
    write_checkpoint(ledger, operator, tmp_path / "cp.json", now=at(11))
    cp = load_checkpoint(tmp_path / "cp.json", [operator.public])
    append_events(fork, [update_ticket("T1", note="branch B")], now=at(10))
    append_events(fork, [update_ticket("T1", note="and more")], now=at(12))
    with pytest.raises(LedgerRollbackError, match="event 8 does not match") as caught:
        verify_chain(fork, trusted_checkpoint=cp)
    assert caught.value.seq == 8


def test_an_empty_checkpoint_is_extended_by_any_ledger(
    ledger: Path, operator: SigningKey, tmp_path: Path
) -> None:
    append_events(ledger, [pin_validator("d" * 64)], now=T0)
    cp = write_checkpoint(ledger, operator, tmp_path / "cp.json", now=at(1))
    assert cp.size == 1
    assert load_checkpoint(tmp_path / "cp.json", [operator.public]) == cp


def test_write_checkpoint_never_moves_backwards(
    ledger: Path, operator: SigningKey, tmp_path: Path
) -> None:
    populate(ledger)
    older = tmp_path / "older.db"
    shutil.copyfile(ledger, older)
    append_events(ledger, [update_ticket("T1", note="later")], now=at(20))
    cp_path = tmp_path / "cp.json"
    write_checkpoint(ledger, operator, cp_path, now=at(21))
    before = cp_path.read_bytes()
    with pytest.raises(LedgerRollbackError, match="an older copy was restored"):
        write_checkpoint(older, operator, cp_path, now=at(22))
    assert cp_path.read_bytes() == before
    append_events(ledger, [update_ticket("T1", note="newer")], now=at(23))
    assert write_checkpoint(ledger, operator, cp_path, now=at(24)).size == 9  # positive twin


def test_checkpoint_signed_by_an_untrusted_key_or_altered_is_refused(
    ledger: Path, operator: SigningKey, tmp_path: Path
) -> None:
    populate(ledger)
    cp_path = tmp_path / "cp.json"
    write_checkpoint(ledger, operator, cp_path, now=at(10))
    generate_key_pair(tmp_path / "other.key", tmp_path / "other.pub")
    other = load_signing_key(tmp_path / "other.key")
    with pytest.raises(CheckpointError, match="not signed by a trusted key"):
        load_checkpoint(cp_path, [other.public])
    doc = json.loads(cp_path.read_bytes())
    payload = json.loads(base64.b64decode(doc["payload"]))
    payload["size"] = 3
    doc["payload"] = base64.b64encode(canonical_json(payload)).decode()
    cp_path.write_bytes(canonical_json(doc))
    with pytest.raises(CheckpointError, match="a trusted key that does not verify"):
        load_checkpoint(cp_path, [operator.public])
    with pytest.raises(CheckpointError, match="refusing to replace"):
        write_checkpoint(ledger, operator, cp_path, now=at(11))


# --- triggers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "fragment"),
    [
        pytest.param(
            "UPDATE events SET body = x'7b7d' WHERE seq = 1",
            "UPDATE on events refused",
            id="update-event",
        ),
        pytest.param(
            "DELETE FROM events WHERE seq = 7", "DELETE on events refused", id="delete-event"
        ),
        pytest.param("UPDATE meta SET value = 'v0'", "UPDATE on meta refused", id="update-meta"),
        pytest.param(
            f"INSERT INTO events VALUES (9, 't', 'hold.set', x'7b7d', '{GENESIS}', '{'e' * 64}')",
            "ledger events must extend the head",
            id="insert-with-gap",
        ),
        pytest.param(
            f"INSERT INTO events VALUES (8, 't', 'hold.set', x'7b7d', '{GENESIS}', '{'e' * 64}')",
            "ledger events must extend the head",
            id="insert-forking-prev",
        ),
        pytest.param(
            f"INSERT INTO consumed_grants VALUES ('{'0' * 32}', '{'1' * 32}', '{'2' * 64}', 7)",
            "must cite its grant.consumed event",
            id="consumed-row-without-event",
        ),
    ],
)
def test_triggers_refuse_rewrites(template: Path, scratch: Path, sql: str, fragment: str) -> None:
    path = _copy(template, scratch)
    with sqlite3.connect(path) as conn, pytest.raises(sqlite3.IntegrityError, match=fragment):
        conn.execute(sql)
    assert verify_chain(path).size == 7


# --- fold and rules ------------------------------------------------------------------------------


def test_fold_gives_the_state_at_each_position(ledger: Path) -> None:
    populate(ledger)
    events = read_verified(ledger).events
    at2 = fold(events, through=2)
    assert at2.blockers["B1"].state is BlockerState.OPEN
    assert at2.validator_pin is None
    assert at2.is_held("c1")  # HOLD is the default, before any hold event
    full = fold(events)
    b1 = full.blockers["B1"]
    assert b1.state is BlockerState.PARTIALLY_DISCHARGED
    assert [(c.id, c.evidence, c.discharged_at) for c in b1.conditions] == [
        ("clone", TREE_PASS, 4),
        ("prod", None, None),
    ]
    assert full.tickets["T1"].state is TicketState.OPEN
    assert full.validator_pin == "d" * 64
    assert full.holds["c1"].held
    assert [d.decision for d in full.decisions] == [Decision.HOLD]
    assert (full.through, full.head) == (7, events[-1].hash)
    assert fold(events, through=0).through == 0
    assert fold_ledger(ledger, through=3).rehearsals[TREE_PASS].overall is Verdict.PASS
    with pytest.raises(LedgerRangeError, match="cannot fold through 8: the ledger has 7 events"):
        fold(events, through=8)


def test_blocker_lifecycle_to_closed_and_ticket_closed(ledger: Path) -> None:
    populate(ledger)
    append_events(
        ledger,
        [
            record_rehearsal("c1", TREE_OTHER, Verdict.PASS, **ISOLATED),
            discharge_condition("B1", "prod", packet_tree_hash=TREE_OTHER),
            close_blocker("B1", reason="both legs proven"),
            close_ticket("T1", reason="shipped"),
        ],
        now=at(30),
    )
    state = fold_ledger(ledger)
    assert state.blockers["B1"].state is BlockerState.CLOSED
    assert state.blockers["B1"].closed_at == 10
    assert state.tickets["T1"].state is TicketState.CLOSED
    assert state.open_blockers("c1") == ()


_RULE_CASES = [
    pytest.param(
        [NewEvent(EventKind.BLOCKER_DISCHARGED, {"blocker_id": "B1", "condition_id": "prod"})],
        "missing field 'evidence'",
        [discharge_condition("B1", "prod", packet_tree_hash=TREE_PASS)],
        id="discharge-without-evidence",
    ),
    pytest.param(
        [discharge_condition("B1", "prod", packet_tree_hash=TREE_OTHER)],
        f"evidence packet {TREE_OTHER} was never recorded",
        [
            record_rehearsal("c1", TREE_OTHER, Verdict.PASS, **ISOLATED),
            discharge_condition("B1", "prod", packet_tree_hash=TREE_OTHER),
        ],
        id="discharge-citing-unrecorded-packet",
    ),
    pytest.param(
        [
            record_rehearsal("c1", TREE_FAIL, Verdict.FAIL, **ISOLATED),
            discharge_condition("B1", "prod", packet_tree_hash=TREE_FAIL),
        ],
        f"evidence packet {TREE_FAIL} does not count: overall is FAIL, not PASS",
        [
            record_rehearsal("c1", TREE_FAIL, Verdict.PASS, **ISOLATED),
            discharge_condition("B1", "prod", packet_tree_hash=TREE_FAIL),
        ],
        id="discharge-citing-failed-packet",
    ),
    pytest.param(
        [
            record_rehearsal("c2", TREE_OTHER, Verdict.PASS, **ISOLATED),
            discharge_condition("B1", "prod", packet_tree_hash=TREE_OTHER),
        ],
        f"evidence packet {TREE_OTHER} is for change c2",
        [
            record_rehearsal("c1", TREE_OTHER, Verdict.PASS, **ISOLATED),
            discharge_condition("B1", "prod", packet_tree_hash=TREE_OTHER),
        ],
        id="discharge-citing-another-changes-packet",
    ),
    pytest.param(
        [discharge_condition("B1", "clone", packet_tree_hash=TREE_PASS)],
        "condition B1/clone was already discharged",
        [discharge_condition("B1", "prod", packet_tree_hash=TREE_PASS)],
        id="discharge-twice",
    ),
    pytest.param(
        [discharge_condition("B1", "staging", packet_tree_hash=TREE_PASS)],
        "blocker B1 has no condition staging",
        [
            update_blocker("B1", add_conditions={"staging": "staging leg"}),
            discharge_condition("B1", "staging", packet_tree_hash=TREE_PASS),
        ],
        id="discharge-unknown-condition",
    ),
    pytest.param(
        [close_blocker("B1", reason="looks fine")],
        "blocker B1 has open conditions: prod",
        [
            discharge_condition("B1", "prod", packet_tree_hash=TREE_PASS),
            close_blocker("B1", reason="proven"),
        ],
        id="close-blocker-with-open-condition",
    ),
    pytest.param(
        [NewEvent(EventKind.BLOCKER_UPDATED, {"blocker_id": "B1", "state": "CLOSED"})],
        "unknown field(s) ['state']",
        [update_blocker("B1", note="state is derived, not set")],
        id="state-set-by-hand",
    ),
    pytest.param(
        [close_ticket("T1", reason="done")],
        "ticket T1 has blockers not closed: B1",
        [
            discharge_condition("B1", "prod", packet_tree_hash=TREE_PASS),
            close_blocker("B1", reason="ok"),
            close_ticket("T1", reason="done"),
        ],
        id="close-ticket-with-open-blocker",
    ),
    pytest.param(
        [open_ticket("T1", "again")],
        "ticket T1 already exists",
        [open_ticket("T2", "another")],
        id="ticket-id-reused",
    ),
    pytest.param(
        [open_blocker("B2", "no conditions", {})],
        "field 'conditions' must be a non-empty list",
        [open_blocker("B2", "one condition", {"x": "y"})],
        id="blocker-without-conditions",
    ),
    pytest.param(
        [
            record_decision(
                "c1", Decision.PROCEED, reason="go", lane="production-apply", grant_id="f" * 32
            )
        ],
        f"grant {'f' * 32} was not consumed",
        [record_decision("c1", Decision.HOLD, reason="wait")],
        id="proceed-without-consumed-grant",
    ),
    pytest.param(
        [release_hold("c1", grant_id="f" * 32)],
        f"grant {'f' * 32} was not consumed",
        [set_hold("c1", reason="still held")],
        id="hold-released-without-grant",
    ),
    pytest.param(
        [record_rehearsal("c1", TREE_PASS, Verdict.PASS, **ISOLATED)],
        f"packet {TREE_PASS} is already recorded",
        [record_rehearsal("c1", TREE_OTHER, Verdict.PASS, **ISOLATED)],
        id="packet-recorded-twice",
    ),
    pytest.param(
        [NewEvent(EventKind.VALIDATOR_PINNED, {"sha256": "D" * 64})],
        "field 'sha256' must be 64 lowercase hex digits",
        [pin_validator("e" * 64)],
        id="pin-not-lowercase-hex",
    ),
]


@pytest.mark.parametrize(("bad", "fragment", "good"), _RULE_CASES)
def test_rule_breaking_events_are_refused_and_nothing_is_written(
    ledger: Path, bad: list[NewEvent], fragment: str, good: list[NewEvent]
) -> None:
    populate(ledger)
    with pytest.raises(LedgerRuleError) as caught:
        append_events(ledger, bad, now=at(30))
    assert fragment in str(caught.value)
    assert caught.value.exit_code == ExitCode.CHECK_FAILED
    assert verify_chain(ledger).size == 7  # the whole batch rolled back
    appended = append_events(ledger, good, now=at(31))  # positive twin
    assert verify_chain(ledger).size == 7 + len(appended)


def test_a_closed_blocker_takes_no_further_events(ledger: Path) -> None:
    populate(ledger)
    append_events(
        ledger,
        [
            discharge_condition("B1", "prod", packet_tree_hash=TREE_PASS),
            close_blocker("B1", reason="ok"),
        ],
        now=at(30),
    )
    for event in (classify_blocker("B1", reason="late"), update_blocker("B1", note="late")):
        with pytest.raises(LedgerRuleError, match="blocker B1 is closed"):
            append_events(ledger, [event], now=at(31))


def test_fold_refuses_a_rule_breaking_event_written_around_the_library(ledger: Path) -> None:
    populate(ledger)
    body = canonical_json({"blocker_id": "B1", "reason": "closed by hand"})
    last = rows(ledger)[-1]
    h = leaf_hash(
        seq=8,
        time="2026-03-01T10:00:00.000000Z",
        kind="blocker.closed",
        body=body,
        prev_hash=last[5],
    )
    with sqlite3.connect(ledger) as conn:
        conn.execute(
            "INSERT INTO events VALUES (8, ?, 'blocker.closed', ?, ?, ?)",
            ("2026-03-01T10:00:00.000000Z", body, last[5], h),
        )
    events = read_verified(ledger).events  # the chain itself is intact
    assert fold(events, through=7).blockers["B1"].state is BlockerState.PARTIALLY_DISCHARGED
    with pytest.raises(
        LedgerRuleError,
        match=r"ledger event 8 \(blocker.closed\): blocker B1 has open conditions: prod",
    ):
        fold(events)
    with pytest.raises(LedgerRuleError, match="open conditions"):
        append_events(ledger, [pin_validator("e" * 64)], now=at(40))


def test_an_unknown_check_opens_then_classifies_one_blocker(ledger: Path) -> None:
    populate(ledger)
    append_events(
        ledger,
        lambda s: record_unknown(s, change_id="c1", check="pin", reason="validator not pinned"),
        now=at(30),
    )
    state = fold_ledger(ledger)
    (blocker,) = [b for b in state.blockers.values() if b.check == "pin"]
    assert blocker.id == "unknown/c1/pin/8"
    assert (blocker.state, blocker.classification) == (
        BlockerState.CLASSIFIED,
        "validator not pinned",
    )
    append_events(
        ledger,
        lambda s: record_unknown(s, change_id="c1", check="pin", reason="pin file unreadable"),
        now=at(31),
    )
    state = fold_ledger(ledger)
    assert [b.classification for b in state.blockers.values() if b.check == "pin"] == [
        "pin file unreadable"
    ]
    append_events(
        ledger,
        [
            discharge_condition(blocker.id, "resolved", packet_tree_hash=TREE_PASS),
            close_blocker(blocker.id, reason="pinned"),
        ],
        now=at(32),
    )
    assert fold_ledger(ledger).blockers[blocker.id].state is BlockerState.CLOSED
    append_events(
        ledger, lambda s: record_unknown(s, change_id="c1", check="pin", reason="again"), now=at(33)
    )
    reopened = [
        b
        for b in fold_ledger(ledger).blockers.values()
        if b.check == "pin" and b.state is BlockerState.CLASSIFIED
    ]
    assert [b.id for b in reopened] == ["unknown/c1/pin/13"]


def test_a_discharge_moves_a_classified_blocker_to_partially_discharged(ledger: Path) -> None:
    populate(ledger)
    append_events(
        ledger, [classify_blocker("B1", reason="prod leg UNKNOWN: no scratch server")], now=at(30)
    )
    assert fold_ledger(ledger).blockers["B1"].state is BlockerState.CLASSIFIED
    append_events(
        ledger, [discharge_condition("B1", "prod", packet_tree_hash=TREE_PASS)], now=at(31)
    )
    blocker = fold_ledger(ledger).blockers["B1"]
    assert blocker.state is BlockerState.PARTIALLY_DISCHARGED
    assert blocker.open_conditions == ()
