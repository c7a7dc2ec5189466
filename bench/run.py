"""Benchmarks: rollproof side by side with the tools a user would otherwise reach for.

    python bench/run.py --quick            # 100k and 1M rows, 3 runs each (under two minutes)
    python bench/run.py --sizes 100000 1000000 10000000 --runs 5

Every measurement is taken in the same run as its reference, alternating between them, and
reported as the median over the runs and as a ratio to the reference; timed numbers alone mean
little on a shared machine, ratios taken side by side mean more. References:

* fingerprint: `sqlite3 DB .sha3sum` (the sqlite3 shell's content hash), `dbhash DB` (SQLite's
  own tool, from Debian's sqlite3-tools, when installed) and `sha256sum DB` (reading the bytes);
* clone: `cp` of the file, against rollproof's backup-API snapshot;
* rehearsal: applying the change bare to a `cp` copy with the sqlite3 shell, against a full
  rollproof rehearsal (clone, four legs, every fingerprint), and the same rehearsal with
  `--full-fingerprints` (every table re-read at every point: what the incremental
  after-fingerprints and page proofs save);
* growth: time per row of the fingerprint at each size.

Results are printed as Markdown and written as JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import apsw
import dataset

from rollproof.core.change import load_change
from rollproof.engines.sqlite.session import SqliteSession
from rollproof.engines.sqlite.source import fingerprint_file
from rollproof.rehearse.flow import rehearse

APPLY = "UPDATE items SET qty = qty + 1 WHERE warehouse = 3;\n"
REVERT = "UPDATE items SET qty = qty - 1 WHERE warehouse = 3;\n"
VERIFY = "SELECT count(*) FROM items WHERE qty < 0;\n"


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_quiet(args: list[str], stdin: str | None = None) -> None:
    subprocess.run(args, input=stdin, text=True, check=True, stdout=subprocess.DEVNULL)


def measure(cases: dict[str, Callable[[], object]], runs: int) -> dict[str, float]:
    """Median seconds per case, the cases alternating within every run."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, fn in cases.items():
            samples[name].append(timed(fn))
    return {name: statistics.median(values) for name, values in samples.items()}


def bench_size(rows: int, runs: int, work: Path) -> dict[str, object]:
    db = work / f"bench-{rows}.db"
    if not db.exists():
        print(f"generating {rows:,} rows …", file=sys.stderr)
        dataset.build(db, rows)
    size = db.stat().st_size
    change = work / f"change-{rows}"
    if not change.exists():
        change.mkdir()
        (change / "apply.sql").write_text(APPLY)
        (change / "revert.sql").write_text(REVERT)
        (change / "verify.sql").write_text(VERIFY)
        (change / "change.toml").write_text(
            'apply = "apply.sql"\nrevert = "revert.sql"\nverify = "verify.sql"\n'
            '[surfaces]\nreads = []\nwrites = ["items"]\n'
        )
    loaded = load_change(change)
    copy = work / "copy.db"
    # The clone workspace must be outside the source's directory (an isolation check).
    scratch = Path(tempfile.mkdtemp(prefix="rollproof-bench-clones-"))

    fp_cases: dict[str, Callable[[], object]] = {
        "rollproof fingerprint": lambda: fingerprint_file(db),
        "sqlite3 .sha3sum": lambda: run_quiet(["sqlite3", str(db), ".sha3sum"]),
        "sha256sum": lambda: run_quiet(["sha256sum", str(db)]),
    }
    if shutil.which("dbhash"):
        fp_cases["dbhash"] = lambda: run_quiet(["dbhash", str(db)])
    fp = measure(fp_cases, runs)

    def snapshot() -> None:
        SqliteSession(str(db), workdir=scratch).close(keep=False)

    clone = measure(
        {
            "rollproof clone": snapshot,
            "cp": lambda: run_quiet(["cp", str(db), str(copy)]),
        },
        runs,
    )

    def bare_apply() -> None:
        run_quiet(["cp", str(db), str(copy)])
        run_quiet(["sqlite3", str(copy)], stdin=APPLY)

    reh = measure(
        {
            "rollproof rehearsal": lambda: rehearse(loaded, str(db), workdir=scratch),
            "cp + bare apply": bare_apply,
            "rollproof rehearsal, full fingerprints": lambda: rehearse(
                loaded, str(db), workdir=scratch, full_fingerprints=True
            ),
        },
        runs,
    )
    copy.unlink(missing_ok=True)
    shutil.rmtree(scratch, ignore_errors=True)
    return {
        "rows": rows,
        "bytes": size,
        "fingerprint": fp,
        "clone": clone,
        "rehearsal": reh,
        "fingerprint_ns_per_row": fp["rollproof fingerprint"] / rows * 1e9,
    }


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"


def render(results: list[dict[str, object]], machine: dict[str, object]) -> str:
    lines = [
        f"Machine: {machine['cpus']} cores, {machine['platform']}, Python {machine['python']}, "
        f"SQLite {machine['sqlite']} (APSW's {machine['sqlite_in_workers']} in fingerprint "
        f"workers); {machine['runs']} runs, medians.",
        "",
        "| rows | MB | fingerprint | vs .sha3sum | vs dbhash | vs sha256sum | clone | vs cp "
        "| rehearsal | vs cp + bare apply | vs clone + 1 fingerprint "
        "| vs full fingerprints | ns/row |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        fp = r["fingerprint"]
        cl = r["clone"]
        re_ = r["rehearsal"]
        assert isinstance(fp, dict)
        assert isinstance(cl, dict)
        assert isinstance(re_, dict)
        ours = fp["rollproof fingerprint"]
        lines.append(
            f"| {r['rows']:,} | {int(r['bytes']) / 1e6:.0f} | {ours:.2f} s "
            f"| {ratio(ours, fp['sqlite3 .sha3sum'])} "
            f"| {ratio(ours, fp['dbhash']) if 'dbhash' in fp else 'not installed'} "
            f"| {ratio(ours, fp['sha256sum'])} "
            f"| {cl['rollproof clone']:.2f} s | {ratio(cl['rollproof clone'], cl['cp'])} "
            f"| {re_['rollproof rehearsal']:.2f} s "
            f"| {ratio(re_['rollproof rehearsal'], re_['cp + bare apply'])} "
            f"| {ratio(re_['rollproof rehearsal'], cl['rollproof clone'] + ours)} "
            f"| {ratio(re_['rollproof rehearsal'], re_['rollproof rehearsal, full fingerprints'])} "
            f"| {float(r['fingerprint_ns_per_row']):.0f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100k and 1M rows, 3 runs")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="where to keep generated databases (reused between runs)",
    )
    args = parser.parse_args()
    sizes, runs = ([100_000, 1_000_000], 3) if args.quick else (args.sizes, args.runs)
    work = args.work or Path(tempfile.gettempdir()) / "rollproof-bench"
    work.mkdir(parents=True, exist_ok=True)
    machine = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(terse=True),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "sqlite_in_workers": apsw.sqlite_lib_version(),
        "runs": runs,
    }
    results = [bench_size(rows, runs, work) for rows in sizes]
    print(render(results, machine))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (out / f"sqlite-{stamp}.json").write_text(
        json.dumps({"machine": machine, "results": results}, indent=2) + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
