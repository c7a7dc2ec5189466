"""Scratch databases and roles of runs that died: whose each one is, and sweeping the dead's.

A rehearsal against a named scratch server makes two databases there (`rollproof_<tag>_snap`,
`rollproof_<tag>_work`) and a role (`rollproof_<tag>_change`), and drops them when it ends. A
run killed with SIGKILL, or whose machine died, cannot; on a server that rehearsals share they
would stay forever. So each one is marked with its owner in the step that creates it: a
comment (`COMMENT ON DATABASE`, `COMMENT ON ROLE`, the latter in the role's own transaction)
holding the run's owner record, taken from its workspace's OWNER file
(`engines/workspace.py`):

    {"rollproof": "scratch-owner/1", "host": ..., "pid": ..., "process_start": ...,
     "workspace": "/abs/path", "kept": false}

`sweep_scratch` drops the objects of a tag (databases first, then the role) only when the
owner is provably gone, which can be told only on the owner's own host:

* its workspace exists and holds an OWNER file whose lock this process can take (the kernel
  drops the lock when its run dies, however it dies), or
* its workspace is gone and no process with its pid and start time runs.

Never swept: a name that is not rollproof's pattern; a tag none of whose objects carries an
owner record (made by someone else, or by a run killed in the instant between CREATE DATABASE
and its COMMENT); a record of another host (that run's lock is not visible from here); a clone
kept with `--keep-clone` (its record says `kept`, and its workspace holds KEPT); a tag whose
objects disagree about their owner. What is left is reported with the reason.

A sweep runs at the start of every rehearsal against a named scratch server and on demand with
`rollproof gc --scratch DSN`.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from rollproof.engines.workspace import KEPT_FILE, OWNER_FILE, Claim, lock_is_free, running

RECORD = "scratch-owner/1"
NAME = re.compile(r"^rollproof_([0-9a-f]{8})_(snap|work|change|next|branch|aside|old[0-9]+)$")

_DATABASES = """
SELECT d.datname, pg_catalog.shobj_description(d.oid, 'pg_database'), d.datistemplate
FROM pg_catalog.pg_database d
WHERE d.datname ~ '^rollproof_[0-9a-f]{8}_(snap|work|next|branch|aside|old[0-9]+)$'
ORDER BY d.datname
"""
_ROLES = """
SELECT r.rolname, pg_catalog.shobj_description(r.oid, 'pg_authid')
FROM pg_catalog.pg_roles r
WHERE r.rolname ~ '^rollproof_[0-9a-f]{8}_change$'
ORDER BY r.rolname
"""


@dataclass(frozen=True, slots=True)
class Owner:
    """Who made a scratch object: a run on `host`, pid `pid`, with its workspace."""

    host: str
    pid: int
    process_start: str | None
    workspace: str
    kept: bool = False

    def comment(self) -> str:
        return json.dumps(
            {
                "rollproof": RECORD,
                "host": self.host,
                "pid": self.pid,
                "process_start": self.process_start,
                "workspace": self.workspace,
                "kept": self.kept,
            },
            sort_keys=True,
        )

    @property
    def run(self) -> tuple[str, int, str | None, str]:
        """The run, without `kept`: what the objects of one tag must agree on."""
        return (self.host, self.pid, self.process_start, self.workspace)


def owner_of(claim: Claim, *, kept: bool = False) -> Owner:
    """The owner record of the run holding `claim` (its workspace), read from its OWNER file."""
    body = json.loads(claim.owner.read_text(encoding="utf-8"))
    start = body.get("process_start")
    return Owner(
        host=str(body["host"]),
        pid=int(body["pid"]),
        process_start=None if start is None else str(start),
        workspace=str(claim.directory),
        kept=kept,
    )


def parse_owner(comment: str | None) -> Owner | None:
    """The owner record in an object's comment, or None when it holds none (or another text)."""
    if not comment:
        return None
    try:
        body = json.loads(comment)
        if not isinstance(body, dict) or body.get("rollproof") != RECORD:
            return None
        start = body.get("process_start")
        return Owner(
            host=str(body["host"]),
            pid=int(body["pid"]),
            process_start=None if start is None else str(start),
            workspace=str(body["workspace"]),
            kept=bool(body.get("kept", False)),
        )
    except (ValueError, KeyError, TypeError):
        return None


