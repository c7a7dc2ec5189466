"""Start-up (issue 18): a command imports only what it uses.

Each case runs the real command in a fresh interpreter (`python -X importtime -m rollproof ...`)
and reads the modules it imported from the interpreter's own trace. The budget is a set of
*modules*, never seconds: the packages a command must not load are derived from what it needs
(a SQLite fingerprint needs apsw and sqlglot's tokenizer, never a PostgreSQL driver, the
governance code or a signing library), and a failure names the chain of importers that pulled
the module in, so the fix is where the chain starts.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from rollproof.assurance.selftest import SOUND_CHANGE, build_tiny_source, write_change
from rollproof.cli import main
from rollproof.cli.app import COMMANDS, load_all
from tests.pg_fixtures import (
    MakeSource,
    pg_servers_fixture,  # noqa: F401  (fixture)
    pg_source_fixture,  # noqa: F401  (fixture)
)

_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|(?P<indent> *)(?P<name>\S+)\s*$")

POSTGRES = ("psycopg", "psycopg_binary", "pglast", "rollproof.engines.postgres")
MIGRATION_TOOLS = ("alembic", "sqlalchemy")
FORMATS = ("rollproof.formats",)
SIGNING = ("cryptography",)
GOVERNANCE = ("rollproof.governance", "rollproof.assurance")
REHEARSAL = ("rollproof.rehearse", "rollproof.evidence", "rollproof.surfaces")
SQLITE_ENGINE = ("apsw", "sqlglot", "rollproof.engines")


@dataclass(frozen=True, slots=True)
class Trace:
    """The modules one run imported, each with the module that imported it (None: the top)."""

    parent: dict[str, str | None]
    stdout: str
    code: int

    def chain(self, name: str) -> str:
        """`name <- its importer <- ...`; a module imported by a function (a command's lazy
        import) rather than by another module's import ends the chain at run time."""
        out = [name]
        while (up := self.parent.get(out[-1])) is not None:
            out.append(up)
        return " <- ".join(out) + " <- (imported at run time)"

    def loaded(self, prefixes: tuple[str, ...]) -> list[str]:
        """Modules named by `prefixes` (a package and everything under it), as the trace lists
        them."""
        return [m for m in self.parent if any(m == p or m.startswith(p + ".") for p in prefixes)]


def _parse(stderr: str) -> dict[str, str | None]:
    """`-X importtime` prints a module after the modules it imported, one level deeper: the
    importer of each is the next line printed with a smaller indent."""
    rows = [(len(m["indent"]), m["name"]) for m in map(_LINE.match, stderr.splitlines()) if m]
    parent: dict[str, str | None] = {}
    for i, (indent, name) in enumerate(rows):
        up = next((n for d, n in rows[i + 1 :] if d < indent), None)
        parent.setdefault(name, up)
    return parent


def trace(cwd: Path, *argv: str) -> Trace:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "rollproof", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Trace(_parse(proc.stderr), proc.stdout, proc.returncode)


def _within(name: str | None, prefixes: tuple[str, ...]) -> bool:
    return name is not None and any(name == p or name.startswith(p + ".") for p in prefixes)


