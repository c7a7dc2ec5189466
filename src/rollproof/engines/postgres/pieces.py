"""One table's binary COPY read in pieces on several sessions, hashed as if read on one.

A keyed table's digest is BLAKE3 over its header and the single binary COPY stream of its rows
in key order (fingerprint.table_digest). Read as key ranges on sessions that share one exported
snapshot, the ranges' streams, each with its own COPY header and trailer, are put back into
that one stream: the first keeps its header, the last its trailer, and a later range's bytes
are hashed only after every earlier range's. A range whose turn has not come is held in memory;
past `SPOOL_BYTES` its session stops reading until its turn, so the server waits on the socket
instead of the client buffering the table. The digest is therefore the same however
the table was cut, and the same as an unsplit read.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg

PGCOPY = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
"""The binary COPY header: signature, flags (no OIDs), no header extension."""

TRAILER = b"\xff\xff"
"""The binary COPY trailer: a field count of -1."""

SPOOL_BYTES = 64 << 20
"""Bytes the later ranges of one table may hold while an earlier range is still being read."""


class Aborted(Exception):
    """Another range of the same table failed: this one stops (its error is not the cause)."""


class OrderedStream:
    """The ranges of one table, hashed into `h` in range order whichever session reads them.

    The range whose turn it is hashes as it reads; a later one holds its bytes until the ranges
    before it are all hashed, when whoever finished the last of those hashes them. A reader
    that would hold more than `SPOOL_BYTES` for the table waits for its turn instead. Ranges
    are taken in order, so the one whose turn it is is being read and never waits: no
    deadlock, whatever the number of sessions.
    """

    def __init__(self, h: Any, count: int) -> None:
        self._h = h
        self.count = count
        self._turn = 0
        self._cond = threading.Condition()
        self._spools: list[list[bytes]] = [[] for _ in range(count)]
        self._finished = [False] * count
        self._held = 0
        self._aborted = False
        self.rows = 0

    def _check(self) -> None:
        if self._aborted:
            raise Aborted("another range of this table failed")

    def _flush(self, index: int) -> None:
        for chunk in self._spools[index]:
            self._h.update(chunk)
            self._held -= len(chunk)
        self._spools[index] = []

    def put(self, index: int, data: bytes | bytearray | memoryview) -> None:
        """Range `index`'s next bytes (already stripped of any header or trailer it drops)."""
        with self._cond:
            self._check()
            if self._turn != index:
                self._spools[index].append(bytes(data))
                self._held += len(data)
                while self._held > SPOOL_BYTES and self._turn != index and not self._aborted:
                    self._cond.wait()
                self._check()
                if self._turn != index:
                    return
                self._flush(index)
                self._cond.notify_all()
                return
            if self._spools[index]:
                self._flush(index)  # its turn came while it held bytes
                self._cond.notify_all()
            self._h.update(data)

    def finish(self, index: int, rows: int) -> bool:
        """Range `index` is read; True for the caller that completes the table."""
        with self._cond:
            self._check()
            self._finished[index] = True
            self.rows += rows
            if self._turn != index:
                return False
            while self._turn < self.count and self._finished[self._turn]:
                self._flush(self._turn)
                self._turn += 1
            self._cond.notify_all()
            return self._turn == self.count

    def shorten(self, count: int) -> None:
        """Fewer ranges than planned (the rest read as one), before any later one is handed
        out."""
        with self._cond:
            assert self._turn <= count <= self.count
            assert not any(self._finished[count:])
            self.count = count

    def digest(self) -> str:
        """The hex digest, once every range is finished."""
        assert self._turn == self.count
        return str(self._h.hexdigest())

    def abort(self) -> None:
        with self._cond:
            self._aborted = True
            self._cond.notify_all()


class Framing:
    """Checks one range's COPY framing and passes on the bytes the joined stream keeps."""

    def __init__(self, table: str, first: bool, last: bool, out: Any) -> None:
        self._table = table
        self._first = first
        self._last = last
        self._out = out
        self._head = bytearray()
        self._tail = b""

    def __call__(self, buf: bytes | bytearray | memoryview) -> None:
        data = memoryview(buf)
        if len(self._head) < len(PGCOPY):
            need = len(PGCOPY) - len(self._head)
            self._head += data[:need]
            if self._head != PGCOPY[: len(self._head)]:
                raise psycopg.OperationalError(f"table {self._table}: COPY sent no binary header")
            if not self._first:
                data = data[need:]
        # Hold back the last two bytes: the trailer, which only the last range keeps.
        if len(data) >= 2:
            if self._tail:
                self._out(self._tail)
            self._out(data[:-2])
            self._tail = bytes(data[-2:])
        elif data:
            joined = self._tail + bytes(data)
            if len(joined) > 2:
                self._out(joined[:-2])
            self._tail = joined[-2:]

    def close(self) -> None:
        """The range ended: its header and trailer must both have come."""
        if len(self._head) < len(PGCOPY) or self._tail != TRAILER:
            raise psycopg.OperationalError(f"table {self._table}: binary COPY ended early")
        if self._last:
            self._out(TRAILER)
