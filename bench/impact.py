"""Measured impact at a million rows: the figures docs/impact.md quotes.

    python bench/impact.py                      # 1,000,000 rows (PostgreSQL and SQLite)
    python bench/impact.py --rows 200000        # smaller, quicker

Servers: ROLLPROOF_BENCH_PG_SOURCE and ROLLPROOF_BENCH_PG_SCRATCH (or the test suite's
ROLLPROOF_TEST_PG_SOURCE and ROLLPROOF_TEST_PG_SCRATCH) name a source and a scratch server,
superuser DSNs on different clusters. The source gets a database `rp_bench_impact` (dropped at
the end) with `items` (the given rows), `customers` (1,000) and `orders` (the given rows).

Each change runs as rollproof's transaction leg runs it: on a clone of the source, under the
change role, in one transaction that is rolled back, with the meter reading locks, relfilenodes
and the WAL position between statements (rollproof.engines.postgres.impact). "bare" is the same
statement on the same clone without the meter (psycopg, one transaction, rolled back), to show
what measuring costs. SQLite: a file with `items` of the given rows, rebuilt by the 12-step
ALTER TABLE, through `rollproof.rehearse` (transaction leg only).

Results are printed as a Markdown table and written to bench/results/impact-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from rollproof.core.canonical import sha256_hex
from rollproof.core.change import Script, load_change
from rollproof.core.guard import SurfaceGuard
from rollproof.core.impact import impact_json
from rollproof.core.model import LegName
from rollproof.engines.postgres.session import PostgresSession
from rollproof.rehearse.flow import rehearse
from rollproof.rehearse.report import report_json

DB = "rp_bench_impact"
CASES = {
    "volatile default": "ALTER TABLE items ADD COLUMN seen_at timestamptz "
    "DEFAULT clock_timestamp();",
    "constant default": "ALTER TABLE items ADD COLUMN note text DEFAULT 'n/a';",
    "foreign key": "ALTER TABLE orders ADD CONSTRAINT orders_customer_fk "
    "FOREIGN KEY (customer_id) REFERENCES customers (id);",
}
SQLITE_REBUILD = """
CREATE TABLE items_new (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER NOT NULL);
INSERT INTO items_new SELECT id, name, qty FROM items;
DROP TABLE items;
ALTER TABLE items_new RENAME TO items;
"""


def servers() -> tuple[str, str]:
    for prefix in ("ROLLPROOF_BENCH_PG", "ROLLPROOF_TEST_PG"):
        source, scratch = os.environ.get(f"{prefix}_SOURCE"), os.environ.get(f"{prefix}_SCRATCH")
        if source and scratch:
            return source.split()[0], scratch.split()[0]
    raise SystemExit("set ROLLPROOF_BENCH_PG_SOURCE and ROLLPROOF_BENCH_PG_SCRATCH")


def with_db(dsn: str, dbname: str) -> str:
    p = conninfo_to_dict(dsn)
    where = f"host={p.get('host', '')}&port={p.get('port', '')}"
    return f"postgresql://{p.get('user', '')}@/{dbname}?{where}"


def make_source(server: str, rows: int) -> str:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB)))
    dsn = with_db(server, DB)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"""
            CREATE TABLE customers (id integer PRIMARY KEY, name text NOT NULL);
            CREATE TABLE orders (id integer PRIMARY KEY, customer_id integer NOT NULL,
                                 total integer);
            CREATE TABLE items (id integer PRIMARY KEY, name varchar(100) NOT NULL,
                                qty integer NOT NULL);
            INSERT INTO customers SELECT i, 'customer ' || i FROM generate_series(1, 1000) i;
            INSERT INTO orders SELECT i, 1 + i % 1000, i FROM generate_series(1, {rows}) i;
            INSERT INTO items SELECT i, 'item ' || i, i % 97 FROM generate_series(1, {rows}) i;
            """.encode()
        )
        conn.execute("VACUUM ANALYZE")
    return dsn


def bare_ms(session: PostgresSession, statement: str, runs: int) -> float:
    """The statement alone on the clone, in a transaction rolled back: no meter."""
    times = []
    target = session.scratch.with_db(session.clone_db)
    with psycopg.connect(target.conninfo, autocommit=True) as conn:
        for _ in range(runs):
            conn.execute("BEGIN")
            started = time.perf_counter()
            conn.execute(statement.encode())
            times.append((time.perf_counter() - started) * 1000)
            conn.execute("ROLLBACK")
    return statistics.median(times)


def postgres(rows: int, runs: int) -> list[dict[str, Any]]:
    source_server, scratch = servers()
    dsn = make_source(source_server, rows)
    guard = SurfaceGuard(reads=(), writes=("items", "orders", "customers"))
    session = PostgresSession(dsn, scratch=scratch, guard=guard)
    out = []
    try:
        session.fresh_clone()
        counts = {n: t.rows for n, t in session.snapshot_fingerprint().tables.items()}
        for name, statement in CASES.items():
            measured = []
            for _ in range(runs):
                outcome = session.run_in_transaction(
                    Script(statement, sha256_hex(statement.encode()), None), {}, None
                )
                assert outcome.script.ok, outcome.script.error
                assert outcome.impact is not None
                measured.append(impact_json(outcome.impact, rows_before=counts))
            impact = sorted(measured, key=lambda d: d["duration_us"])[len(measured) // 2]
            out.append(
                {
                    "engine": "postgresql",
                    "case": name,
                    "statement": statement,
                    "rows": rows,
                    "impact": impact,
                    "bare_ms": bare_ms(session, statement, runs),
                }
            )
    finally:
        session.close(keep=False)
        with psycopg.connect(source_server, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB))
            )
    return out


def sqlite(rows: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rollproof-bench-") as tmp:
        db = Path(tmp) / "prod" / "prod.db"
        db.parent.mkdir()
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER)")
            conn.executemany(
                "INSERT INTO items VALUES (?, ?, ?)",
                ((i, f"item {i}", i % 97) for i in range(1, rows + 1)),
            )
        change = Path(tmp) / "rebuild"
        change.mkdir()
        (change / "change.toml").write_text(
            f'apply_sql = """{SQLITE_REBUILD}"""\nrevert_sql = "SELECT 1;"\n'
            '[surfaces]\nwrites = ["items", "items_new"]\n'
        )
        result = rehearse(
            load_change(change), f"sqlite:///{db}", legs=(LegName.TRANSACTION,), workdir=Path(tmp)
        )
        return {
            "engine": "sqlite",
            "case": "12-step rebuild",
            "rows": rows,
            "impact": report_json(result)["impact"],
        }


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| engine | change | rows | time (bare) | strongest lock on the table, held | rewritten | "
        "WAL / pages written |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        imp = r["impact"]
        locks = ", ".join(
            f"{lk['relation']} {lk['mode']} {lk['held_us'] / 1000:,.0f} ms"
            for lk in imp["locks"]
            if lk["kind"] == "table"
        )
        rewrites = ", ".join(
            f"{w['relation']} ({w['bytes'] / 1e6:,.1f} MB)"
            for w in imp["rewrites"]
            if w["kind"] == "table"
        )
        io = (
            f"{imp['wal_bytes']:,} bytes of WAL"
            if r["engine"] == "postgresql"
            else f"{imp['pages_written']:,} pages; write lock {imp['write_lock_us'] / 1000:,.0f} ms"
        )
        bare = f" ({r['bare_ms']:,.0f} ms)" if "bare_ms" in r else ""
        lines.append(
            f"| {r['engine']} | {r['case']} | {r['rows']:,} | {imp['duration_us'] / 1000:,.0f} ms"
            f"{bare} | {locks or '-'} | {rewrites or 'none'} | {io} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results = [*postgres(args.rows, args.runs), sqlite(args.rows)]
    print(table(results))
    out = Path(__file__).parent / "results" / f"impact-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(
        json.dumps({"rows": args.rows, "runs": args.runs, "results": results}, indent=2) + "\n"
    )
    print(f"\nwrote {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")


if __name__ == "__main__":
    main()
