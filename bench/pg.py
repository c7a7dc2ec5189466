"""PostgreSQL benchmarks: rollproof's fingerprint and clone beside pg_dump done by hand.

    python bench/pg.py --quick            # 100k rows, 3 runs
    python bench/pg.py --sizes 100000 1000000 --runs 5
    python bench/pg.py --sizes 1000000 --runs 7 --fingerprint-only

Servers: ROLLPROOF_BENCH_PG_SOURCE and ROLLPROOF_BENCH_PG_SCRATCH name a source and a scratch
server (superuser DSNs, different clusters); run as root without them and two throwaway
clusters are made with Debian's pg_createcluster and dropped afterwards. The data has the
same shape as bench/dataset.py's (a keyed table, a table without a primary key, a composite
key, text, floats, bytea, NULLs) and is generated inside the server from a fixed seed.

References, measured in the same run, alternating, medians:
* fingerprint: `pg_dump DB | sha256sum` (pg_dump's output is not stable across runs and follows
  physical row order, so it is a reference for speed only, not a content digest);
* clone: `pg_dump -Fd -j N -Z0` then `createdb` and `pg_restore -j N` by hand, against
  rollproof's clone (snapshot database on the scratch server, template copy for the working
  clone) with its isolation proof.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from rollproof.engines.postgres.session import PostgresSession, fingerprint_source

SCHEMA = """
DROP TABLE IF EXISTS accounts, events, items;
CREATE TABLE accounts (id bigint PRIMARY KEY, email text NOT NULL, name text,
                       balance double precision, visits bigint, bio text, avatar bytea);
CREATE INDEX idx_accounts_email ON accounts(email);
CREATE TABLE events (account_id bigint, kind text, at text, amount double precision,
                     payload text);
CREATE TABLE items (sku text NOT NULL, warehouse int NOT NULL, qty int, note text, tag bytea,
                    PRIMARY KEY (sku, warehouse));
"""

LOAD = """
SELECT setseed(0.25);
INSERT INTO accounts
SELECT i, 'user' || i || '@example.com',
       CASE WHEN i % 11 = 0 THEN NULL ELSE md5(i::text) END,
       round((random() * 1e6)::numeric, 2)::double precision, (random() * 1e6)::bigint,
       repeat(md5((i * 7)::text), 6),
       CASE WHEN i % 3 = 0 THEN decode(md5(i::text) || md5((i + 1)::text), 'hex') END
FROM generate_series(1, {acc}) AS i;
INSERT INTO events
SELECT (random() * {acc})::bigint, (ARRAY['open', 'click', 'buy', NULL])[1 + i % 4],
       '2026-' || lpad((1 + i % 12)::text, 2, '0') || '-01', random() * 100,
       repeat(md5((i * 13)::text), 7)
FROM generate_series(1, {evt}) AS i;
INSERT INTO items
SELECT 'SKU-' || lpad(i::text, 9, '0'), i % 7, (random() * 1000)::int,
       repeat(md5((i * 17)::text), 7), decode(md5(i::text), 'hex')
