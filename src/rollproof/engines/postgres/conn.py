"""PostgreSQL connections: DSN parsing, read-only sessions, and secrets kept off command lines.

A DSN (URI or `key=value` form) is split once into its connection parameters and its password.
The password never travels with the parameters: psycopg receives it as a keyword argument
in-process, and a subprocess (pg_dump, pg_restore, psql) receives it only as `PGPASSWORD` in
its own environment. libpq's own environment (PGPASSWORD, PGPASSFILE, PGSERVICE/PGSERVICEFILE,
PGSSLMODE/PGSSLROOTCERT/PGSSLCERT/PGSSLKEY, PGHOST, ...) decides rollproof's own connections;
`resolved` reads back what libpq made of it for a connection that worked (host, port, user,
database, TLS settings, and the password it sent), and a subprocess connects with exactly those
values, given explicitly. A command line is readable by every user of the machine through `ps`;
an environment is readable only by the same user, and nothing here ever writes it to a file
or a packet. Every DSN that leaves the process passes through `redact_dsn`.

Invariants:
* `connect_source` opens the source with `default_transaction_read_only=on` set at connection
  start-up (no window in which a statement could run writable), then reads the setting back and
  refuses the connection unless the server confirms it;
* a subprocess never inherits a libpq variable from the caller's environment that could send it
  to another server or database than the one named (PGHOST, PGSERVICE, ...): it gets the values
  rollproof's own proven connection resolved, so what is proven about a connection is proven
  about the process that makes it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg
from psycopg import conninfo as pg_conninfo

from rollproof.core.errors import EnvironmentProblemError, SourceError
from rollproof.core.guard import WITHHELD, without_values
from rollproof.core.redact import redact_dsn, scrub

SCHEMES = ("postgresql://", "postgres://")
READ_ONLY_OPTION = "-c default_transaction_read_only=on"
CONNECT_TIMEOUT = 10

# libpq reads these from the environment; a subprocess gets none of the caller's, so that
# only the parameters rollproof passes decide where it connects.
_LIBPQ_ENV = frozenset(
    {
        "PGHOST",
        "PGHOSTADDR",
        "PGPORT",
        "PGDATABASE",
        "PGUSER",
        "PGPASSWORD",
        "PGPASSFILE",
        "PGSERVICE",
        "PGSERVICEFILE",
        "PGOPTIONS",
        "PGTARGETSESSIONATTRS",
        "PGSSLMODE",
        "PGSSLROOTCERT",
        "PGSSLCERT",
        "PGSSLKEY",
        "PGSSLCRL",
        "PGSSLCRLDIR",
        "PGREQUIRESSL",
    }
)
# What a client program is given of a resolved connection, when libpq's value differs from its
# compiled-in default: where to connect and how to trust it. The password goes apart; `service`
# and `passfile` are not passed on (their values are).
_RESOLVED = (
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslcrl",
    "sslcrldir",
    "gssencmode",
    "krbsrvname",
    "target_session_attrs",
)


def is_postgres_dsn(dsn: str) -> bool:
    return dsn.startswith(SCHEMES)


@dataclass(frozen=True, slots=True)
class PgTarget:
    """Where to connect: libpq parameters without the password, and the password apart."""

    params: Mapping[str, str]
    password: str | None = field(default=None, repr=False)
    shown: str = ""
    """The DSN as it may be printed or stored (redacted)."""

    @property
    def conninfo(self) -> str:
        """A libpq conninfo string without any password: safe for a command line."""
        return pg_conninfo.make_conninfo(**dict(self.params))

    @property
    def dbname(self) -> str:
        return self.params.get("dbname") or self.params.get("user") or ""

    def with_db(self, dbname: str) -> PgTarget:
        params = dict(self.params)
        params["dbname"] = dbname
        return replace(self, params=params, shown=f"{self.shown.split('?')[0]} (database {dbname})")

    def with_user(self, user: str, password: str | None) -> PgTarget:
        params = dict(self.params)
        params["user"] = user
        params.pop("passfile", None)
        return replace(self, params=params, password=password)

    def secrets(self) -> set[str]:
        return {self.password} if self.password else set()

    def clean(self, text: str) -> str:
        """`text` with this target's password removed, for messages built from driver errors."""
        return scrub(text, self.secrets())


def parse_pg_dsn(dsn: str, *, what: str = "source") -> PgTarget:
    """Split a PostgreSQL DSN into parameters and password; a malformed DSN is a SourceError."""
    shown = redact_dsn(dsn)
    try:
        params = pg_conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as e:
        raise SourceError(f"{what} {shown}: not a valid PostgreSQL DSN") from e
    password = params.pop("password", None)
    clean = {k: str(v) for k, v in params.items() if v is not None}
    return PgTarget(params=clean, password=None if password is None else str(password), shown=shown)


def _options(params: Mapping[str, str], extra: str) -> str:
    existing = params.get("options", "")
    return f"{existing} {extra}".strip()


