"""Alembic: a project's revisions, each as the SQL Alembic itself renders for it offline.

An Alembic migration is Python. rollproof rehearses SQL, so each revision's `upgrade()` and
`downgrade()` are rendered by Alembic's own offline mode (what `alembic upgrade --sql` prints)
for the source's dialect (SQLite or PostgreSQL: the SQL differs, e.g. `SERIAL` on
PostgreSQL), the dialect of the positions `rehearse-dir` builds, one revision at a time along
the revision graph, in the order `alembic upgrade heads` runs them from base. The rendering
runs in a process of its own (`alembic_offline.py`), because it runs the project's env.py and
revision modules: the user's own code, run as Alembic would run it, with this interpreter (so
what env.py imports must be importable here, as it must be for `alembic` itself).

A directory is an Alembic project when it holds `alembic.ini` (its `script_location` names the
scripts) or is the script directory itself (`env.py` and `versions/`). rollproof sets
`sqlalchemy.url` to `sqlite://` or `postgresql://`: offline mode never connects, the URL only
chooses the dialect, and an env.py that takes its URL from elsewhere and renders for another
dialect is refused.

A migration's files are the two SQL files rendered from the revision
(`rollproof-alembic/<revision>.upgrade.sql`, `.downgrade.sql`), which its change names as
apply and revert, so the packet holds the SQL that was rehearsed; its change.toml names the
revision's `.py` file and that file's sha256 (a packet holds only the files its change names).

Refused, naming the file and line: a revision that reads the database from Python
(`op.get_bind()` and the like), which offline SQL cannot run. A revision whose upgrade renders
no SQL (a merge) is a change meant to change nothing (`no_mutation`); one whose downgrade
renders none is not reversible. `autocommit_block()` marks it non-transactional.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from rollproof.core.canonical import sha256_hex
from rollproof.core.errors import UsageError
from rollproof.formats.changes import change_id
from rollproof.formats.files import Reader, has_code
from rollproof.formats.model import FormatError, Migration, Project, Sql

URLS = {"sqlite": "sqlite://", "postgresql": "postgresql://"}
"""The URL rollproof gives env.py per dialect: offline mode only takes the dialect from it."""
TIMEOUT_SECONDS = 300
INI = "alembic.ini"
RENDERED = "rollproof-alembic"
MISSING = (
    "this is an Alembic project, and Alembic is not installed with rollproof: "
    "install rollproof[alembic]"
)


def is_project(directory: Path) -> bool:
    if (directory / INI).is_file():
        return True
    return (directory / "env.py").is_file() and (directory / "versions").is_dir()


def _run_worker(root: Path, dialect: str) -> dict[str, Any]:
    if importlib.util.find_spec("alembic") is None:
        raise UsageError(MISSING)
    from rollproof.engines.workspace import owned_temp_dir

    with owned_temp_dir("rollproof-alembic-") as tmp:
        out = tmp / "revisions.json"
        command = [
            sys.executable,
            "-P",
            "-m",
            "rollproof.formats.alembic_offline",
            str(root),
            URLS[dialect],
            str(out),
        ]
        try:
            done = subprocess.run(
                command,
                cwd=root,
                capture_output=True,
                text=True,
                timeout=TIMEOUT_SECONDS,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise FormatError(
                str(root), f"Alembic's offline rendering did not finish in {TIMEOUT_SECONDS} s"
            ) from None
        if done.returncode != 0 or not out.is_file():
            last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
            raise FormatError(
                str(root), f"Alembic's offline rendering failed (exit {done.returncode}): {last}"
            )
        doc: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    if "error" in doc:
        if doc["error"] == "missing":
            raise UsageError(MISSING)
        path = str(root / doc["path"]) if doc.get("path") else str(root)
        raise FormatError(path, doc["error"], doc.get("line"))
    return doc


def load(directory: Path, dialect: str = "sqlite") -> Project:
    """The project's revisions rendered for `dialect` ("sqlite" or "postgresql")."""
    if dialect not in URLS:
        raise UsageError(f"Alembic revisions render for {' or '.join(URLS)}, not {dialect!r}")
    root = directory.resolve()
    if not is_project(root):
        raise FormatError(str(directory), f"no {INI}, and not a script directory (env.py)")
    doc = _run_worker(root, dialect)
    reader = Reader(directory)
    migrations = []
    for r in doc["revisions"]:
        migrations.append(_migration(reader, r, doc))
    return Project(
        "alembic",
        str(directory),
        tuple(migrations),
        bookkeeping="alembic_version",
        options={
            "script_location": str(doc["script_location"]),
            "alembic": doc["alembic"],
            "dialect": str(doc["dialect"]),
        },
    )


def _migration(reader: Reader, r: dict[str, Any], doc: dict[str, Any]) -> Migration:
    rev, rel = str(r["revision"]), str(r["path"])
    reader.text(rel)
    source_sha256 = sha256_hex(reader.take()[rel])
    stem = f"{RENDERED}/{change_id(rev)}"
    up_rel, down_rel = f"{stem}.upgrade.sql", f"{stem}.downgrade.sql"
    up, down = str(r["upgrade"]), str(r["downgrade"])
    empty = not has_code(up)
    if empty:
        up = f"-- Alembic revision {rev}: its upgrade() renders no SQL\n"
    files = {up_rel: up.encode("utf-8")}
    revert = None
    irreversible = None
    if has_code(down):
        files[down_rel] = down.encode("utf-8")
        revert = Sql(path=down_rel, text=down)
    elif empty:
        irreversible = f"its upgrade() and downgrade() ({rel}) render no SQL: nothing to undo"
    else:
        irreversible = f"its downgrade() ({rel}:{r['downgrade_line']}) renders no SQL"
    no_txn = None
    if r["autocommit_line"]:
        no_txn = f"alembic `autocommit_block()` ({rel}:{r['autocommit_line']})"
    note = (
        f"rendered offline by Alembic {doc['alembic']} for {doc['dialect']} from {rel} "
        f"(sha256 {source_sha256}; upgrade() line {r['upgrade_line']}, downgrade() line "
        f"{r['downgrade_line']})"
    )
    return Migration(
        id=rev,
        name=str(r["doc"]).strip().splitlines()[0] if str(r["doc"]).strip() else rev,
        apply=Sql(path=up_rel, text=up),
        revert=revert,
        verify=None,
        requires=tuple(r["down"]) + tuple(r["depends_on"]),
        version=rev,
        no_transaction=no_txn,
        irreversible=irreversible,
        no_mutation=empty,
        notes=(note,),
        files=files,
    )
