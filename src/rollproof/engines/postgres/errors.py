"""PostgreSQL faults of the machine translated at the engine's boundary, so none reaches the user
as a bug or as a leg that says the change failed.

An error that says the server or the machine failed is never the change's fault, whichever
statement met it (a change script's own errors are caught where the script runs and recorded as
its outcome; these are re-raised there, see `is_machine_error`):

    class 53 (insufficient resources: disk full, out of memory,       EnvironmentProblemError
    too many connections, a configured limit such as temp_file_limit)   (exit 4) naming the
    class 58 (system error: I/O error, undefined file)                  resource and the server
    57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now
    class 08 (connection exception) and a lost connection (an
    OperationalError without a SQLSTATE, or a connection left broken)
    MemoryError; OSError ENOSPC/EDQUOT/EIO/EFBIG/EROFS in the workspace

Anything else stays what it is (an internal error, exit 70, if it is a bug). `translated` is a
class decorator: every public method of the class (and `__init__`) translates what escapes it,
so a method added later is covered without remembering to wrap it.
"""

from __future__ import annotations

import errno
import functools
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import psycopg

from rollproof.core.errors import EnvironmentProblemError, RollproofError

_BY_STATE = {
    "53100": "the server's disk is full",
    "53200": "the server ran out of memory",
    "53300": "the server has too many connections",
    "53400": "a configured resource limit of the server was exceeded",
    "57P01": "the server was shut down (administrator command)",
    "57P02": "the server crashed (crash shutdown)",
    "57P03": "the server is not accepting connections now",
}
_BY_CLASS = {
    "53": "the server ran out of a resource",
    "58": "the server had a system error (I/O)",
    "08": "the connection to the server failed",
}
_DISK_ERRNOS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EIO: "an I/O error",
    errno.EFBIG: "a file grew past the size limit",
    errno.EROFS: "the file system is read-only",
}
_LOST = "the connection to the server was lost"


def machine_reason(e: BaseException) -> str | None:
    """What failed, in words, when `e` is a server or machine fault; None otherwise."""
    if not isinstance(e, psycopg.Error):
        return None
    state = e.sqlstate or ""
    if state in _BY_STATE:
        return _BY_STATE[state]
    if state[:2] in _BY_CLASS:
        return _BY_CLASS[state[:2]]
    if not state and isinstance(e, psycopg.OperationalError):
        return _LOST  # no SQLSTATE: the server never answered (closed socket, killed backend)
    pgconn = e.pgconn
    if pgconn is not None and pgconn.status == psycopg.pq.ConnStatus.BAD:
        return _LOST
    return None


def is_machine_error(e: BaseException) -> bool:
    """Whether an error a change script met is the machine's failure, not the change's."""
    return machine_reason(e) is not None


def _server_of(e: psycopg.Error, servers: Iterable[tuple[str, str, str]]) -> str:
    """'source X' or 'scratch Y' when the failed connection can be told apart, else both."""
    named = list(servers)
    pgconn = e.pgconn
    if pgconn is not None:
        try:
            host, port = pgconn.host.decode(), pgconn.port.decode()
        except (psycopg.Error, UnicodeDecodeError, AttributeError):
            host, port = "", ""
        hits = [shown for shown, h, p in named if (h, p) == (host, port) and host]
        if len(hits) == 1:
            return hits[0]
    return " or ".join(shown for shown, _h, _p in named) or "a PostgreSQL server"


def translate(e: BaseException, servers: Iterable[tuple[str, str, str]]) -> RollproofError | None:
    """The `RollproofError` a machine fault escaping the engine stands for, or None.

    `servers` are (shown DSN with its role, host, port) of the servers the session talks to.
    """
    if isinstance(e, RollproofError):
        return None
    if isinstance(e, MemoryError):
        return EnvironmentProblemError("out of memory while rehearsing a PostgreSQL source")
    if isinstance(e, OSError) and e.errno in _DISK_ERRNOS:
        return EnvironmentProblemError(
            f"{_DISK_ERRNOS[e.errno]} while writing the rehearsal's files (the dump); free space "
            "or point --workdir / TMPDIR elsewhere"
        )
    if not isinstance(e, psycopg.Error):
        return None
    return server_fault(e, _server_of(e, servers))


def server_fault(e: psycopg.Error, server: str) -> EnvironmentProblemError | None:
    """The exit-4 error for a machine fault met on `server` (e.g. 'scratch postgresql://…'),
    or None when `e` is not one. Raised where the connection's server is known."""
    reason = machine_reason(e)
    if reason is None:
        return None
    state = f" (SQLSTATE {e.sqlstate})" if e.sqlstate else ""
    return EnvironmentProblemError(
        f"{server}: {reason}{state}; the rehearsal stopped and proves nothing about the change: "
        "fix the server and run it again"
    )


_C = TypeVar("_C", bound=type)


def translated(servers_of: Callable[[Any], Iterable[tuple[str, str, str]]]) -> Callable[[_C], _C]:
    """A class decorator: each public method translates machine faults that escape it, naming
    the server among those `servers_of(self)` returns."""

    def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except (psycopg.Error, OSError, MemoryError) as e:
                mapped = translate(e, servers_of(self))
                if mapped is None:
                    raise
                raise mapped from None

        return call

    def decorate(cls: _C) -> _C:
        for name, value in list(vars(cls).items()):
            if callable(value) and (not name.startswith("_") or name == "__init__"):
                setattr(cls, name, wrap(value))
        return cls

    return decorate
