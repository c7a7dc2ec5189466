"""A whole PostgreSQL rehearsal beside the manual dump, restore, apply and revert it replaces.

    python bench/pg_rehearsal.py --quick                         # 100k rows, both shapes, 3 runs
    python bench/pg_rehearsal.py --sizes 100000 1000000 --runs 5
    python bench/pg_rehearsal.py --sizes 1000000 --shapes keyed --runs 1 --trace --profile

Servers: ROLLPROOF_BENCH_PG_SOURCE and ROLLPROOF_BENCH_PG_SCRATCH (superuser DSNs of two
different clusters). Each shape is one table generated inside the source server from fixed
values: `keyed` (bigint primary key, an integer, a 32-character text) and `keyless` (the same
columns, no key). The change updates 1/7 of the rows; its revert puts them back.

Measured in the same run, alternating, medians:
* rollproof: `rehearse()` with the transaction, restore and revert legs, the packet written
  (in-process, so the CLI's import time is not in it);
* manual: `pg_dump -Fd -j 2 -Z0` of the source, `createdb` and `pg_restore -j 2` on the scratch
  server, `psql` running the apply and then the revert, the database dropped afterwards.

`--trace` prints rollproof's progress messages with the seconds since the rehearsal began and,
after each rehearsal, the time spent in each step of the PostgreSQL session (a per-phase timer
wrapped around its methods); `--profile` writes a cProfile of one rehearsal (the top 40 by
cumulative time) to stdout. Results go to bench/results/pg-rehearsal-<UTC stamp>.json (or the
directory ROLLPROOF_BENCH_RESULTS names).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import psycopg

from rollproof.core.change import load_change
from rollproof.core.model import LegName
from rollproof.rehearse.flow import rehearse
from rollproof.rehearse.packet import write_report

SHAPES = {
    "keyed": "CREATE TABLE t (id bigint PRIMARY KEY, v int NOT NULL, note text)",
    "keyless": "CREATE TABLE t (id bigint, v int NOT NULL, note text)",
}
LOAD = "INSERT INTO t SELECT i, (i % 1000)::int, md5(i::text) FROM generate_series(1, {rows}) i"
APPLY = "UPDATE t SET v = v + 1 WHERE id % 7 = 0;\n"
REVERT = "UPDATE t SET v = v - 1 WHERE id % 7 = 0;\n"
LEGS = (LegName.TRANSACTION, LegName.RESTORE, LegName.REVERT)


def with_db(dsn: str, db: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + db, parts.query, parts.fragment))


def libpq_env(dsn: str) -> dict[str, str]:
    """PGHOST/PGPORT/PGUSER for the client programs of the manual path."""
    parts = urlsplit(dsn)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    env = dict(os.environ)
    env["PGHOST"] = query.get("host", parts.hostname or "")
    env["PGPORT"] = query.get("port", str(parts.port or 5432))
    env["PGUSER"] = parts.username or "postgres"
    return env


def build(admin: str, shape: str, rows: int) -> str:
    """The source database for one shape and size, made once and kept."""
    db = f"rp_bench_{shape}_{rows}"
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{db}"')
    dsn = with_db(admin, db)
    with psycopg.connect(dsn, autocommit=True) as conn:
        have = conn.execute("SELECT to_regclass('t') IS NOT NULL").fetchone()
        if not (have and have[0]):
            conn.execute(SHAPES[shape])
            conn.execute(LOAD.format(rows=rows).encode())
            conn.execute("VACUUM ANALYZE t")
    return dsn


def make_change(root: Path) -> Path:
    change = root / "bench-update"
    change.mkdir()
    (change / "apply.sql").write_text(APPLY)
    (change / "revert.sql").write_text(REVERT)
    (change / "change.toml").write_text(
        'apply = "apply.sql"\nrevert = "revert.sql"\n\n[surfaces]\nreads = ["t"]\nwrites = ["t"]\n'
    )
    return change


PHASES = (
    "_prepare",
    "_dump",
    "_restore",
    "_enforce",
    "_seal_snapshot",
    "_remake_clone",
    "fresh_clone",
    "run_in_transaction",
    "run_script",
    "fingerprint_clone",
    "restore_clone",
    "branch",
    "take_branch",
    "finish_isolation",
    "close",
)


def time_phases() -> dict[str, list[float]]:
    """Wrap the PostgreSQL session's steps with a timer (what --trace prints per phase)."""
    import functools

    from rollproof.engines.postgres.session import PostgresSession

    spent: dict[str, list[float]] = {}
    for name in PHASES:
        method = getattr(PostgresSession, name, None)
        if method is None or getattr(method, "_timed", False):
            continue

        def wrap(fn, name=name):  # type: ignore[no-untyped-def]
            @functools.wraps(fn)
            def timed(*a, **k):  # type: ignore[no-untyped-def]
                t = time.perf_counter()
                try:
                    return fn(*a, **k)
                finally:
                    spent.setdefault(name, []).append(time.perf_counter() - t)

            timed._timed = True  # type: ignore[attr-defined]
            return timed

        setattr(PostgresSession, name, wrap(method))
    return spent


def rollproof_run(
    source: str, scratch: str, change_dir: Path, out: Path, *, trace: bool = False
) -> float:
    started = time.perf_counter()

    def say(msg: str) -> None:
        if trace:
            print(f"  {time.perf_counter() - started:7.3f}s  {msg}", flush=True)

    result = rehearse(load_change(change_dir), source, legs=LEGS, scratch=scratch, progress=say)
    write_report(result, out)
    elapsed = time.perf_counter() - started
    if str(result.overall) != "PASS" or result.exit_code != 0:
        raise SystemExit(f"rehearsal did not pass: {result.overall} {result.legs}")
    say("done")
    return elapsed


