"""libpq's binary COPY OUT loop: `copy_out` (a COPY's bytes, in batches) and `copy_row_digests`
(a digest per row), in C (csrc/pgcopy.c) for the connections psycopg opened, else in Python.

The C reader takes libpq's CopyData messages with the GIL released and hands Python a full
buffer at a time, instead of one Python call per row. It is used only when all of this holds,
and otherwise `reader` returns None and contents.py takes each message through psycopg, with the
same bytes and digests:

* the `_pgcopy` extension was built at install (it is optional: no C compiler, no extension);
* the libpq that psycopg uses can be named: psycopg's own ctypes handle (its "python"
  implementation), or, for its compiled implementations, the one libpq mapped into this process
  (Linux's /proc/self/maps; more than one, or none, and the C reader is not used);
* that library is the version psycopg reports, and through its functions the connection's
  socket and backend process id are the ones psycopg reports (checked for every reader).

`ROLLPROOF_PG_COPY_LOOP=python` turns the C reader off (a comparison, or a suspected fault).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import select
import threading
import time
from collections.abc import Callable
from functools import cache
from typing import Any

import psycopg

import rollproof.engines.rowdigests as rowdigests
from rollproof.core.canonical import ROW_DIGEST_SIZE
from rollproof.engines.postgres import pieces

FUNCTIONS = ("PQgetCopyData", "PQfreemem", "PQconsumeInput", "PQsocket", "PQbackendPID")
"""The libpq functions the C reader calls, in the order its constructor takes them."""

TIMEOUT_MS = 200
"""The longest the C reader waits for the server before handing control back to Python (to
run signal handlers: a Ctrl-C during a long wait)."""

_LOCK = threading.Lock()


def _mapped_libpq() -> list[str]:
    """Paths of the libpq files mapped into this process (Linux), in the order first seen."""
    found: list[str] = []
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                parts = line.split(maxsplit=5)
                if len(parts) < 6:
                    continue
                path = parts[5].strip()
                base = os.path.basename(path)
                if base.startswith("libpq") and ".so" in base and path not in found:
                    found.append(path)
    except OSError:
        return []
    return found


def _library() -> Any | None:
    """The ctypes handle of the libpq psycopg uses, or None where it cannot be named."""
    if psycopg.pq.__impl__ == "python":
        from psycopg.pq import _pq_ctypes

        return _pq_ctypes.pq  # type: ignore[attr-defined]
    paths = _mapped_libpq()
    if len(paths) != 1 or not hasattr(os, "RTLD_NOLOAD"):
        return None
    try:
        # RTLD_NOLOAD: the handle of the copy already loaded, never a second copy.
        return ctypes.CDLL(paths[0], mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    except OSError:
        return None


@cache
def _functions() -> tuple[int, ...] | None:
    if os.environ.get("ROLLPROOF_PG_COPY_LOOP", "").strip().lower() == "python":
        return None
    try:
        from rollproof.engines.postgres import _pgcopy  # type: ignore[attr-defined]  # noqa: F401
    except ImportError:
        return None
    lib = _library()
    if lib is None:
        return None
    try:
        version = lib.PQlibVersion
        version.restype = ctypes.c_int
        if int(version()) != psycopg.pq.version():
            return None
        addresses = tuple(
            ctypes.cast(getattr(lib, name), ctypes.c_void_p).value for name in FUNCTIONS
        )
    except AttributeError:
        return None
    if not all(addresses):
        return None
    return tuple(int(a) for a in addresses if a is not None)


def available() -> bool:
    """Whether the C reader can be used in this process."""
    with _LOCK:
        return _functions() is not None


def reader(conn: psycopg.Connection[Any]) -> Any | None:
    """A C reader for the COPY about to start on `conn`, or None (see the module docstring)."""
    with _LOCK:
        functions = _functions()
    if functions is None:
        return None
    from rollproof.engines.postgres import _pgcopy  # type: ignore[attr-defined]

    pgconn = conn.pgconn
    pointer = pgconn.pgconn_ptr  # type: ignore[attr-defined]
    if pointer is None:
        return None
    try:
        return _pgcopy.Reader(pointer, functions, pgconn.socket, pgconn.backend_pid)
    except (ValueError, psycopg.OperationalError):
        return None


_BATCH = 1 << 18
"""Bytes of COPY rows gathered before each hash update: large enough that the update releases
the GIL and the per-call cost vanishes, small enough to keep memory flat."""


def _server_error(conn: psycopg.Connection[Any], result: psycopg.pq.abc.PGresult) -> psycopg.Error:
    # Drain what is left of the command, so the session can still ROLLBACK.
    pgconn = conn.pgconn
    while pgconn.get_result() is not None:
        pass
    return psycopg.errors.error_from_result(result, encoding=conn.info.encoding)


def _begin_copy(conn: psycopg.Connection[Any], statement: str) -> Callable[[], Any]:
    """Send `COPY ... TO STDOUT` and wait for the server to start it; return the function that
    takes the command's next result (waiting in `poll`, the GIL released)."""
    pgconn = conn.pgconn
    poller = select.poll()
    poller.register(pgconn.socket, select.POLLIN)

    def next_result() -> psycopg.pq.abc.PGresult | None:
        while pgconn.is_busy():
            poller.poll()
            pgconn.consume_input()
        return pgconn.get_result()

    pgconn.send_query(statement.encode())
    result = next_result()
    if result is None or result.status != psycopg.pq.ExecStatus.COPY_OUT:
        if result is None:
            raise psycopg.OperationalError("COPY returned no result")
        raise _server_error(conn, result)
    return next_result