def assert_not_loaded(run: Trace, forbidden: tuple[str, ...]) -> None:
    """None of `forbidden` was imported; else each one a permitted module pulled in, with the
    chain of importers up to the command's own module."""
    loaded = run.loaded(forbidden)
    pulled = [run.chain(m) for m in loaded if not _within(run.parent[m], forbidden)]
    assert loaded == [], "imported although the command does not need it:\n" + "\n".join(
        pulled or loaded
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SQLite source, a change, and the valid packet of its rehearsal."""
    root = tmp_path_factory.mktemp("startup")
    build_tiny_source(root / "tiny.db")
    write_change(root / "change", SOUND_CHANGE)
    code = main(
        ["rehearse", str(root / "change"), "--source", str(root / "tiny.db"), "--out",
         str(root / "packet")]
    )  # fmt: skip
    assert code == 0
    return root


def test_version_imports_almost_nothing(workspace: Path) -> None:
    baseline = set(_parse(_stderr_of_nothing()))
    run = trace(workspace, "--version")
    assert run.code == 0
    assert run.stdout.startswith("rollproof, version ")
    ours = [m for m in run.parent if m.startswith("rollproof")]
    assert ours == [m for m in ours if m in _VERSION_OURS], [run.chain(m) for m in ours]
    others = sorted({m.split(".")[0] for m in run.parent} - baseline - set(sys.stdlib_module_names))
    assert others == ["click", "rollproof"], others


_VERSION_OURS = {
    "rollproof",
    "rollproof.core",
    "rollproof.core.version",
    "rollproof.core.errors",
    "rollproof.core.redact",
    "rollproof.cli",
    "rollproof.cli.app",
    "rollproof.__main__",
}


def _stderr_of_nothing() -> str:
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "pass"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stderr


def test_help_lists_every_command_without_loading_an_engine(workspace: Path) -> None:
    run = trace(workspace, "--help")
    assert run.code == 0
    listed = re.findall(r"^  (\S+)\s", run.stdout.split("Commands:")[1], re.M)
    assert listed == sorted(COMMANDS)
    # The command modules are loaded for their help texts; what their commands run is not.
    assert_not_loaded(
        run, POSTGRES + MIGRATION_TOOLS + SIGNING + GOVERNANCE + SQLITE_ENGINE + REHEARSAL
    )


def test_sqlite_fingerprint_loads_the_sqlite_engine_only(workspace: Path) -> None:
    run = trace(workspace, "fingerprint", "tiny.db")
    assert run.code == 0
    assert run.stdout.startswith("sha256:")
    # What it needs: the engine, apsw for the rows and sqlglot's tokenizer for the schema SQL.
    assert {"apsw", "sqlglot", "rollproof.engines.sqlite.source"} <= set(run.parent)
    assert_not_loaded(run, POSTGRES + MIGRATION_TOOLS + FORMATS + SIGNING + GOVERNANCE + REHEARSAL)
    assert_not_loaded(run, ("jsonschema", "rollproof.verify.validate"))
    # Reading a source is not rehearsing it: no session, guard, explanations, page proofs,
    # statement splitting, change files or numpy (the extension sorts key-less digests).
    assert_not_loaded(
        run,
        (
            "rollproof.engines.sqlite.session",
            "rollproof.engines.sqlite.explain",
            "rollproof.engines.sqlite.pages",
            "rollproof.engines.sqlite.statements",
            "rollproof.core.guard",
            "rollproof.core.change",
            "numpy",
        ),
    )


def test_a_key_less_table_is_fingerprinted_without_numpy(workspace: Path) -> None:
    """Its row digests are sorted and merged by the extension (numpy, about 90 ms to import,
    only where the extension is not built), read in process and by workers."""
    from rollproof.engines.sqlite import rowcodec

    if rowcodec.extension_path() is None:
        pytest.skip("the C accelerator is not built in this install: numpy sorts")
    import sqlite3

    for name, rows in (("small.db", 1_000), ("large.db", 400_000)):  # in process; workers
        conn = sqlite3.connect(workspace / name)
        conn.execute("CREATE TABLE IF NOT EXISTS log (at INTEGER, what TEXT)")
        conn.execute("DELETE FROM log")
        conn.executemany("INSERT INTO log VALUES (?, ?)", ((i % 97, "x" * 20) for i in range(rows)))
        conn.commit()
        conn.close()
        run = trace(workspace, "fingerprint", name)
        assert run.code == 0
        assert run.stdout.startswith("sha256:")
        assert_not_loaded(run, ("numpy",))
    assert (workspace / "large.db").stat().st_size >= 8 << 20  # read by worker processes


def test_postgres_fingerprint_loads_the_reader_not_the_rehearsal(
    workspace: Path, pg_source: MakeSource
) -> None:
    dsn = pg_source(
        "CREATE TABLE t (id bigint PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a');"
    )
    run = trace(workspace, "fingerprint", dsn)
    assert run.code == 0
    assert run.stdout.startswith("sha256:")
    assert {"psycopg", "rollproof.engines.postgres.source"} <= set(run.parent)
    # Reading a source needs the driver and the fingerprint; the rehearsal's session, its SQL
    # parser (pglast), the SQLite engine and sqlglot are not.
    assert_not_loaded(
        run,
        (
            "rollproof.engines.postgres.session",
            "pglast",
            "apsw",
            "sqlglot",
            "rollproof.engines.sqlite",
            *MIGRATION_TOOLS,
            *FORMATS,
            *SIGNING,
            *GOVERNANCE,
            *REHEARSAL,
        ),
    )


def test_sqlite_rehearse_loads_no_postgres_governance_or_signing(workspace: Path) -> None:
    run = trace(workspace, "rehearse", "change", "--source", "tiny.db", "--out", "again")
    assert run.code == 0
    assert "rollproof.rehearse.flow" in run.parent
    # Unsigned and ungoverned: no key is read, no ledger opened, no PostgreSQL reader needed.
    assert_not_loaded(run, POSTGRES + MIGRATION_TOOLS + FORMATS + SIGNING + GOVERNANCE)


def test_sqlite_surfaces_loads_the_sql_reader_only(workspace: Path) -> None:
    run = trace(workspace, "surfaces", "change")
    assert run.code == 0
    assert "rollproof.engines.sqlglot_scope" in run.parent
    assert_not_loaded(
        run,
        POSTGRES
        + MIGRATION_TOOLS
        + FORMATS
        + SIGNING
        + GOVERNANCE
        + ("rollproof.rehearse", "rollproof.evidence", "apsw"),
    )


def test_validate_loads_the_validator_only(workspace: Path) -> None:
    run = trace(workspace, "validate", "packet")
    assert run.code == 0
    assert run.stdout.startswith("VALID packet")
    assert "rollproof.verify.validate" in run.parent
    # Without --trusted-key no signature is checked, so no signing library is loaded either.
    assert_not_loaded(
        run, POSTGRES + MIGRATION_TOOLS + FORMATS + SIGNING + GOVERNANCE + REHEARSAL + SQLITE_ENGINE
    )


def test_validate_with_a_trusted_key_loads_the_signing_library(workspace: Path) -> None:
    """The positive twin of the budget above: the forbidden set is what the command does not
    need, and checking a signature does need cryptography."""
    assert main(["key", "generate", "--out", str(workspace / "keys"), "--name", "k"]) == 0
    run = trace(workspace, "validate", "packet", "--trusted-key", "keys/k.pub")
    assert run.code == 0
    assert "cryptography" in run.parent
    assert_not_loaded(
        run, POSTGRES + MIGRATION_TOOLS + FORMATS + GOVERNANCE + REHEARSAL + SQLITE_ENGINE
    )


def test_a_forbidden_module_is_named_with_its_importers(workspace: Path) -> None:
    """The check can fail: a SQLite rehearsal does load sqlglot, and the failure says who."""
    run = trace(workspace, "fingerprint", "tiny.db")
    with pytest.raises(AssertionError) as info:
        assert_not_loaded(run, ("sqlglot",))
    # The chain ends in the SQLite engine, where the fix would start.
    assert re.search(r"\n  sqlglot\S* <- rollproof\.engines\.sqlite\.", str(info.value))


def test_every_command_is_in_the_lazy_table() -> None:
    """A command a module defines but COMMANDS does not list would be missing from --help's
    fast path: the table and the modules agree."""
    from rollproof.cli.app import cli

    load_all()
    assert sorted(cli.commands) == sorted(COMMANDS)
    for name, module in COMMANDS.items():
        assert cli.commands[name].callback is not None
        assert cli.commands[name].callback.__module__ == f"rollproof.cli.{module}"
