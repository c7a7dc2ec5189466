"""PostgreSQL benchmarks: rollproof's fingerprint beside pg_dump and a raw binary COPY, per shape.

    python bench/pg.py --quick                     # every shape at 100k rows, 3 runs
    python bench/pg.py --sizes 100000 1000000 --runs 5
    python bench/pg.py --sizes 1000000 --baseline  # also each table read whole on one session
    python bench/pg.py --clone --sizes 1000000     # the mixed data set, fingerprint and clone

Servers: ROLLPROOF_BENCH_PG_SOURCE and ROLLPROOF_BENCH_PG_SCRATCH name a source and a scratch
server (superuser DSNs, different clusters); run as root without them and two throwaway
clusters are made with Debian's pg_createcluster and dropped afterwards. Data is generated
inside the server from a fixed seed, one database per shape and size (kept between runs):

* `narrow`: a bigint primary key and three narrow columns (integer, double precision, 32
  characters of text);
* `nokey`: the same kind of columns without a primary key, duplicates in the leading columns,
  inserted in random order (read in "row-digests" order);
* `text500`: a bigint key and about 500 bytes of text per row;
* `jsonb`: a bigint key and a jsonb document (nested object, array, numbers, strings).

References, measured in the same run, alternating, medians, and reported as ratios:
* `pg_dump -t TABLE | sha256sum` (pg_dump's output follows physical row order and is not a
  content digest: a reference for speed only);
* `psql -c "COPY TABLE TO STDOUT (FORMAT binary)" | b3sum`: the table's bytes as fast as the
  server sends them, unordered, hashed by the BLAKE3 tool (Debian package b3sum; when it is
  missing the bench says so and leaves that column out).

`--clone` runs the older mixed data set (a keyed table, a table without a key, a composite
key) instead, timing the fingerprint of the whole database and rollproof's clone against
`pg_dump -Fd -j N -Z0` then `pg_restore -j N` by hand.
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

from rollproof.engines.postgres import contents
from rollproof.engines.postgres.session import PostgresSession
from rollproof.engines.postgres.source import fingerprint_source

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


SHAPES: dict[str, tuple[str, str]] = {
    "narrow": (
        "CREATE TABLE narrow (id bigint PRIMARY KEY, a integer, b double precision, c text)",
        "INSERT INTO narrow SELECT i, (random() * 1e6)::int, random() * 1000, md5(i::text) "
        "FROM generate_series(1, {n}) AS i",
    ),
    "nokey": (
        "CREATE TABLE nokey (kind text, account bigint, amount double precision, note text)",
        "INSERT INTO nokey SELECT (ARRAY['open', 'click', 'buy', NULL])[1 + i % 4], "
        "(random() * {n} / 3)::bigint, random() * 100, md5((i * 13)::text) "
        "FROM generate_series(1, {n}) AS i ORDER BY random()",
    ),
    "text500": (
        "CREATE TABLE text500 (id bigint PRIMARY KEY, body text)",
        "INSERT INTO text500 SELECT i, repeat(md5(i::text), 15) || i "
        "FROM generate_series(1, {n}) AS i",
    ),
    "jsonb": (
        "CREATE TABLE jsonb (id bigint PRIMARY KEY, doc jsonb)",
        "INSERT INTO jsonb SELECT i, jsonb_build_object('id', i, 'name', md5(i::text), "
        "'tags', jsonb_build_array('a', i % 7, random()), "
        "'nested', jsonb_build_object('x', random(), 'y', 'str' || i)) "
        "FROM generate_series(1, {n}) AS i",
    ),
}


def build_shape(admin_dsn: str, shape: str, rows: int) -> str:
    """The database holding one shape at one size (made once, kept for later runs)."""
    db = f"bench_{shape}_{rows}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone()
        if exists is None:
            conn.execute(f'CREATE DATABASE "{db}"')
    dsn = with_db(admin_dsn, db)
    with psycopg.connect(dsn, autocommit=True) as conn:
        have = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (shape,)).fetchone()
        if not (have and have[0]):
            create, load = SHAPES[shape]
            conn.execute("SELECT setseed(0.25)")
            conn.execute(create.encode())
            conn.execute(load.format(n=rows).encode())
            conn.execute(f"VACUUM ANALYZE {shape}".encode())
    return dsn


def unsplit_fingerprint(dsn: str) -> object:
    """The fingerprint as read before key ranges: each table on one session (the same
    digests; for `--baseline`)."""
    split = contents.SPLIT_BYTES
    contents.SPLIT_BYTES = 1 << 62
    try:
        return fingerprint_source(dsn)
    finally:
        contents.SPLIT_BYTES = split


def bench_shape(
    dsn: str, shape: str, rows: int, runs: int, baseline: bool = False
) -> dict[str, object]:
    cases: dict[str, Callable[[], object]] = {
        "rollproof fingerprint": lambda: fingerprint_source(dsn),
        "pg_dump -t | sha256sum": lambda: shell(f"pg_dump -t {shape} '{dsn}' | sha256sum"),
    }
    if shutil.which("b3sum"):
        copy = f"COPY {shape} TO STDOUT (FORMAT binary)"
        cases["COPY binary | b3sum"] = lambda: shell(f"psql -Xq '{dsn}' -c '{copy}' | b3sum")
    if baseline:
        cases["fingerprint, unsplit"] = lambda: unsplit_fingerprint(dsn)
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(runs):
        for name, fn in cases.items():
            samples[name].append(timed(fn))
    seconds = {k: statistics.median(v) for k, v in samples.items()}
    fp = seconds["rollproof fingerprint"]
    return {
        "shape": shape,
        "rows": rows,
        "runs": runs,
        "seconds": seconds,
        "samples": samples,
        "ratios": {k: fp / v for k, v in seconds.items() if k != "rollproof fingerprint"},
    }


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


def print_shapes(results: list[dict[str, object]], runs: int, b3sum: bool) -> None:
    print(f"{os.cpu_count()} cores; {runs} runs, medians, alternating.")
    if not b3sum:
        print("b3sum is not installed (Debian package b3sum): the binary COPY column is left out.")
    for shape in SHAPES:
        rows = [r for r in results if r["shape"] == shape]
        if not rows:
            continue
        print(f"\n{shape}\n")
        print("| rows | fingerprint | pg_dump -t \\| sha256sum | ratio ", end="")
        print("| COPY binary \\| b3sum | ratio |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            s, q = r["seconds"], r["ratios"]
            assert isinstance(s, dict)
            assert isinstance(q, dict)
            fp, dump = s["rollproof fingerprint"], s["pg_dump -t | sha256sum"]
            raw = s.get("COPY binary | b3sum")
            raw_cols = f"{raw:.2f} s | {q['COPY binary | b3sum']:.2f}x" if raw else "- | -"
            ratio = q["pg_dump -t | sha256sum"]
            line = f"| {r['rows']:,} | {fp:.2f} s | {dump:.2f} s | {ratio:.2f}x | {raw_cols} |"
            unsplit = s.get("fingerprint, unsplit")
            print(line + (f" unsplit {unsplit:.2f} s ({fp / unsplit:.2f}x)" if unsplit else ""))


def print_clone(results: list[dict[str, object]], runs: int, clone: bool) -> None:
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100k rows, 3 runs")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    parser.add_argument(
        "--clone",
        action="store_true",
        help="the mixed data set: whole-database fingerprint and clone",
    )
    parser.add_argument(
        "--fingerprint-only", action="store_true", help="with --clone: time no clone"
    )
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="also time the fingerprint with every table read whole on one session (alternating)",
    )
    args = parser.parse_args()
    sizes, runs = ([100_000], 3) if args.quick else (args.sizes, args.runs)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    with servers() as (source_admin, scratch_admin):
        if args.clone:
            clone = not args.fingerprint_only
            results = [bench_size(source_admin, scratch_admin, n, runs, clone) for n in sizes]
            print_clone(results, runs, clone)
            (out / f"postgres-{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")
            return 0
        results = []
        for n in sizes:
            for shape in args.shapes:
                dsn = build_shape(source_admin, shape, n)
                results.append(bench_shape(dsn, shape, n, runs, args.baseline))
    print_shapes(results, runs, shutil.which("b3sum") is not None)
    record = {"cores": os.cpu_count(), "runs": runs, "b3sum": shutil.which("b3sum") is not None}
    path = out / f"postgres-shapes-{stamp}.json"
    path.write_text(json.dumps({**record, "results": results}, indent=2) + "\n")
    print(f"\n{path.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