def _abandon_copy(conn: psycopg.Connection[Any]) -> None:
    """Interrupted: cancel the COPY and read it to its end, so the session stays usable."""
    pgconn = conn.pgconn
    with contextlib.suppress(Exception):
        conn.cancel_safe(timeout=5.0)
        while pgconn.get_copy_data(0)[0] > 0:
            pass
        while pgconn.get_result() is not None:
            pass


def _end_copy(conn: psycopg.Connection[Any], next_result: Callable[[], Any]) -> None:
    """The COPY's data is all read: its command must have succeeded."""
    result = next_result()
    if result is None or result.status != psycopg.pq.ExecStatus.COMMAND_OK:
        if result is None:
            raise psycopg.OperationalError("COPY ended without a result")
        raise _server_error(conn, result)
    while next_result() is not None:
        pass


def _read_failed(conn: psycopg.Connection[Any], state: int) -> psycopg.Error:
    """The C reader's failure states as psycopg would raise them."""
    message = conn.pgconn.error_message.decode("utf-8", "replace").strip()
    what = "receiving copy data failed" if state == -2 else "reading from the server failed"
    return psycopg.OperationalError(f"{what}: {message}")


def copy_out(
    conn: psycopg.Connection[Any],
    statement: str,
    sink: Callable[[memoryview], Any],
    waits: list[float] | None = None,
) -> int:
    """Run `COPY ... TO STDOUT` and pass its bytes to `sink` in batches; return the messages.

    Straight on the libpq connection: psycopg's `Cursor.copy()` yields one row per call through
    a generator and its wait loop, which costs more client CPU than hashing the row. The
    server sends one CopyData message per row (binary COPY: and one for its trailer); the C
    reader (copyloop.py, csrc/pgcopy.c) takes them with the GIL released and hands over full
    batches, and where it cannot be used Python takes them one by one. Waits are in `poll`
    (the GIL released), so other sessions' threads run meanwhile; with `waits`, the seconds
    spent waiting for rows are appended to it. A server error raises the same `psycopg.Error`
    as a cursor would, with the session left usable.
    """
    next_result = _begin_copy(conn, statement)
    # One buffer for the whole COPY, filled and handed on in place: a bytearray emptied after
    # each batch is freed and grown again, and glibc's malloc may serve every regrowth from
    # fresh mmap'd pages (text500, 1M rows: 0.49 or 0.86 client CPU s, by allocator history).
    view = memoryview(bytearray(_BATCH))
    try:
        fast = reader(conn)
        if fast is None:
            messages = _copy_in_python(conn, view, sink, waits)
        else:
            while True:
                filled, state = fast.fill(view, TIMEOUT_MS)
                if filled:
                    sink(view[:filled])
                if state == -1:
                    break
                if state < -1:
                    raise _read_failed(conn, state)
            if waits is not None:
                waits.append(fast.waited)
            messages = fast.messages
    except BaseException:
        _abandon_copy(conn)
        raise
    _end_copy(conn, next_result)
    return int(messages)


def _copy_in_python(
    conn: psycopg.Connection[Any],
    view: memoryview,
    sink: Callable[[memoryview], Any],
    waits: list[float] | None,
) -> int:
    """copy_out's loop where the C reader is not available: one psycopg call per message."""
    pgconn = conn.pgconn
    poller = select.poll()
    poller.register(pgconn.socket, select.POLLIN)
    get = pgconn.get_copy_data
    pos = 0
    messages = 0
    while True:
        nbytes, data = get(1)
        if nbytes > 0:
            messages += 1
            end = pos + nbytes
            if end <= _BATCH:
                view[pos:end] = data
                pos = end
                continue
            if pos:
                sink(view[:pos])
            if nbytes < _BATCH:
                view[:nbytes] = data
                pos = nbytes
            else:
                sink(data)
                pos = 0
        elif nbytes == 0:
            if waits is None:
                poller.poll()
            else:
                began = time.perf_counter()
                poller.poll()
                waits.append(time.perf_counter() - began)
            pgconn.consume_input()
        else:
            break
    sink(view[:pos])
    return messages


