"""SQLite fingerprint against `sqlite3 DB .sha3sum`, one table shape at a time.

    python bench/shapes.py --quick                       # 100k and 1M rows, 3 runs (a few minutes)
    python bench/shapes.py --sizes 100000 1000000 10000000 --shapes narrow --runs 3

Each shape is a one-table database generated inside SQLite from fixed formulas (no random
source, so a size always gives the same bytes), cached in the work directory between runs:

* narrow: `id INTEGER PRIMARY KEY`, an integer, a 20-character text;
* nopk-dups: the same three columns without a key, every row about four times (row digests);
* without-rowid: a text primary key, WITHOUT ROWID, an integer and a 20-character text;
* indexed: the narrow columns and three more, with five secondary indexes;
* wide: twelve columns of every storage class (integers, reals, texts, blobs, NULLs), about
  460 bytes a row on disk.

rollproof's fingerprint is timed in this process (`fingerprint_file`, as the CLI calls it,
worker processes included); `.sha3sum` in the sqlite3 shell, process start included. The two
alternate within every run, after one untimed warm-up each; medians and their ratio are
reported (below 1.00x rollproof is faster), with rollproof's time per row; so are the CPU
seconds each used (all processes: rollproof's workers, the shell), which a machine shared with
other work disturbs less than wall time. Results are printed as Markdown and written as JSON to
bench/results/sqlite-shapes-<time>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import apsw

from rollproof.engines.sqlite.source import fingerprint_file

ROWS = "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c LIMIT :rows) "
TEXT20 = "printf('%020d', (i * 2654435761) % 99999999989)"

SHAPES: dict[str, tuple[str, str]] = {
    "narrow": (
        "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, s TEXT)",
        f"INSERT INTO t {ROWS} SELECT i, (i * 48271) % 1000000007, {TEXT20} FROM c",
    ),
    "nopk-dups": (
        "CREATE TABLE t (a INTEGER, n INTEGER, s TEXT)",
        f"INSERT INTO t {ROWS} SELECT i, (i * 48271) % 1000000007, {TEXT20} "
        "FROM (SELECT (i * 7919) % max(:rows / 4, 1) AS i FROM c)",
    ),
    "without-rowid": (
        "CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER, s TEXT) WITHOUT ROWID",
        f"INSERT INTO t {ROWS} SELECT printf('%08x-%d', (i * 2654435761) % 4294967296, i), "
        f"i % 1000, {TEXT20} FROM c",
    ),
    "indexed": (
        "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, s TEXT, a INTEGER, b TEXT, r REAL);"
        "CREATE INDEX t_n ON t (n); CREATE INDEX t_s ON t (s); CREATE INDEX t_a ON t (a);"
        "CREATE INDEX t_b ON t (b); CREATE INDEX t_ar ON t (a, r)",
        f"INSERT INTO t {ROWS} SELECT i, (i * 48271) % 1000000007, {TEXT20}, i % 977, "
        "printf('b%06d', i % 50021), (i % 10007) / 7.0 FROM c",
    ),
    "wide": (
        "CREATE TABLE t (id INTEGER PRIMARY KEY, i1 INTEGER, i2 INTEGER, r1 REAL, r2 REAL, "
        "t1 TEXT, t2 TEXT, t3 TEXT, b1 BLOB, b2 BLOB, n1, t4 TEXT)",
        f"INSERT INTO t {ROWS} SELECT i, (i * 48271) % 1000000007, i * 1099511627791, "
        "i / 3.0, CASE WHEN i % 5 THEN (i % 1000) * 0.25 END, "
        "printf('%020d-%020d-%020d-%020d-%016d', i, i * 7, i * 13, i * 17, i * 19), "
        "printf('%-100s', 'text ' || i), CASE WHEN i % 3 THEN printf('%030d', i) END, "
        "CAST(printf('%032d%032d', i * 31, i * 37) AS BLOB), "
        "CASE WHEN i % 2 THEN CAST(printf('%032d', i) AS BLOB) END, "
        "CASE i % 4 WHEN 0 THEN i WHEN 1 THEN i / 2.0 WHEN 2 THEN 'n' || i END, "
        "printf('%060d', i * 41) FROM c",
    ),
}


def build(path: Path, shape: str, rows: int) -> None:
    """Create `path` holding `rows` rows of `shape` (written under a temporary name first)."""
    ddl, insert = SHAPES[shape]
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    with contextlib.closing(sqlite3.connect(partial, isolation_level=None)) as conn:
        conn.executescript(ddl)
        conn.execute("BEGIN")
        conn.execute(insert, {"rows": rows})
        conn.execute("COMMIT")
    partial.rename(path)


def sha3sum(db: Path) -> None:
    subprocess.run(["sqlite3", str(db), ".sha3sum"], check=True, stdout=subprocess.DEVNULL)


def _cpu() -> float:
    """CPU seconds of this process and of its finished children (workers, the shell)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (all processes) of one call."""
    cpu, start = _cpu(), time.perf_counter()
    fn()
    return time.perf_counter() - start, _cpu() - cpu


def bench(db: Path, rows: int, runs: int) -> dict[str, object]:
    cases = {
        "rollproof fingerprint": lambda: fingerprint_file(db),
        "sqlite3 .sha3sum": lambda: sha3sum(db),
    }
    for fn in cases.values():  # warm the page cache and first-use costs, untimed
        fn()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, fn in cases.items():
            wall, used = timed(fn)
            samples[name].append(wall)
            cpu[name].append(used)
    ours = statistics.median(samples["rollproof fingerprint"])
    theirs = statistics.median(samples["sqlite3 .sha3sum"])
    ours_cpu = statistics.median(cpu["rollproof fingerprint"])
    theirs_cpu = statistics.median(cpu["sqlite3 .sha3sum"])
    return {
        "rows": rows,
        "bytes": db.stat().st_size,
        "samples": samples,
        "cpu_samples": cpu,
        "rollproof_s": ours,
        "sha3sum_s": theirs,
        "ratio": ours / theirs,
        "cpu_ratio": ours_cpu / theirs_cpu,
        "ns_per_row": ours / rows * 1e9,
        "cpu_ns_per_row": ours_cpu / rows * 1e9,
    }


def render(results: list[dict[str, object]]) -> str:
    lines = [
        "| shape | rows | MB | rollproof | `.sha3sum` | ratio | ns/row | CPU ratio | CPU ns/row |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['shape']} | {r['rows']:,} | {int(str(r['bytes'])) / 1e6:.0f} "
            f"| {float(str(r['rollproof_s'])):.3f} s | {float(str(r['sha3sum_s'])):.3f} s "
            f"| {float(str(r['ratio'])):.2f}x | {float(str(r['ns_per_row'])):.0f} "
            f"| {float(str(r['cpu_ratio'])):.2f}x | {float(str(r['cpu_ns_per_row'])):.0f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100k and 1M rows, 3 runs")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=list(SHAPES))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--work", type=Path, default=None, help="where databases are kept")
    parser.add_argument("--keep", action="store_true", help="keep the generated databases")
    args = parser.parse_args()
    sizes, runs = ([100_000, 1_000_000], 3) if args.quick else (args.sizes, args.runs)
    work = args.work or Path(tempfile.gettempdir()) / "rollproof-bench-shapes"
    work.mkdir(parents=True, exist_ok=True)
    machine = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(terse=True),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "sqlite_in_workers": apsw.sqlite_lib_version(),
        "sqlite3_shell": subprocess.run(
            ["sqlite3", "--version"], capture_output=True, text=True, check=True
        ).stdout.split()[0],
        "load_before": os.getloadavg(),
        "runs": runs,
    }
    results: list[dict[str, object]] = []
    for rows in sizes:
        for shape in args.shapes:
            db = work / f"{shape}-{rows}.db"
            if not db.exists():
                print(f"generating {shape}, {rows:,} rows …", file=sys.stderr)
                build(db, shape, rows)
            results.append({"shape": shape, **bench(db, rows, runs)})
            print(render(results[-1:]).splitlines()[-1], file=sys.stderr)
            if not args.keep:
                db.unlink()
    machine["load_after"] = os.getloadavg()
    print(render(results))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (out / f"sqlite-shapes-{stamp}.json").write_text(
        json.dumps({"machine": machine, "results": results}, indent=2) + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
