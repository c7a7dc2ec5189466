"""The Alembic worker: renders every revision's upgrade and downgrade as SQL, offline.

Run as `python -P -m rollproof.formats.alembic_offline PROJECT URL OUT` in the project's
directory, by `rollproof.formats.alembic` (never imported by rollproof itself: it imports
Alembic, and it runs the project's env.py and revision modules, which are the user's code, so
it runs in a process of its own). It writes one JSON document to OUT:

    {"alembic": "1.20.1", "dialect": "sqlite", "script_location": "migrations",
     "revisions": [{"revision", "down", "depends_on", "branch_labels", "doc", "path",
                    "upgrade_line", "downgrade_line", "upgrade", "downgrade",
                    "autocommit_line"}, ...]}

in the order `alembic upgrade heads` runs them from base, or {"error", "path", "line"}.

How: Alembic's own offline mode (`alembic upgrade --sql`): an EnvironmentContext with
`as_sql=True` runs env.py, whose offline branch calls `context.configure(url=...)` and
`context.run_migrations()`. The steps given to it are every revision, each a RevisionStep
whose migration function is wrapped to write a marker before and after it, so each
revision's own SQL is cut out of the output without Alembic's version-table statements
(`CREATE TABLE alembic_version`, its INSERT/UPDATE/DELETE) or the `-- Running ...` comments:
rollproof rehearses the migration, not Alembic's bookkeeping of it. Two passes: every upgrade
from base, then every downgrade from the heads.

Refused before anything renders (offline SQL cannot run them): a revision that reads the
database from Python (`op.get_bind()`, `.bind`, `.connection`) or branches on
`context.is_offline_mode()`.
"""

from __future__ import annotations

import ast
import functools
import io
import json
import re
import secrets
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

_READS = {
    "get_bind": "op.get_bind()",
    "is_offline_mode": "context.is_offline_mode()",
    "bind": "a .bind",
    "connection": "a .connection",
}


class Refused(Exception):
    """A project the offline rendering cannot honestly render: message, file, line."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.line = line


def _rel(path: str | None, root: Path) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).resolve().relative_to(root).as_posix()
    except ValueError:
        return path


def _functions(source: str) -> tuple[ast.Module, dict[str, int]]:
    tree = ast.parse(source)
    lines = {
        node.name: node.lineno
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    return tree, lines


def check_revision(path: Path, root: Path) -> dict[str, int]:
    """Refuse a revision that reads the database in Python; return its functions' lines."""
    rel = _rel(str(path), root)
    source = path.read_text(encoding="utf-8")
    tree, lines = _functions(source)
    for node in ast.walk(tree):
        name = None
        if isinstance(node, ast.Attribute):
            name = node.attr
        elif isinstance(node, ast.Name) and node.id in ("get_bind", "is_offline_mode"):
            name = node.id
        if name in _READS:
            raise Refused(
                f"it uses {_READS[name]}: a migration that reads the database from Python "
                "cannot be rendered as SQL offline, and rollproof rehearses the SQL Alembic "
                "renders (docs/formats.md)",
                rel,
                getattr(node, "lineno", None),
            )
    for fn in ("upgrade", "downgrade"):
        if fn not in lines:
            raise Refused(f"has no {fn}() function", rel, 1)
    autocommit = next(
        (
            n.lineno
            for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and n.attr == "autocommit_block"
        ),
        0,
    )
    lines["autocommit_block"] = autocommit
    return lines


def _user_frame(exc: BaseException, root: Path) -> tuple[str | None, int | None]:
    """The innermost traceback frame in the project's own files."""
    found: tuple[str | None, int | None] = (None, None)
    for frame in traceback.extract_tb(exc.__traceback__):
        try:
            inside = Path(frame.filename).resolve().is_relative_to(root)
        except OSError:
            inside = False
        if inside:
            found = (_rel(frame.filename, root), frame.lineno)
    return found


