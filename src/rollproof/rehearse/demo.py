"""`rollproof demo`: a sample production database and two changes, one sound and one lossy;
`rollproof demo --governed`: the governed story of one change, command by command.

The sample database is built deterministically (seeded), with related tables, NULLs, blobs, an
AUTOINCREMENT table, a table without a primary key, an index, a CHECK constraint, a trigger, a
view and ANALYZE statistics, so the rehearsal meets what real schemas have.

* `add-order-priority` adds a column, an index and an audit row; its revert undoes all three.
  Every leg passes; the audit table's AUTOINCREMENT counter stays advanced after the revert,
  which is reported as tolerated by name.
* `drop-customer-fax` drops a column; its revert re-creates the column empty. The transaction
  and restore legs pass, and the revert leg fails with the number of values that would be lost.

The governed demo (`prepare_governed_demo`) runs `add-order-priority` through the whole flow as
the commands a user would type, each with the exit code it must give: keys, `init`, tickets and
blockers, preflight, a rehearsal-only grant issued and consumed, validation, a replay refused,
an operator's HOLD, the checkpoint, and every production lane refused without its own grant.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rollproof.core.change import load_change
from rollproof.core.errors import EnvironmentProblemError, UsageError
from rollproof.core.model import LegName, Verdict
from rollproof.engines.base import Progress
from rollproof.rehearse.flow import RehearsalResult, rehearse
from rollproof.rehearse.packet import write_report

MARKER = ".rollproof-demo"
CUSTOMERS, ORDERS, EVENTS = 20_000, 40_000, 30_000

SCHEMA = """
CREATE TABLE customers (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE COLLATE NOCASE,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    credit REAL,
    avatar BLOB,
    notes TEXT,
    fax TEXT
);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    status TEXT NOT NULL CHECK (status IN ('new', 'paid', 'shipped', 'cancelled')),
    total_cents INTEGER NOT NULL,
    placed_at TEXT NOT NULL
);
CREATE INDEX idx_orders_customer ON orders(customer_id);
CREATE TABLE order_events (order_id INTEGER, kind TEXT, at TEXT, payload BLOB);
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    table_name TEXT NOT NULL,
    row_id INTEGER NOT NULL,
    action TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TRIGGER trg_orders_status AFTER UPDATE OF status ON orders
BEGIN
    INSERT INTO audit_log (table_name, row_id, action, at)
    VALUES ('orders', NEW.id, 'status:' || NEW.status, '2026-01-01T00:00:00Z');
END;
CREATE VIEW customer_totals AS
    SELECT customer_id, count(*) AS orders, sum(total_cents) AS total_cents
    FROM orders GROUP BY customer_id;