FROM generate_series(1, {items}) AS i;
ANALYZE;
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def servers() -> Iterator[tuple[str, str]]:
    src, scratch = (
        os.environ.get("ROLLPROOF_BENCH_PG_SOURCE"),
        os.environ.get("ROLLPROOF_BENCH_PG_SCRATCH"),
    )
    if src and scratch:
        yield src, scratch
        return
    if os.geteuid() != 0 or not shutil.which("pg_createcluster"):
        raise SystemExit(
            "set ROLLPROOF_BENCH_PG_SOURCE and ROLLPROOF_BENCH_PG_SCRATCH, or run as root "
            "with Debian's postgresql installed"
        )
    version = sorted(os.listdir("/usr/lib/postgresql"), key=int)[-1]
    made = []
    try:
        dsns = []
        for role in ("source", "scratch"):
            name, port = f"rp_bench_{role}_{os.getpid()}", _free_port()
            subprocess.run(
                [
                    "pg_createcluster",
                    version,
                    name,
                    "-p",
                    str(port),
                    "--start",
                    "-e",
                    "UTF8",
                    "--locale",
                    "C.UTF-8",
                    "--",
                    "--auth-local=trust",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            made.append(name)
            dsns.append(f"postgresql://postgres@/postgres?host=/var/run/postgresql&port={port}")
        yield dsns[0], dsns[1]
    finally:
        for name in made:
            subprocess.run(["pg_dropcluster", "--stop", version, name], check=False)


def with_db(dsn: str, db: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + db, parts.query, parts.fragment))


def build(admin_dsn: str, rows: int) -> str:
    db = f"bench_{rows}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone()
        if exists is None:
            conn.execute(f'CREATE DATABASE "{db}"')
    dsn = with_db(admin_dsn, db)
    with psycopg.connect(dsn, autocommit=True) as conn:
        have = conn.execute("SELECT to_regclass('items') IS NOT NULL").fetchone()
        if not (have and have[0]):
            acc, evt = rows * 4 // 10, rows * 4 // 10
            conn.execute(SCHEMA)
            conn.execute(LOAD.format(acc=acc, evt=evt, items=rows - acc - evt).encode())
    return dsn


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def shell(cmd: str) -> None:
    subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True, stdout=subprocess.DEVNULL)


def bench_size(
    source_admin: str, scratch_admin: str, rows: int, runs: int, clone: bool = True
) -> dict[str, object]:
    dsn = build(source_admin, rows)
    jobs = max(1, min(4, os.cpu_count() or 1))
    work = Path(tempfile.mkdtemp(prefix="rollproof-pg-bench-"))
    target = "bench_restore_by_hand"

    def by_hand_clone() -> None:
        shutil.rmtree(work / "dump", ignore_errors=True)
        shell(f"pg_dump -Fd -j {jobs} -Z0 -f '{work / 'dump'}' '{dsn}'")
        with psycopg.connect(scratch_admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{target}"')
            conn.execute(f'CREATE DATABASE "{target}"')
        shell(f"pg_restore -j {jobs} -d '{with_db(scratch_admin, target)}' '{work / 'dump'}'")

    def rollproof_clone() -> None:
        session = PostgresSession(dsn, scratch=scratch_admin)
        session.fresh_clone()
        session.close(keep=False)

    cases: dict[str, Callable[[], object]] = {
        "rollproof fingerprint": lambda: fingerprint_source(dsn),
        "pg_dump | sha256sum": lambda: shell(f"pg_dump '{dsn}' | sha256sum"),
    }
    if clone:
        cases["rollproof clone"] = rollproof_clone
        cases["pg_dump -Fd | pg_restore by hand"] = by_hand_clone
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(runs):
        for name, fn in cases.items():
            samples[name].append(timed(fn))
    shutil.rmtree(work, ignore_errors=True)
    with psycopg.connect(scratch_admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{target}"')
    return {"rows": rows, "seconds": {k: statistics.median(v) for k, v in samples.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100k rows, 3 runs")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--fingerprint-only", action="store_true", help="time the fingerprint, not the clone"
    )
    args = parser.parse_args()
    sizes, runs = ([100_000], 3) if args.quick else (args.sizes, args.runs)
    clone = not args.fingerprint_only
    with servers() as (source_admin, scratch_admin):
        results = [bench_size(source_admin, scratch_admin, n, runs, clone) for n in sizes]
    print(f"{os.cpu_count()} cores; {runs} runs, medians.\n")
    print("| rows | fingerprint | vs pg_dump \\| sha256sum | clone | vs pg_dump -Fd + pg_restore |")
    print("|---|---|---|---|---|")
    for r in results:
        s = r["seconds"]
        assert isinstance(s, dict)
        fp, dump = s["rollproof fingerprint"], s["pg_dump | sha256sum"]
        if clone:
            cl, hand = s["rollproof clone"], s["pg_dump -Fd | pg_restore by hand"]
            cloned = f"{cl:.2f} s | {cl / hand:.2f}x"
        else:
            cloned = "- | -"
        print(f"| {r['rows']:,} | {fp:.2f} s | {fp / dump:.2f}x | {cloned} |")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (out / f"postgres-{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
