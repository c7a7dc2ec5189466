"""Where a SQLite fingerprint's time goes, per row, stage by stage.

    python bench/fp_profile.py --rows 1000000

For each shape of bench/shapes.py, one process reads the whole table the way a fingerprint
worker does (APSW, batches of ROW_CHUNK rows) and the stages are added one at a time: rows
fetched into Python tuples; encoded; hashed (a key-ordered table: one BLAKE3 stream per
segment; a table without a key: one BLAKE2s digest per row, then the digests sorted). Each
stage's cost is the difference between cumulative runs, in CPU seconds of this process (so a
shared machine's other work counts less than in wall time), median of --runs.

Where the C accelerator is built, two more lines give its whole read of the same table (rows
encoded, or digested, inside SQLite; then hashed as segments, or sorted), measured on their own:
what a worker spends on that table instead of the Python stages.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import apsw

sys.path.insert(0, str(Path(__file__).parent))

import shapes

from rollproof.core.canonical import ROW_CHUNK, SEGMENT_ROWS, encode_rows, encoded_rows, row_digests
from rollproof.engines.sqlite import fingerprint as sqlite_fingerprint
from rollproof.engines.sqlite import rowcodec


def _stage_runner(db: Path, upto: str, keyed: bool) -> Callable[[], None]:
    def run() -> None:
        conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
        with contextlib.closing(conn):
            # the key's order for a keyed table (its first column here), none without a key
            sql = "SELECT * FROM t" + (" ORDER BY 1" if keyed else "")
            rows = iter(conn.execute(sql))

            def fetch() -> list[tuple[object, ...]]:
                return list(itertools.islice(rows, ROW_CHUNK))

            if upto == "sqlite":
                for _ in rows:
                    pass
            elif upto == "fetch":
                while fetch():
                    pass
            elif upto == "encode":
                while batch := fetch():
                    encode_rows(batch)  # type: ignore[arg-type]
            elif upto == "segments":
                batches = iter(fetch, [])
                chunks = ((len(b), encoded_rows(b)) for b in batches)  # type: ignore[arg-type]
                sqlite_fingerprint._read_segments(chunks)
            elif upto == "row-digest":
                while batch := fetch():
                    row_digests(batch)  # type: ignore[arg-type]
            elif upto == "row-digest+sort":
                batches = iter(fetch, [])
                digests = ((len(b), row_digests(b)) for b in batches)  # type: ignore[arg-type]
                sqlite_fingerprint._read_row_digests(digests, None)

    return run


def _accelerated_runner(db: Path, keyed: bool) -> Callable[[], None]:
    """The C accelerator's read of the whole table, hashed (keyed) or sorted (key-less)."""

    def run() -> None:
        conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
        with contextlib.closing(conn):
            rowcodec.load(conn)
            conn.execute("BEGIN")
            columns = [r[1] for r in conn.execute("PRAGMA table_info(t)")]
            if keyed:
                key = [r[1] for r in sorted(conn.execute("PRAGMA table_info(t)")) if r[5]]
                chunks = rowcodec.keyed_chunks(
                    conn, "t", columns, key, 0, -1, SEGMENT_ROWS, ROW_CHUNK
                )
                sqlite_fingerprint._read_segments(chunks)
            else:
                digests = rowcodec.keyless_chunks(
                    conn, "t", columns, "rowid", None, None, ROW_CHUNK, SEGMENT_ROWS
                )
                sqlite_fingerprint._read_row_digests(digests, None)

    return run


def cpu(fn: Callable[[], None], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.process_time()
        fn()
        samples.append(time.process_time() - start)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--shapes", nargs="+", default=["narrow", "nopk-dups", "wide"])
    args = parser.parse_args()
    keyed_stages = ["sqlite", "fetch", "encode", "segments"]
    keyless_stages = ["sqlite", "fetch", "row-digest", "row-digest+sort"]
    print("| shape | stage | cumulative ns/row | this stage ns/row |")
    print("|---|---|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="rollproof-profile-") as work:
        for shape in args.shapes:
            db = Path(work) / f"{shape}.db"
            shapes.build(db, shape, args.rows)
            keyed = shape != "nopk-dups"
            before = 0.0
            for stage in keyed_stages if keyed else keyless_stages:
                total = cpu(_stage_runner(db, stage, keyed), args.runs) / args.rows * 1e9
                print(f"| {shape} | {stage} | {total:.0f} | {total - before:.0f} |")
                before = total
            if rowcodec.extension_path() is not None:
                total = cpu(_accelerated_runner(db, keyed), args.runs) / args.rows * 1e9
                print(f"| {shape} | C accelerator, whole read | {total:.0f} | |")
            db.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