"""

CHANGES: dict[str, dict[str, str]] = {
    "add-order-priority": {
        "change.toml": (
            'id = "add-order-priority"\n'
            'apply = "apply.sql"\nrevert = "revert.sql"\nverify = "verify.sql"\n\n'
            "[surfaces]\n"
            'reads = ["orders"]\nwrites = ["orders", "audit_log", "idx_orders_priority"]\n\n'
            "[connection]\nforeign_keys = true\n"
        ),
        "apply.sql": (
            "-- Add a priority flag to orders, backfilled from the order total.\n"
            "ALTER TABLE orders ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;\n"
            "UPDATE orders SET priority = 1 WHERE total_cents > 40000;\n"
            "CREATE INDEX idx_orders_priority ON orders(priority);\n"
            "INSERT INTO audit_log (table_name, row_id, action, at)\n"
            "VALUES ('orders', 0, 'migration:add-order-priority', '2026-11-24T00:00:00Z');\n"
        ),
        "revert.sql": (
            "DELETE FROM audit_log WHERE action = 'migration:add-order-priority';\n"
            "DROP INDEX idx_orders_priority;\n"
            "ALTER TABLE orders DROP COLUMN priority;\n"
        ),
        "verify.sql": "SELECT count(*) FROM orders WHERE priority NOT IN (0, 1);\n",
    },
    "drop-customer-fax": {
        "change.toml": (
            'id = "drop-customer-fax"\n'
            'apply = "apply.sql"\nrevert = "revert.sql"\nverify = "verify.sql"\n\n'
            '[surfaces]\nreads = ["customers"]\nwrites = ["customers"]\n'
        ),
        "apply.sql": "-- Nobody sends faxes any more.\nALTER TABLE customers DROP COLUMN fax;\n",
        "revert.sql": "-- Put the column back.\nALTER TABLE customers ADD COLUMN fax TEXT;\n",
        "verify.sql": "SELECT count(*) FROM customers;\n",
    },
}


def build_sample_database(path: Path, *, seed: int = 7) -> None:
    """Create the demo's production-like database at `path` (which must not exist)."""
    rng = random.Random(seed)
    conn = sqlite3.connect(path)
    try:
        conn.executescript(SCHEMA)
        statuses = ["new", "paid", "shipped", "cancelled"]
        conn.executemany(
            "INSERT INTO customers VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                (
                    i,
                    f"customer{i}@example.com",
                    f"Customer {i}",
                    f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:00:00Z",
                    None if i % 7 == 0 else round(rng.uniform(0, 5000), 2),
                    rng.randbytes(64) if i % 10 == 0 else None,
                    None if i % 3 else f"note {rng.randrange(10**6)}",
                    f"+1-555-{rng.randrange(10**7):07d}" if i % 5 < 2 else None,
                )
                for i in range(1, CUSTOMERS + 1)
            ),
        )
        conn.executemany(
            "INSERT INTO orders (customer_id, status, total_cents, placed_at) VALUES (?, ?, ?, ?)",
            (
                (
                    rng.randrange(1, CUSTOMERS + 1),
                    rng.choice(statuses),
                    rng.randrange(100, 90000),
                    f"2026-{1 + i % 10:02d}-{1 + i % 28:02d}",
                )
                for i in range(ORDERS)
            ),
        )
        conn.executemany(
            "INSERT INTO order_events VALUES (?, ?, ?, ?)",
            (
                (
                    rng.randrange(1, ORDERS + 1),
                    rng.choice(["created", "paid", "shipped"]),
                    f"2026-{1 + i % 10:02d}-{1 + i % 28:02d}",
                    None if i % 4 else rng.randbytes(16),
                )
                for i in range(EVENTS)
            ),
        )
        conn.execute("UPDATE orders SET status = 'shipped' WHERE id % 97 = 0")  # fills audit_log
        conn.commit()
        conn.execute("ANALYZE")
        conn.commit()
    finally:
        conn.close()


@dataclass(frozen=True, slots=True)
class Story:
    title: str
    intro: str
    explain: Callable[[RehearsalResult], str]


def _explain_sound(result: RehearsalResult) -> str:
    if result.overall is Verdict.PASS:
        return (
            "Every rollback path came back to exactly the prior content: transaction "
            "rollback, the revert script, and snapshot restore."
        )
    return f"Unexpected: {result.overall}. See the report."


def _explain_lossy(result: RehearsalResult) -> str:
    revert = next((leg for leg in result.legs if leg.name is LegName.REVERT), None)
    if revert is None or revert.verdict is not Verdict.FAIL:
        return "Unexpected: the revert leg did not fail. See the report."
    lost = "; ".join(d.summary for d in revert.differences)
    return (
        "The revert script runs without error and the schema comes back, but the data does "
        f"not: {lost}. A migration tool that only checks that the down-migration runs would "
        "call this tested. Rolling back in production with this script would lose that data "
        "for good; the transaction and restore paths still bring it back."
    )


STORIES = {
    "add-order-priority": Story(
        "change 1: add-order-priority (reversible)",
        "Adds orders.priority with a backfill, an index and an audit row; the revert removes them.",
        _explain_sound,
    ),
    "drop-customer-fax": Story(
        "change 2: drop-customer-fax (lossy revert)",
        "Drops customers.fax; the revert script re-creates the column, empty.",
        _explain_lossy,
    ),
}


@dataclass(frozen=True, slots=True)
class DemoOutcome:
    results: list[tuple[RehearsalResult, Path]]
    stories: list[Story]
    packets_dir: Path
    as_expected: bool
    conclusion: str


def _prepare_workdir(workdir: Path) -> None:
    if workdir.exists():
        if not (workdir / MARKER).exists() and any(workdir.iterdir()):
            raise UsageError(
                f"{workdir} exists and was not made by `rollproof demo`; choose another --dir"
            )
        shutil.rmtree(workdir)
    try:
        workdir.mkdir(parents=True)
        (workdir / MARKER).write_text("made by rollproof demo; safe to delete\n")
    except OSError as e:
        raise EnvironmentProblemError(
            f"{workdir}: cannot create the demo directory: {e.strerror}"
        ) from e