def render(root: Path, url: str) -> dict[str, Any]:
    """Every revision of the project at `root`, each with its upgrade and downgrade SQL."""
    from alembic import __version__
    from alembic.config import Config
    from alembic.runtime.environment import EnvironmentContext
    from alembic.runtime.migration import RevisionStep
    from alembic.script import Script, ScriptDirectory

    buffer = io.StringIO()
    ini = root / "alembic.ini"
    if ini.is_file():
        config = Config(str(ini), output_buffer=buffer)
    else:
        config = Config(output_buffer=buffer)
        config.set_main_option("script_location", str(root))
    config.set_main_option("sqlalchemy.url", url)
    script = ScriptDirectory.from_config(config)
    revisions: list[Script] = list(reversed(list(script.walk_revisions())))
    if not revisions:
        raise Refused("the Alembic project has no revisions", _rel(script.versions, root))
    lines = {r.revision: check_revision(Path(r.path), root) for r in revisions}
    nonce = secrets.token_hex(8)

    def one_pass(order: Sequence[Script], upgrade: bool) -> tuple[dict[str, str], str]:
        buffer.seek(0)
        buffer.truncate()
        env: EnvironmentContext

        def steps(_heads: Any, _context: Any) -> list[RevisionStep]:
            out = []
            for r in order:
                step = RevisionStep(script.revision_map, r, upgrade)
                step.migration_fn = _marked(step.migration_fn, r.revision, env, nonce)
                out.append(step)
            return out

        start = None if upgrade else tuple(script.get_heads())
        env = EnvironmentContext(config, script, fn=steps, as_sql=True, starting_rev=start)
        with env:
            script.run_env()
            try:
                dialect = env.get_context().dialect.name
            except Exception as e:
                raise Refused("env.py did not configure Alembic's context offline") from e
        return _cut(buffer.getvalue(), nonce), dialect

    ups, dialect = one_pass(revisions, True)
    downs, _ = one_pass(list(reversed(revisions)), False)
    expected = url.split(":", 1)[0].split("+", 1)[0]
    if dialect != expected:
        raise Refused(
            f"env.py rendered SQL for {dialect}, not {expected}: rollproof sets "
            "sqlalchemy.url to the rehearsal's database; let env.py's offline mode take its "
            "URL from config.get_main_option('sqlalchemy.url')",
            "env.py" if not ini.is_file() else _rel(str(Path(script.dir) / "env.py"), root),
        )
    out = []
    for r in revisions:
        if r.revision not in ups or r.revision not in downs:
            raise Refused(
                "env.py did not run the migrations in offline mode (context.run_migrations())",
                _rel(str(Path(script.dir) / "env.py"), root),
            )
        out.append(
            {
                "revision": r.revision,
                "down": _tuple(r.down_revision),
                "depends_on": [_resolve(script, d) for d in _tuple(r.dependencies)],
                "branch_labels": sorted(r.branch_labels),
                "doc": r.doc or "",
                "path": _rel(r.path, root),
                "upgrade_line": lines[r.revision]["upgrade"],
                "downgrade_line": lines[r.revision]["downgrade"],
                "autocommit_line": lines[r.revision]["autocommit_block"],
                "upgrade": ups[r.revision],
                "downgrade": downs[r.revision],
            }
        )
    return {
        "alembic": __version__,
        "dialect": dialect,
        "script_location": _rel(script.dir, root),
        "revisions": out,
    }


def _resolve(script: Any, name: str) -> str:
    """A dependency (a revision or a branch label) as the revision it names."""
    found = script.get_revision(name)
    return name if found is None else str(found.revision)


def _tuple(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _marked(fn: Callable[..., Any], revision: str, env: Any, nonce: str) -> Callable[..., Any]:
    """`fn` writing a marker into the offline output before and after it runs."""

    @functools.wraps(fn)
    def run(*args: Any, **kw: Any) -> Any:
        impl = env.get_context().impl
        impl.static_output(f"-- rollproof-{nonce} begin {revision}")
        result = fn(*args, **kw)
        impl.static_output(f"-- rollproof-{nonce} end {revision}")
        return result

    return run


def _cut(output: str, nonce: str) -> dict[str, str]:
    pattern = re.compile(
        rf"^-- rollproof-{nonce} begin (\S+)\n\n(.*?)^-- rollproof-{nonce} end \1$",
        re.M | re.S,
    )
    return {m.group(1): m.group(2).rstrip() + "\n" for m in pattern.finditer(output)}


def main(argv: Sequence[str]) -> int:
    root_arg, url, out = argv
    root = Path(root_arg).resolve()
    result: dict[str, Any]
    try:
        result = render(root, url)
    except Refused as e:
        result = {"error": str(e), "path": e.path, "line": e.line}
    except ModuleNotFoundError as e:
        if e.name is not None and e.name.split(".")[0] in ("alembic", "sqlalchemy", "mako"):
            result = {"error": "missing", "path": None, "line": None}
        else:
            path, line = _user_frame(e, root)
            result = {"error": f"{type(e).__name__}: {e}", "path": path, "line": line}
    except Exception as e:  # the project's own code failed: say where
        path, line = _user_frame(e, root)
        result = {"error": f"{type(e).__name__}: {e}", "path": path, "line": line}
    Path(out).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