def print_phases(spent: dict[str, list[float]]) -> None:
    for name, times in spent.items():
        each = ", ".join(f"{t:.3f}" for t in times)
        print(f"  {name:20} {len(times):2}x {sum(times):6.3f} s  ({each})")
    spent.clear()


def manual_run(source: str, scratch: str, work: Path) -> float:
    dump = work / "dump"
    db = f"rp_bench_manual_{os.getpid()}"
    src_env, scr_env = libpq_env(source), libpq_env(scratch)
    src_db = urlsplit(source).path.lstrip("/")

    def run(argv: list[str], env: dict[str, str]) -> None:
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)

    started = time.perf_counter()
    run(["pg_dump", "-Fd", "-j", "2", "-Z0", "-f", str(dump), src_db], src_env)
    run(["createdb", db], scr_env)
    run(["pg_restore", "-j", "2", "-d", db, str(dump)], scr_env)
    run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", APPLY], scr_env)
    run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", REVERT], scr_env)
    elapsed = time.perf_counter() - started
    run(["dropdb", db], scr_env)
    subprocess.run(["rm", "-rf", str(dump)], check=True)
    return elapsed


def drop_caches(scratch: str) -> None:
    """Leave no snapshot cache behind on the scratch server."""
    import psycopg

    from rollproof.engines.postgres import snapcache

    with psycopg.connect(scratch, autocommit=True) as conn:
        snapcache.drop_caches(conn)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=sorted(SHAPES))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="100k rows, 3 runs")
    ap.add_argument("--trace", action="store_true", help="timestamped progress messages")
    ap.add_argument("--profile", action="store_true", help="cProfile one rehearsal per case")
    ap.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    ap.add_argument("--label", default="", help="a word recorded in the results (before, after)")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="keep a sealed snapshot on the scratch server (ROLLPROOF_PG_SNAPSHOT_CACHE=1): one "
        "untimed rehearsal per case fills it, the timed ones reuse it; dropped after each case",
    )
    args = ap.parse_args()
    if args.reuse:
        os.environ["ROLLPROOF_PG_SNAPSHOT_CACHE"] = "1"
    if args.quick:
        args.sizes, args.runs = [100_000], 3
    source = os.environ.get("ROLLPROOF_BENCH_PG_SOURCE")
    scratch = os.environ.get("ROLLPROOF_BENCH_PG_SCRATCH")
    if not (source and scratch):
        raise SystemExit("set ROLLPROOF_BENCH_PG_SOURCE and ROLLPROOF_BENCH_PG_SCRATCH")
    cases = []
    with tempfile.TemporaryDirectory(prefix="rp-bench-") as tmp:
        root = Path(tmp)
        change = make_change(root)
        for rows in args.sizes:
            for shape in args.shapes:
                dsn = build(source, shape, rows)
                times: dict[str, list[float]] = {"rollproof": [], "manual": []}
                if args.reuse:
                    (root / "warm").mkdir()
                    fill = rollproof_run(dsn, scratch, change, root / "warm" / "packet")
                    print(f"{rows:>9,} {shape:8} rehearsal that fills the cache {fill:6.2f} s")
                    subprocess.run(["rm", "-rf", str(root / "warm")], check=True)
                for i in range(args.runs):
                    work = root / f"run-{rows}-{shape}-{i}"
                    work.mkdir()
                    # Alternate which goes first, so neither always meets a warm cache.
                    order = ("manual", "rollproof") if i % 2 else ("rollproof", "manual")
                    for which in order:
                        if which == "manual":
                            times["manual"].append(manual_run(dsn, scratch, work))
                            continue
                        out = work / "packet"
                        if args.profile and i == 0:
                            prof = cProfile.Profile()
                            prof.enable()
                        spent = time_phases() if args.trace else {}
                        times["rollproof"].append(
                            rollproof_run(dsn, scratch, change, out, trace=args.trace)
                        )
                        if args.trace:
                            print_phases(spent)
                        if args.profile and i == 0:
                            prof.disable()
                            pstats.Stats(prof, stream=sys.stdout).sort_stats(
                                "cumulative"
                            ).print_stats(40)
                    subprocess.run(["rm", "-rf", str(work)], check=True)
                rp, manual = (
                    statistics.median(times["rollproof"]),
                    statistics.median(times["manual"]),
                )
                case = {
                    "rows": rows,
                    "shape": shape,
                    "rollproof_s": round(rp, 3),
                    "manual_s": round(manual, 3),
                    "ratio": round(rp / manual, 2),
                    "reuse": args.reuse,
                    "runs": {k: [round(v, 3) for v in vs] for k, vs in times.items()},
                }
                cases.append(case)
                if args.reuse:
                    drop_caches(scratch)
                print(
                    f"{rows:>9,} {shape:8} rollproof {rp:6.2f} s  manual {manual:6.2f} s  "
                    f"ratio {rp / manual:4.2f}x",
                    flush=True,
                )
    if args.no_save:
        return
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    default = Path(__file__).resolve().parent / "results"
    results = Path(os.environ.get("ROLLPROOF_BENCH_RESULTS", default))
    results.mkdir(exist_ok=True)
    path = results / f"pg-rehearsal-{stamp}.json"
    path.write_text(
        json.dumps(
            {
                "benchmark": "pg-rehearsal",
                "label": args.label,
                "legs": [str(leg) for leg in LEGS],
                "cpus": os.cpu_count(),
                "python": sys.version.split()[0],
                "cases": cases,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