def copy_row_digests(
    conn: psycopg.Connection[Any], statement: str, columns: int, runs: rowdigests.SortedRuns
) -> int:
    """Run a binary `COPY ... TO STDOUT` of rows with `columns` fields and give `runs` one
    BLAKE2s-256 digest per row: of the row's bytes as the COPY sends them (its field count,
    then each field's length, -1 for NULL, and its bytes). Return the rows.

    The framing is checked as the rows come (the header first, every row `columns` fields that
    end where its message ends, the trailer last): a stream that does not decode raises
    `psycopg.OperationalError`. Digests are made by the C reader (eight rows at a time with
    AVX2) with the GIL released, else by hashlib, the same bytes.
    """
    next_result = _begin_copy(conn, statement)
    try:
        fast = reader(conn)
        if fast is None:
            rows, messages, trailer = _row_digests_in_python(conn, columns, runs)
        else:
            rows, messages, trailer = _row_digests_in_c(conn, fast, columns, runs)
    except ValueError as exc:
        _abandon_copy(conn)
        raise psycopg.OperationalError(f"binary COPY: {exc}") from None
    except BaseException:
        _abandon_copy(conn)
        raise
    _end_copy(conn, next_result)
    if not trailer or messages != rows + 1:
        raise psycopg.OperationalError("binary COPY ended early")
    return rows


DIGEST_BUFFER = 1 << 18
"""Bytes of row digests the C reader is first given; the buffer doubles up to a sorted run."""


def _row_digests_in_c(
    conn: psycopg.Connection[Any], fast: Any, columns: int, runs: rowdigests.SortedRuns
) -> tuple[int, int, bool]:
    limit = rowdigests.RUN_DIGESTS * ROW_DIGEST_SIZE
    buf = bytearray(DIGEST_BUFFER)
    pos = rows = 0
    while True:
        with memoryview(buf)[pos:] as tail:
            filled, state = fast.digests(tail, columns, TIMEOUT_MS)
        pos += filled
        if pos == len(buf):
            if len(buf) < limit:
                buf.extend(bytes(min(len(buf), limit - len(buf))))
            else:
                rows += pos // ROW_DIGEST_SIZE
                runs.add(buf)
                buf, pos = bytearray(DIGEST_BUFFER), 0
        if state == -1:
            break
        if state < -1:
            raise _read_failed(conn, state)
    del buf[pos:]
    rows += pos // ROW_DIGEST_SIZE
    runs.add(buf)
    return rows, int(fast.messages), bool(fast.trailer)


def _row_digests_in_python(
    conn: psycopg.Connection[Any], columns: int, runs: rowdigests.SortedRuns
) -> tuple[int, int, bool]:
    """The C reader's `digests`, one psycopg call and one hashlib digest per message."""
    pgconn = conn.pgconn
    poller = select.poll()
    poller.register(pgconn.socket, select.POLLIN)
    get = pgconn.get_copy_data
    blake2s = hashlib.blake2s
    limit = rowdigests.RUN_DIGESTS * ROW_DIGEST_SIZE
    out = bytearray()
    rows = messages = 0
    started = trailer = False
    while True:
        nbytes, data = get(1)
        if nbytes == 0:
            poller.poll()
            pgconn.consume_input()
            continue
        if nbytes < 0:
            break
        messages += 1
        row = memoryview(data)
        if not started:
            if bytes(row[: len(pieces.PGCOPY)]) != pieces.PGCOPY:
                raise ValueError("COPY sent no binary header")
            started = True
            row = row[len(pieces.PGCOPY) :]
        if trailer:
            raise ValueError("COPY sent data after its trailer")
        if not row:
            continue
        if bytes(row) == pieces.TRAILER:
            trailer = True
            continue
        if not _row_framed(row, columns):
            raise ValueError("COPY sent a row that is not framed as the table's columns")
        out += blake2s(row).digest()
        rows += 1
        if len(out) >= limit:
            runs.add(out)
            out = bytearray()
    runs.add(out)
    return rows, messages, trailer


def _row_framed(row: memoryview, columns: int) -> bool:
    """Whether `row` is one binary COPY tuple of `columns` fields, ending where it ends."""
    if len(row) < 2 or int.from_bytes(row[:2], "big", signed=True) != columns:
        return False
    at = 2
    for _ in range(columns):
        if len(row) - at < 4:
            return False
        size = int.from_bytes(row[at : at + 4], "big", signed=True)
        at += 4
        if size == -1:
            continue
        if size < 0 or len(row) - at < size:
            return False
        at += size
    return at == len(row)