def run_demo(workdir: Path, *, progress: Progress | None = None) -> DemoOutcome:
    say = progress or (lambda _msg: None)
    _prepare_workdir(workdir)
    db = workdir / "production.db"
    say("building the sample production database")
    build_sample_database(db)
    packets = workdir / "packets"
    results: list[tuple[RehearsalResult, Path]] = []
    for change_id, files in CHANGES.items():
        cdir = workdir / "changes" / change_id
        cdir.mkdir(parents=True)
        for name, text in files.items():
            (cdir / name).write_text(text)
        say(f"rehearsing {change_id}")
        result = rehearse(load_change(cdir), f"sqlite:///{db}", progress=say)
        results.append((result, write_report(result, packets / change_id)))
    sound, lossy = results[0][0], results[1][0]
    verdicts = {leg.name: leg.verdict for leg in lossy.legs}
    as_expected = (
        sound.overall is Verdict.PASS
        and verdicts.get(LegName.REVERT) is Verdict.FAIL
        and verdicts.get(LegName.TRANSACTION) is Verdict.PASS
        and verdicts.get(LegName.RESTORE) is Verdict.PASS
    )
    conclusion = (
        "demo: as expected: rollproof proved add-order-priority reversible and caught "
        "drop-customer-fax's revert losing data."
        if as_expected
        else "demo: UNEXPECTED verdicts; see the reports."
    )
    return DemoOutcome(results, [STORIES[c] for c in CHANGES], packets, as_expected, conclusion)


# -- the governed demo (`rollproof demo --governed`) -----------------------------------------

GOVERNED_CHANGE = "add-order-priority"
_SOURCE = "sqlite:///production.db"


@dataclass(frozen=True, slots=True)
class Step:
    """One command of the governed story, run from the work directory as a user would."""

    title: str
    argv: tuple[str, ...]
    expect: int
    why: str


