"""A whole SQLite rehearsal against `cp` plus one fingerprint, one table shape at a time.

    python bench/sqlite_rehearsal.py --quick                 # 100k and 1M rows, every shape, 3 runs
    python bench/sqlite_rehearsal.py --sizes 1000000 --shapes narrow nopk-dups --runs 5

The databases are bench/shapes.py's (one table, generated inside SQLite from fixed formulas,
cached in the work directory). The change adds one to an integer column on a tenth to a
seventh of the rows (`n` where the text `s` ends in 7; `i1` where `id % 7 = 0` in the wide
shape) and its revert takes it off again; the rehearsal runs the default legs (transaction,
read-only, restore, revert), in this process (`rehearse()`, so the CLI's import time is not in
it), and must PASS. The reference is what the target names: copying the file with `cp` and
fingerprinting the copy once with rollproof's own fingerprint. The two alternate within every
run, after one untimed warm-up each; medians and their ratio are reported (target: at most
2x), with the CPU seconds of all processes.
Results go to bench/results/sqlite-rehearsal-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from shapes import SHAPES, build, timed

from rollproof.core.change import load_change
from rollproof.core.model import Verdict
from rollproof.engines.sqlite.source import fingerprint_file
from rollproof.rehearse.flow import rehearse

CHANGED = {"wide": ("i1", "id % 7 = 0")}
"""The integer column the change updates and which rows (a condition on a column it leaves
alone), where not `n` on the rows whose text `s` ends in 7 (a tenth of them)."""

DEFAULT_SHAPES = ("narrow", "nopk-dups", "without-rowid", "wide")


def write_change(root: Path, shape: str) -> Path:
    column, where = CHANGED.get(shape, ("n", "substr(s, -1) = '7'"))
    root.mkdir(parents=True, exist_ok=True)
    (root / "apply.sql").write_text(f"UPDATE t SET {column} = {column} + 1 WHERE {where};\n")
    (root / "revert.sql").write_text(f"UPDATE t SET {column} = {column} - 1 WHERE {where};\n")
    (root / "change.toml").write_text(
        'apply = "apply.sql"\nrevert = "revert.sql"\n[surfaces]\nreads = []\nwrites = ["t"]\n'
    )
    return root


def bench(db: Path, shape: str, rows: int, runs: int, work: Path) -> dict[str, object]:
    change = load_change(write_change(work / f"change-{shape}", shape))
    copy = work / "copy.db"
    # The clone workspace must be outside the source's directory (an isolation check).
    clones = Path(tempfile.mkdtemp(prefix="rollproof-bench-clones-"))

    def rehearsal() -> None:
        result = rehearse(change, str(db), workdir=clones)
        if result.overall is not Verdict.PASS:
            raise SystemExit(f"{shape}: the rehearsal did not pass ({result.overall.value})")

    def reference() -> None:
        subprocess.run(["cp", str(db), str(copy)], check=True)
        fingerprint_file(copy)

    cases = {"rollproof rehearsal": rehearsal, "cp + one fingerprint": reference}
    for fn in cases.values():
        fn()
    wall: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, fn in cases.items():
            w, c = timed(fn)
            wall[name].append(w)
            cpu[name].append(c)
    copy.unlink(missing_ok=True)
    shutil.rmtree(clones, ignore_errors=True)
    ours, theirs = (statistics.median(wall[n]) for n in cases)
    ours_cpu, theirs_cpu = (statistics.median(cpu[n]) for n in cases)
    return {
        "shape": shape,
        "rows": rows,
        "bytes": db.stat().st_size,
        "samples": wall,
        "cpu_samples": cpu,
        "rehearsal_s": ours,
        "reference_s": theirs,
        "ratio": ours / theirs,
        "cpu_ratio": ours_cpu / theirs_cpu,
    }


def render(results: list[dict[str, object]]) -> str:
    lines = [
        "| shape | rows | MB | rehearsal | `cp` + one fingerprint | ratio | CPU ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['shape']} | {r['rows']:,} | {int(str(r['bytes'])) / 1e6:.0f} "
            f"| {float(str(r['rehearsal_s'])):.2f} s | {float(str(r['reference_s'])):.2f} s "
            f"| {float(str(r['ratio'])):.2f}x | {float(str(r['cpu_ratio'])):.2f}x |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100k and 1M rows, 3 runs")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=DEFAULT_SHAPES)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--work", type=Path, default=None, help="where databases are kept")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.runs = [100_000, 1_000_000], 3
    work = args.work or Path(tempfile.mkdtemp(prefix="rollproof-bench-rehearsal-"))
    work.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for rows in args.sizes:
            for shape in args.shapes:
                db = work / f"{shape}-{rows}.db"
                if not db.exists():
                    build(db, shape, rows)
                results.append(bench(db, shape, rows, args.runs, work))
                print(render(results[-1:]).splitlines()[-1], flush=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(render(results))
    out = Path(os.environ.get("ROLLPROOF_BENCH_RESULTS", Path(__file__).parent / "results"))
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = out / f"sqlite-rehearsal-{stamp}.json"
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "runs": args.runs}
    target.write_text(json.dumps({"machine": machine, "results": results}, indent=2) + "\n")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