def connect(
    target: PgTarget,
    *,
    read_only: bool = False,
    autocommit: bool = True,
    what: str = "database",
) -> psycopg.Connection[Any]:
    """Open a connection; a server that cannot be reached is an environment problem (exit 4)."""
    params: dict[str, Any] = dict(target.params)
    if read_only:
        params["options"] = _options(target.params, READ_ONLY_OPTION)
    params.setdefault("connect_timeout", str(CONNECT_TIMEOUT))
    params["application_name"] = "rollproof"
    if target.password is not None:
        params["password"] = target.password
    try:
        conn = psycopg.connect(autocommit=autocommit, **params)
    except psycopg.Error as e:
        raise EnvironmentProblemError(
            f"{what} {target.shown}: cannot connect: {target.clean(_first_line(e))}"
        ) from None
    return conn


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def describe_error(e: psycopg.Error) -> str:
    """One line for a server error: the message, and the SQLSTATE when there is one."""
    diag = e.diag
    message = diag.message_primary or _first_line(e)
    return f"{message} (SQLSTATE {diag.sqlstate})" if diag.sqlstate else message


_PL_RAISED = frozenset({"exec_stmt_raise", "exec_stmt_assert"})


def script_error_parts(e: psycopg.Error) -> tuple[str | None, str | None, list[str]]:
    """(SQLSTATE, primary message or None when code in the database wrote it, names) of an
    error a change script met, for `rollproof.core.guard.script_error`.

    A message written by a procedural language (PL/pgSQL `RAISE`/`ASSERT`, or PL/Python,
    PL/Perl, PL/Tcl errors; SQLSTATE class P0) is anything the code chose to put there, values
    included, so it is withheld; a server message keeps its template (values are removed by
    `script_error`). DETAIL, HINT and CONTEXT are dropped: they print rows and keys. The table,
    column, constraint and type the server names are identifiers, not values.
    """
    diag = e.diag
    state = diag.sqlstate
    source = diag.source_file or ""
    raised = (
        (diag.source_function or "") in _PL_RAISED
        or source.startswith(("pl_", "plpy", "plperl", "pltcl"))
        or (state or "").startswith("P0")
    )
    message = None if raised else (diag.message_primary or _first_line(e))
    names = [
        f"{kind} {value}"
        for kind, value in (
            ("table", diag.table_name),
            ("column", diag.column_name),
            ("constraint", diag.constraint_name),
            ("type", diag.datatype_name),
        )
        if value
    ]
    return (None if state is None else f"SQLSTATE {state}"), message, names


def describe_script_error(e: psycopg.Error) -> str:
    """`describe_error` for an error met while a change script's session ran: no values."""
    state, message, names = script_error_parts(e)
    shown = WITHHELD if message is None else without_values(message)
    extra = "; ".join(x for x in (", ".join(names), state) if x)
    return f"{shown} ({extra})" if extra else shown


def connect_source(target: PgTarget) -> psycopg.Connection[Any]:
    """A read-only session on the source, refused unless the server confirms read-only."""
    conn = connect(target, read_only=True, what="source")
    try:
        row = conn.execute(
            "SELECT current_setting('default_transaction_read_only'), "
            "current_setting('transaction_read_only')"
        ).fetchone()
    except psycopg.Error as e:
        conn.close()
        raise EnvironmentProblemError(
            f"source {target.shown}: cannot read the session settings: {describe_error(e)}"
        ) from None
    if row is None or tuple(row) != ("on", "on"):
        conn.close()
        raise SourceError(
            f"source {target.shown}: the server did not confirm a read-only session "
            f"(default_transaction_read_only, transaction_read_only = {row}); refusing to go on"
        )
    return conn


def resolved(conn: psycopg.Connection[Any], target: PgTarget) -> PgTarget:
    """`target` as libpq resolved it for `conn` (a connection to it that worked).

    libpq reads PGPASSWORD, a passfile, a service file and the PGSSL* variables for rollproof's
    own connections; a client program gets none of the caller's libpq environment, so it is
    given what they resolved to: the parameters explicitly, the password it actually sent apart
    (it travels as `PGPASSWORD` in the child's environment, never on a command line).
    """
    params = dict(target.params)
    params.pop("service", None)
    params.pop("passfile", None)
    for option in conn.pgconn.info:
        keyword = option.keyword.decode()
        if keyword in _RESOLVED and option.val is not None and option.val != option.compiled:
            params[keyword] = option.val.decode()
    password = target.password
    if password is None and conn.pgconn.used_password:
        password = conn.pgconn.password.decode() or None
    return replace(target, params=params, password=password)


def subprocess_env(
    target: PgTarget, base: Mapping[str, str] | None = None, *, read_only: bool = False
) -> dict[str, str]:
    """The environment for a libpq client program that connects to `target`.

    The password goes here and only here (`PGPASSWORD`), never on the command line.
    """
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in _LIBPQ_ENV}
    if target.password is not None:
        env["PGPASSWORD"] = target.password
    if read_only:
        env["PGOPTIONS"] = READ_ONLY_OPTION
    env.setdefault("PGCONNECT_TIMEOUT", str(CONNECT_TIMEOUT))
    env["PGAPPNAME"] = "rollproof"
    return env


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