def _steps() -> list[Step]:
    change = f"changes/{GOVERNED_CHANGE}"
    packet = f"packets/{GOVERNED_CHANGE}"
    lane_args = ("--change", GOVERNED_CHANGE, "--source", _SOURCE)
    return [
        *(
            Step(
                f"{who} makes a key pair" if who != "executor" else "the executor's key pair",
                ("key", "generate", "--out", "keys", "--name", who),
                0,
                "the private key is written 0600 and never printed",
            )
            for who in ("alice", "bob", "executor")
        ),
        Step(
            "a governed policy: two operators, one executor, production registered",
            (
                "init",
                "--executor-key",
                "keys/executor.pub",
                "--operator",
                "alice=keys/alice.pub",
                "--operator",
                "bob=keys/bob.pub",
                "--production",
                _SOURCE,
            ),
            0,
            "rollproof.toml is commented; the ledger starts with the validator's hash pinned",
        ),
        Step(
            "a ticket for the change",
            (
                "ticket",
                "open",
                "TKT-1",
                "--title",
                "Add orders.priority",
                "--change",
                GOVERNED_CHANGE,
            ),
            0,
            "every governance fact is an event in the hash-chained ledger",
        ),
        Step(
            "a ticket for the production rollout",
            (
                "ticket",
                "open",
                "TKT-2",
                "--title",
                "Roll orders.priority out to production",
                "--change",
                GOVERNED_CHANGE,
            ),
            0,
            "",
        ),
        Step(
            "a blocker whose conditions name the lanes that discharge them",
            (
                "blocker",
                "open",
                "ROLLBACK-1",
                "--title",
                "Rollback proven on every path",
                "--ticket",
                "TKT-1",
                "--change",
                GOVERNED_CHANGE,
                "--condition",
                "rehearsal-clone=clone leg proven",
                "--condition",
                "production-apply=production leg proven",
            ),
            0,
            "only validated evidence moves it; there is no way to set its state by hand",
        ),
        Step(
            "a blocker only an operator's evidence can discharge",
            (
                "blocker",
                "open",
                "WINDOW-1",
                "--title",
                "Rollout window agreed with the owners",
                "--ticket",
                "TKT-2",
                "--change",
                GOVERNED_CHANGE,
                "--condition",
                "window=the owners agree a rollout window",
            ),
            0,
            "",
        ),
        Step(
            "preflight, read from the ledger's bytes",
            ("preflight", change, "--source", _SOURCE),
            0,
            "the CI/deploy scope is UNKNOWN (no [ci] table): a blocker is opened and classified, "
            "nothing is triggered; the first lane allows that UNKNOWN, so the run may go on",
        ),
        Step(
            "alice issues a rehearsal-only grant",
            (
                "grant",
                "issue",
                "--lane",
                "rehearsal-clone",
                *lane_args,
                "--expires",
                "2h",
                "--key",
                "keys/alice.key",
                "--out",
                "grants/rehearsal.grant",
            ),
            0,
            "signed for one lane, one change, this source's fingerprint, this executor",
        ),
        Step(
            "the executor tries to mint a grant for itself",
            (
                "grant",
                "issue",
                "--lane",
                "rehearsal-clone",
                *lane_args,
                "--expires",
                "2h",
                "--key",
                "keys/executor.key",
                "--out",
                "grants/self.grant",
            ),
            2,
            "refused: the executor's key signs no grant (and one it signed would be refused)",
        ),
        Step(
            "the executor rehearses under the grant",
            (
                "rehearse",
                change,
                "--source",
                _SOURCE,
                "--grant",
                "grants/rehearsal.grant",
                "--reproduce",
                "--sign",
                "keys/executor.key",
                "--out",
                packet,
            ),
            0,
            "the grant is consumed before any leg runs; the packet is validated, recorded, "
            "reproduced (commands.sh, RERUN.sh) and given its decision packet and checkpoint",
        ),
        Step(
            "anyone validates the evidence",
            (
                "validate",
                packet,
                "--require-signature",
                "--trusted-key",
                "keys/executor.pub",
            ),
            0,
            "",
        ),
        Step(
            "the same grant, presented again",
            ("rehearse", change, "--source", _SOURCE, "--grant", "grants/rehearsal.grant"),
            3,
            "refused as a replay, on the record: a grant is consumed exactly once",
        ),
        Step(
            "bob reads the decision packet and decides",
            (
                "decide",
                GOVERNED_CHANGE,
                "--hold",
                "--reason",
                "clone evidence read; production waits for the CI scope and a rollout window",
                "--key",
                "keys/bob.key",
            ),
            0,
            "HOLD is the default and the first option; nothing was selected for him",
        ),
        Step("the checkpoint", ("status", GOVERNED_CHANGE), 0, ""),
        Step(
            "the production-shaped lane without its own grant",
            ("rehearse", change, "--source", _SOURCE, "--lane", "production-shaped-clone"),
            3,
            "refused and recorded",
        ),
        Step(
            "production-apply without its own grant",
            ("grant", "consume", "--lane", "production-apply", *lane_args),
            3,
            "refused and recorded: rollproof never runs a change against production",
        ),
        Step(
            "cutover, presenting the rehearsal grant",
            (
                "grant",
                "consume",
                "--grant",
                "grants/rehearsal.grant",
                "--lane",
                "cutover",
                *lane_args,
            ),
            3,
            "refused and recorded: the lanes below are not reached",
        ),
        Step(
            "an operator cannot PROCEED without a consumed grant for the lane",
            (
                "decide",
                GOVERNED_CHANGE,
                "--proceed",
                "production-apply",
                "--reason",
                "ship it",
                "--key",
                "keys/alice.key",
            ),
            3,
            "",
        ),
        Step("every change, where it stands", ("status",), 0, ""),
        Step(
            "alice signs a ledger checkpoint, kept outside the database",
            ("ledger", "checkpoint", "--key", "keys/alice.key"),
            0,
            "a restored older or truncated ledger no longer verifies against it",
        ),
        Step("the ledger, re-derived from its bytes", ("ledger", "verify"), 0, ""),
    ]


def prepare_governed_demo(workdir: Path, *, progress: Progress | None = None) -> list[Step]:
    """Build the sample database and the change in `workdir`; the steps to run there."""
    say = progress or (lambda _msg: None)
    _prepare_workdir(workdir)
    say("building the sample production database")
    build_sample_database(workdir / "production.db")
    cdir = workdir / "changes" / GOVERNED_CHANGE
    cdir.mkdir(parents=True)
    for name, text in CHANGES[GOVERNED_CHANGE].items():
        (cdir / name).write_text(text)
    return _steps()
