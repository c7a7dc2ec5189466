"""Surfaces at run time: scoping before the legs, the engine's authorizer, observed scope, and
forbidden surfaces proven untouched (or caught TOUCHED)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

import pytest

from rollproof.core.errors import ExitCode, ScopeNotReadyError
from rollproof.core.model import LegName, Verdict
from rollproof.core.policy import Policy, PolicyError, ReadMode, load_policy
from rollproof.engines.sqlite.fingerprint import table_digest
from rollproof.engines.sqlite.source import connect_read_only, fingerprint_file
from rollproof.surfaces.forbidden import child_environment
from rollproof.surfaces.scope import ForbiddenStatus, changed_objects, observed_undeclared
from tests.conftest import MakeChange
from tests.conftest import rehearse_checked as rehearse


def policy_file(tmp_path: Path, body: str) -> Policy:
    path = tmp_path / "rollproof.toml"
    path.write_text(body)
    return load_policy(path)


def test_undeclared_write_is_refused_before_any_leg(
    source_db: Path, make_change: MakeChange
) -> None:
    change = make_change(
        "INSERT INTO tags VALUES ('u', 1);\nUPDATE customers SET name = 'x' WHERE id = 1;",
        "DELETE FROM tags WHERE label = 'u';",
        surfaces='writes = ["tags"]\n',
    )
    with pytest.raises(ScopeNotReadyError) as info:
        rehearse(change, str(source_db))
    assert info.value.exit_code == 3
    assert info.value.problems == [
        "apply statement 2 `UPDATE customers SET name = 'x' WHERE id = 1`: write of undeclared "
        "customers (add it to surfaces.writes)"
    ]


def test_undeclared_write_is_stopped_by_the_engine(
    source_db: Path, make_change: MakeChange, tmp_path: Path
) -> None:
    change = make_change(
        "INSERT INTO tags VALUES ('u', 1);\nUPDATE customers SET name = 'x' WHERE id = 1;",
        "DELETE FROM tags WHERE label = 'u';",
        surfaces='writes = ["tags"]\n',
    )
    result = rehearse(
        change,
        str(source_db),
        legs=[LegName.REVERT],
        allow_undeclared=True,
        workdir=tmp_path / "w",
        keep_clone=True,
    )
    [leg] = result.legs
    assert leg.verdict is Verdict.FAIL
    assert leg.reason == (
        "apply failed: statement 2 `UPDATE customers SET name = 'x' WHERE id = 1;` was denied: "
        "write of undeclared object customers"
    )
    assert result.overall is Verdict.FAIL
    assert result.surfaces.allow_undeclared is True
    [event] = [e for e in result.surfaces.events if e.decision == "denied"]
    assert (event.script, event.statement, event.object) == ("apply", 2, "customers")
    # The denied write never reached the table: its bytes in the clone are the source's.
    assert result.clone_kept is not None
    with contextlib.closing(connect_read_only(result.clone_kept / "clone.db")) as conn:
        assert table_digest(conn, "customers") == result.source_fingerprint.tables["customers"]
        assert conn.execute("SELECT count(*) FROM tags WHERE label = 'u'").fetchone() == (1,)


def _db(path: Path, script: str) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(script)
    conn.commit()
    conn.close()
    return path


def test_trigger_write_to_undeclared_table_is_denied(
    tmp_path: Path, make_change: MakeChange
) -> None:
    src = _db(
        tmp_path / "trg.db",
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, status TEXT);"
        "CREATE TABLE audit (what TEXT);"
        "CREATE TRIGGER trg_audit AFTER UPDATE ON orders BEGIN"
        " INSERT INTO audit VALUES (NEW.status); END;"
        "INSERT INTO orders VALUES (1, 'new');",
    )
    change = make_change(
        "UPDATE orders SET status = 'paid' WHERE id = 1;",
        "UPDATE orders SET status = 'new' WHERE id = 1;",
        surfaces='writes = ["orders"]\n',
    )
    [leg] = rehearse(change, str(src), legs=[LegName.TRANSACTION]).legs
    assert leg.verdict is Verdict.FAIL
    assert leg.reason == (
        "apply failed: statement 1 `UPDATE orders SET status = 'paid' WHERE id = 1;` was denied: "
        "write of undeclared object audit (via trg_audit)"
    )


def test_foreign_key_cascade_to_undeclared_table_is_denied(
    tmp_path: Path, make_change: MakeChange
) -> None:
    src = _db(
        tmp_path / "fk.db",
        "CREATE TABLE parent (id INTEGER PRIMARY KEY);"
        "CREATE TABLE child (id INTEGER PRIMARY KEY,"
        " parent_id INTEGER REFERENCES parent(id) ON DELETE CASCADE);"
        "INSERT INTO parent VALUES (1); INSERT INTO child VALUES (5, 1);",
    )
    change = make_change(
        "DELETE FROM parent WHERE id = 1;",
        "INSERT INTO parent VALUES (1);",
        extra="[connection]\nforeign_keys = true\n",
        surfaces='writes = ["parent"]\n',
    )
    result = rehearse(change, str(src), legs=[LegName.REVERT])
    [leg] = result.legs
    assert leg.verdict is Verdict.FAIL
    # The foreign-key check's read of child is covered by parent (it references it); the
    # cascade's write into child is a write, and needs declaring.
    assert leg.reason == (
        "apply failed: statement 1 `DELETE FROM parent WHERE id = 1;` was denied: "
        "write of undeclared object child"
    )
    assert result.exit_code == ExitCode.HELD
    assert [(i.object, i.owner) for i in result.surfaces.implicit] == [("child", "parent")]


@pytest.mark.parametrize(
    ("mode", "verdict"),
    [
        pytest.param("deny", Verdict.FAIL, id="deny"),
        pytest.param("report", Verdict.PASS, id="report"),
    ],
)
def test_undeclared_reads_are_denied_or_reported(
    source_db: Path, make_change: MakeChange, tmp_path: Path, mode: str, verdict: Verdict
) -> None:
    # The subquery's read of customers is invisible to nobody: sqlglot sees it too, so the
    # change is rehearsed with --allow-undeclared to reach the engine's enforcement.
    change = make_change(
        "INSERT INTO tags SELECT name, id FROM customers WHERE id = 1;",
        "DELETE FROM tags WHERE label = 'c0';",
        surfaces='writes = ["tags"]\n',
    )
    policy = policy_file(tmp_path, f'[enforcement]\nundeclared_reads = "{mode}"\n')
    result = rehearse(
        change, str(source_db), legs=[LegName.REVERT], policy=policy, allow_undeclared=True
    )
    assert result.legs[0].verdict is verdict
    assert [(e.object, str(e.decision)) for e in result.surfaces.events] == [
        ("customers", "denied" if mode == "deny" else "reported")
    ]
    assert result.overall is verdict


def test_forbidden_object_is_denied_even_for_reads(
    source_db: Path, make_change: MakeChange, tmp_path: Path
) -> None:
    policy = policy_file(tmp_path, '[forbidden]\nobjects = ["tag*"]\n')
    change = make_change(
        "INSERT INTO orders (customer_id, status) SELECT 1, label FROM tags;",
        "DELETE FROM orders WHERE id > 500;",
    )
    result = rehearse(change, str(source_db), legs=[LegName.REVERT], policy=policy)
    assert result.legs[0].verdict is Verdict.FAIL
    assert result.legs[0].reason is not None
    assert result.legs[0].reason.endswith("was denied: read of forbidden object tags")
    [surface] = result.surfaces.forbidden
    assert (surface.kind, surface.name, surface.status) == (
        "object",
        "tag*",
        ForbiddenStatus.UNTOUCHED,
    )
    assert surface.evidence.startswith("denied at apply statement 1: read of forbidden object tags")


def test_forbidden_file_modified_during_the_rehearsal_is_touched(
    source_db: Path, make_change: MakeChange, tmp_path: Path
) -> None:
    ci = tmp_path / ".ci"
    ci.mkdir()
    (ci / "deploy.yml").write_text("deploy: never\n")
    policy = policy_file(tmp_path, '[forbidden]\nfiles = [".ci/*.yml"]\n')

    def side_effect(message: str) -> None:  # something writes the CI config mid-rehearsal
        if message.startswith("leg 1/"):
            (ci / "deploy.yml").write_text("deploy: now\n")

    change = make_change("INSERT INTO tags VALUES ('f', 1);", "DELETE FROM tags WHERE label = 'f';")
    result = rehearse(
        change, str(source_db), legs=[LegName.REVERT], policy=policy, progress=side_effect
    )
    assert result.legs[0].verdict is Verdict.PASS
    [surface] = result.surfaces.forbidden
    assert (surface.kind, surface.status, surface.evidence) == (
        "file",
        ForbiddenStatus.TOUCHED,
        ".ci/deploy.yml (modified)",
    )
    assert result.surfaces.forbidden_line() == "Forbidden surfaces 0/1 untouched/not-requested"
    assert result.overall is Verdict.FAIL


def test_clean_change_leaves_every_forbidden_surface_untouched_or_not_requested(
    source_db: Path, make_change: MakeChange, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "run.sh").write_text("echo deploy\n")
    other = _db(tmp_path / "billing.db", "CREATE TABLE invoices (id INTEGER PRIMARY KEY);")
    monkeypatch.setenv("PROD_DB_PASSWORD", "hunter2")
    policy = policy_file(
        tmp_path,
        "[production]\n"
        f'sources = ["sqlite:///{source_db}", "sqlite:///billing.db"]\n'
        "[forbidden]\n"
        'objects = ["payments", "orders"]\n'
        'files = ["deploy/*.sh", "prod/prod.db"]\n'
        'env = ["PROD_DB_PASSWORD", "AWS_SECRET_ACCESS_KEY"]\n',
    )
    change = make_change(
        "INSERT INTO tags VALUES ('ok', 1);", "DELETE FROM tags WHERE label = 'ok';"
    )
    result = rehearse(change, str(source_db), policy=policy)
    assert result.overall is Verdict.PASS
    statuses = [(f.kind, f.name, str(f.status)) for f in result.surfaces.forbidden]
    assert statuses == [
        ("object", "payments", "not-requested"),
        ("object", "orders", "not-requested"),
        ("file", "deploy/*.sh", "untouched"),
        ("file", "prod/prod.db", "untouched"),
        ("env", "PROD_DB_PASSWORD", "not-requested"),
        ("env", "AWS_SECRET_ACCESS_KEY", "not-requested"),
        ("production-source", f"sqlite:///{source_db}", "untouched"),
        ("production-source", "sqlite:///billing.db", "not-requested"),
    ]
    assert result.surfaces.forbidden_line() == "Forbidden surfaces 8/8 untouched/not-requested"
    prod = result.surfaces.forbidden[6]
    assert prod.evidence == ("source-opened-read-only: 1 connection(s) to the source, all mode=ro")
    assert result.surfaces.forbidden[0].evidence == "no object matches; never requested"
    assert result.surfaces.forbidden[1].evidence.startswith(
        "never requested; digests unchanged: orders"
    )
    assert "PROD_DB_PASSWORD" not in child_environment(policy)
    assert child_environment(policy)["PATH"] == os.environ["PATH"]
    assert other.exists()


def test_unparseable_statement_makes_scoping_unknown(
    source_db: Path, make_change: MakeChange
) -> None:
    change = make_change(
        "CREATE VIRTUAL TABLE ft USING fts5(a);",
        "DROP TABLE ft;",
        surfaces='writes = ["ft"]\n',
    )
    with pytest.raises(ScopeNotReadyError) as info:
        rehearse(change, str(source_db))
    assert info.value.status == "UNKNOWN"
    [problem] = info.value.problems
    assert problem.startswith(
        "apply statement 1 `CREATE VIRTUAL TABLE ft USING fts5(a)`: scope unknown: "
    )


def test_observed_scope_catches_an_undeclared_change_from_the_bytes(tmp_path: Path) -> None:
    a = _db(tmp_path / "a.db", "CREATE TABLE t (x); CREATE TABLE u (y); INSERT INTO u VALUES (1);")
    b = _db(
        tmp_path / "b.db",
        "CREATE TABLE t (x); CREATE TABLE u (y); INSERT INTO u VALUES (2);CREATE INDEX ix ON t(x);",
    )
    changed = changed_objects(fingerprint_file(a), fingerprint_file(b))
    assert changed == {"u", "ix"}
    assert observed_undeclared(changed, ["U"]) == ["ix"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            "[forbiden]\nobjects = []\n", "forbiden: unknown section", id="misspelt-section"
        ),
        pytest.param(
            "[forbidden]\ntables = []\n", "forbidden.tables: unknown key", id="unknown-key"
        ),
        pytest.param(
            '[forbidden]\nfiles = "x"\n',
            "forbidden.files: must be a list of non-empty strings",
            id="not-a-list",
        ),
        pytest.param(
            '[enforcement]\nundeclared_reads = "allow"\n',
            'enforcement.undeclared_reads: must be "deny" or "report"',
            id="bad-mode",
        ),
    ],
)
def test_bad_policy_is_refused(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        policy_file(tmp_path, body)
    assert str(info.value) == f"{tmp_path / 'rollproof.toml'}: {message}"
    assert info.value.exit_code == 2


def test_policy_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_policy().path is None
    (tmp_path / "rollproof.toml").write_text('[forbidden]\nobjects = ["x"]\n')
    loaded = load_policy()
    assert loaded.forbidden_objects == ("x",)
    assert loaded.undeclared_reads is ReadMode.DENY
    assert loaded.path == tmp_path / "rollproof.toml"
