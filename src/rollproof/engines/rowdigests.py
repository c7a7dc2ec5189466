"""Row digests of a table without a key, sorted and merged: shared by both engines.

A table without a primary key has no order of its own, so both engines digest it the same way
(docs/fingerprint.md): one 32-byte digest per row, the digests sorted as byte strings, and the
sorted stream hashed. Duplicated rows give duplicated digests, so the multiset is what counts.

This module holds the sorting and merging, in C by `_digests` (csrc/digests.c) where it was
built, else by numpy, same order: `sort_digests` sorts a buffer in place, `SortedRuns` keeps a
stream of digests as sorted runs in memory and spills them to files past a bound, and
`merge_into` hands the merged runs to a hasher a block at a time.
"""

from __future__ import annotations

import contextlib
import importlib
import mmap
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import TYPE_CHECKING

from rollproof.core.canonical import ROW_DIGEST_SIZE

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from rollproof.engines.workspace import Claim

Run = bytes | bytearray | str
"""A sorted run of digests: in memory, or the path of a file it was spilled to."""
Update = Callable[[bytes | bytearray | memoryview], object]

MERGE_RUNS_C = 4096
"""Most sorted runs the C merge takes at once (each spilled run is a mapping of its file); more
are merged by numpy."""
MERGE_DIGESTS = 1 << 15
"""Digests a merge hands on at a time (numpy's also reads that many from each spilled run)."""
RUN_DIGESTS = 1 << 21
"""Row digests sorted in memory before a run is spilled to a file (64 MiB of digests)."""
SPILL_PREFIX = "rollproof-sort-"
"""Spill directories' prefix in the temporary directory, swept by `rollproof gc`."""


def digest_module() -> ModuleType | None:
    """The C digest sorter (`_digests`: sort and merge 32-byte digests in place), or None where
    this install has none (no C compiler at install); numpy sorts then."""
    try:
        # By name: a compiled module imports nothing, and `from rollproof.engines import` would
        # read to an import graph as an import of the package (whose readers import engines).
        return importlib.import_module("rollproof.engines._digests")
    except ImportError:
        return None


def sort_digests(buf: bytearray, module: ModuleType | None) -> bytearray:
    """Sort concatenated 32-byte digests as byte strings, in place: in C by `module`
    (`digest_module()`), or by numpy's sort where it is None. Same order."""
    if module is not None:
        module.sort(buf)
        return buf
    import numpy as np

    np.frombuffer(buf, dtype=f"S{ROW_DIGEST_SIZE}").sort()
    return buf


def run_blocks(run: Run, block: int) -> Iterator[npt.NDArray[np.bytes_]]:
    """A run's digests as numpy arrays of at most `block` digests."""
    import numpy as np

    dtype = f"S{ROW_DIGEST_SIZE}"
    step = block * ROW_DIGEST_SIZE
    if not isinstance(run, str):
        for start in range(0, len(run), step):
            yield np.frombuffer(
                run, dtype=dtype, offset=start, count=min(step, len(run) - start) // ROW_DIGEST_SIZE
            )
        return
    with open(run, "rb") as f:
        while chunk := f.read(step):
            yield np.frombuffer(chunk, dtype=dtype)


def merge_into(
    runs: list[Run],
    update: Update,
    module: ModuleType | None,
    block: int = MERGE_DIGESTS,
    c_max: int = MERGE_RUNS_C,
) -> None:
    """Give `update` the digests of sorted runs (in memory, or spilled files' paths) as one
    sorted stream, a block at a time: merged in C by `module` (a heap of the runs' heads, a
    spilled run read through a read-only mapping of its private file), else by numpy."""
    if len(runs) == 1 and not isinstance(runs[0], str):
        update(runs[0])
        return
    if module is not None and len(runs) <= c_max:
        with contextlib.ExitStack() as stack:
            buffers: list[bytes | bytearray | mmap.mmap] = []
            for run in runs:
                if not isinstance(run, str):
                    buffers.append(run)
                    continue
                with open(run, "rb") as f:
                    if os.fstat(f.fileno()).st_size == 0:
                        continue
                    mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                buffers.append(stack.enter_context(mapped))
            module.merge(buffers, update, block)
        return
    for merged in merged_by_numpy(runs, block):
        update(merged)


def merged_by_numpy(runs: list[Run], block: int = MERGE_DIGESTS) -> Iterator[bytes]:
    """The numpy merge, where `_digests` is not built: each round takes from every run what is
    <= the smallest of the runs' block ends, which empties at least one block, and sorts that."""
    import numpy as np

    readers = [run_blocks(r, block) for r in runs]
    heads = [next(r, None) for r in readers]
    while True:
        live = [i for i, h in enumerate(heads) if h is not None and len(h)]
        if not live:
            return
        ends = [heads[i][-1:] for i in live]  # type: ignore[index]
        bound = min(ends, key=lambda a: a.tobytes())
        taken = []
        for i in live:
            head = heads[i]
            assert head is not None
            k = int(np.searchsorted(head, bound[0], side="right"))
            taken.append(head[:k])
            rest = head[k:]
            heads[i] = rest if len(rest) else next(readers[i], None)
        merged = np.concatenate(taken)
        merged.sort(kind="stable")  # runs of sorted parts: timsort merges them in linear time
        yield merged.tobytes()


class SortedRuns:
    """A stream of row digests kept as sorted runs: each buffer handed to `add` is sorted in
    place and kept; once more than `limit` bytes are held, the held runs are spilled to files
    in a private temporary directory (claimed like a workspace, removed by `close`, and swept
    by `rollproof gc` after a crash), so memory stays bounded whatever the table's size."""

    def __init__(self, limit: int | None = None) -> None:
        self.module = digest_module()
        self.runs: list[Run] = []
        self.rows = 0
        self._limit = RUN_DIGESTS * ROW_DIGEST_SIZE if limit is None else limit
        self._held = 0
        self._claim: Claim | None = None

    def add(self, digests: bytearray) -> None:
        """Take a buffer of digests (a multiple of 32 bytes; it is sorted in place and kept)."""
        if len(digests) % ROW_DIGEST_SIZE:
            raise ValueError("row digests: a buffer that is not whole digests")
        if not digests:
            return
        self.rows += len(digests) // ROW_DIGEST_SIZE
        self.runs.append(sort_digests(digests, self.module))
        self._held += len(digests)
        if self._held > self._limit:
            self._spill()

    def _spill(self) -> None:
        if self._claim is None:
            from rollproof.engines.workspace import make_owned_dir

            self._claim = make_owned_dir(SPILL_PREFIX, None)
        kept: list[Run] = []
        for run in self.runs:
            if isinstance(run, str):
                kept.append(run)
                continue
            fd, name = tempfile.mkstemp(prefix="run-", dir=str(self._claim.directory))
            with os.fdopen(fd, "wb") as f:
                f.write(run)
            kept.append(name)
        self.runs = kept
        self._held = 0

    def merge_into(self, update: Update) -> None:
        """Hand the merged, sorted digests to `update`, a block at a time."""
        merge_into(self.runs, update, self.module)

    def close(self) -> None:
        """Remove what was spilled (the runs are unusable afterwards)."""
        self.runs = []
        if self._claim is not None:
            shutil.rmtree(self._claim.directory, ignore_errors=True)
            self._claim.release()
            self._claim = None

    def __enter__(self) -> SortedRuns:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