def mark_database(conn: psycopg.Connection[Any], name: str, owner: Owner) -> None:
    """Record `owner` on a database this run has just created."""
    conn.execute(
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(name), sql.Literal(owner.comment())
        )
    )


def mark_role(conn: psycopg.Connection[Any], name: str, owner: Owner) -> None:
    """Record `owner` on a role this run has just created (in the same transaction)."""
    conn.execute(
        sql.SQL("COMMENT ON ROLE {} IS {}").format(
            sql.Identifier(name), sql.Literal(owner.comment())
        )
    )


def owner_gone(owner: Owner, host: str | None = None) -> str | None:
    """Why `owner`'s run is provably gone, or None when it may be alive (or cannot be told)."""
    if owner.kept:
        return None
    if owner.host != (host or socket.gethostname()):
        return None
    workspace = Path(owner.workspace)
    if not workspace.is_absolute():
        return None
    if (workspace / KEPT_FILE).exists():
        return None
    lock = workspace / OWNER_FILE
    if lock.exists():
        return f"its workspace {workspace} is no longer locked" if lock_is_free(lock) else None
    # No OWNER file (the workspace is gone, or its run never got to claim it): the process
    # decides, by pid and start time.
    if running(owner.pid, owner.process_start):
        return None
    where = "has no owner file" if workspace.exists() else "is gone"
    return f"its workspace {workspace} {where} and process {owner.pid} has ended"


@dataclass(frozen=True, slots=True)
class Leftover:
    """A rollproof-named object on a scratch server, and what the sweep did with it."""

    name: str
    kind: str  # "database" or "role"
    removed: bool
    why: str

    def __str__(self) -> str:
        verb = "removed" if self.removed else "left"
        return f"{verb} {self.kind} {self.name}: {self.why}"


def sweep_scratch(conn: psycopg.Connection[Any], *, host: str | None = None) -> list[Leftover]:
    """Drop the scratch databases and roles whose run is provably gone; report every
    rollproof-named object, removed or left, with the reason. `conn` is autocommit, on the
    scratch server's maintenance database."""
    objects: dict[str, list[tuple[str, str, Owner | None, bool]]] = {}
    for name, comment, template in conn.execute(_DATABASES).fetchall():
        m = NAME.match(str(name))
        if m is not None:
            objects.setdefault(m.group(1), []).append(
                (str(name), "database", parse_owner(comment), bool(template))
            )
    for name, comment in conn.execute(_ROLES).fetchall():
        m = NAME.match(str(name))
        if m is not None:
            objects.setdefault(m.group(1), []).append(
                (str(name), "role", parse_owner(comment), False)
            )
    out: list[Leftover] = []
    for _tag, items in sorted(objects.items()):
        owners = [o for _n, _k, o, _t in items if o is not None]
        runs = {o.run for o in owners}
        why: str | None
        if not owners:
            why, gone = "no owner record (not made by rollproof, or not yet marked)", None
        elif len(runs) > 1:
            why, gone = "its objects name different owners", None
        elif any(o.kept for o in owners):
            why, gone = "kept with --keep-clone", None
        else:
            gone = owner_gone(owners[0], host)
            why = None if gone is not None else _alive(owners[0], host)
        if gone is None:
            out += [Leftover(n, k, False, why or "") for n, k, _o, _t in items]
            continue
        # Databases first: the role owns objects in them and cannot be dropped before.
        for name, kind, _owner, template in sorted(items, key=lambda i: i[1] != "database"):
            out.append(_drop(conn, name, kind, template, gone))
    return out


def _alive(owner: Owner, host: str | None) -> str:
    if owner.host != (host or socket.gethostname()):
        return f"made by a run on host {owner.host}, whose liveness cannot be seen from here"
    return f"its run (pid {owner.pid}, workspace {owner.workspace}) may still be alive"


def _drop(
    conn: psycopg.Connection[Any], name: str, kind: str, template: bool, gone: str
) -> Leftover:
    ident = sql.Identifier(name)
    try:
        if kind == "database":
            if template:
                with contextlib.suppress(psycopg.Error):
                    conn.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(ident))
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        else:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))
    except psycopg.Error as e:
        message = e.diag.message_primary or type(e).__name__
        return Leftover(name, kind, False, f"{gone}, but it could not be dropped: {message}")
    return Leftover(name, kind, True, gone)
