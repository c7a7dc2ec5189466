"""libpq's binary COPY OUT loop in C (csrc/pgcopy.c), for the connections psycopg opened.

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

import ctypes
import os
import threading
from functools import cache
from typing import Any

import psycopg

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
