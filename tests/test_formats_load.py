"""Loaders for the migrations users already have (rollproof.formats): order, scripts, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rollproof.core.errors import ExitCode
from rollproof.formats.changes import change_for, range_change
from rollproof.formats.detect import detect, load_project
from rollproof.formats.flyway import version_key
from rollproof.formats.model import FormatError
from rollproof.formats.scripts import strip_bracket

DATA = Path(__file__).parent / "data" / "formats"


@pytest.mark.parametrize(
    ("project", "fmt"),
    [
        ("sqitch/flipr", "sqitch"),
        ("flyway/shop", "flyway"),
        ("golang-migrate/profiles", "golang-migrate"),
        ("dbmate/accounts", "dbmate"),
        ("goose/notes", "goose"),
    ],
)
def test_detects_each_tool(project: str, fmt: str) -> None:
    assert detect(DATA / project) == fmt
    assert load_project(DATA / project).format == fmt


def test_sqitch_rework_requires_and_self_bracketing() -> None:
    p = load_project(DATA / "sqitch" / "flipr")
    assert [m.id for m in p.migrations] == ["users", "flips@v1.0", "flips"]
    assert p.engine == "sqlite"
    users, old_flips, flips = p.migrations
    assert old_flips.apply.path == "deploy/flips@v1.0.sql"
    assert old_flips.revert is not None
    assert old_flips.revert.path == "revert/flips@v1.0.sql"
    assert flips.apply.path == "deploy/flips.sql"
    assert flips.requires == ("flips@v1.0",)
    assert flips.conflicts == ("legacy_flips",)
    assert old_flips.requires == ("users",)
    # The whole-script BEGIN ... COMMIT is left out (rollproof runs it in its own transaction),
    # the line numbers kept, and the change says so.
    assert "BEGIN" not in users.apply.text
    assert "COMMIT" not in users.apply.text
    assert "CREATE TABLE users" in users.apply.text
    raw = (DATA / "sqitch/flipr/deploy/users.sql").read_text()
    assert users.apply.text.count("\n") == raw.count("\n")
    assert any("BEGIN ... COMMIT is left out" in n for n in users.notes)
    assert users.verify is not None
    assert "WHERE 0" in users.verify.text
    # The change holds the original files' bytes under their relative paths, and a
    # change.toml naming them.
    change = change_for(p, old_flips, reads=["users"], writes=["flips"])
    assert change.id == "flips-at-v1.0"
    assert (
        change.files["deploy/flips@v1.0.sql"]
        == (DATA / "sqitch/flipr/deploy/flips@v1.0.sql").read_bytes()
    )
    toml = change.files["change.toml"].decode()
    assert 'apply = { file = "deploy/flips@v1.0.sql", strip_transaction = true }' in toml
    assert "BEGIN ... COMMIT is left out" in toml


def test_strip_bracket_only_whole_script() -> None:
    assert strip_bracket("BEGIN;\nCREATE TABLE t (a);\nCOMMIT;\n") is not None
    assert strip_bracket("CREATE TABLE t (a);\n") is None
    assert strip_bracket("BEGIN;\nCREATE TABLE t (a);\n") is None  # no COMMIT: not a bracket
    assert strip_bracket("BEGIN;\nCREATE TABLE t (a);\nCOMMIT;\nINSERT INTO t VALUES (1);") is None
    assert strip_bracket("BEGIN;\nSELECT 1;\nCOMMIT;\nBEGIN;\nSELECT 2;\nCOMMIT;") is None
    trigger = "BEGIN;\nCREATE TRIGGER x AFTER INSERT ON t BEGIN UPDATE t SET a = 1; END;\nCOMMIT;\n"
    stripped = strip_bracket(trigger)
    assert stripped is not None
    assert "BEGIN UPDATE" in stripped
    assert "END;" in stripped


def test_sqitch_errors_name_file_and_line(tmp_path: Path) -> None:
    project = tmp_path / "p"
    shutil.copytree(DATA / "sqitch" / "flipr", project)
    plan = project / "sqitch.plan"
    text = plan.read_text()
    plan.write_text(text.replace("@v1.0 2024-01-04T10:00:00Z", "# no tag\n#"))
    with pytest.raises(FormatError, match=r"sqitch\.plan:\d+: change 'flips' is planned again"):
        load_project(project)
    plan.write_text(text.replace("flips [users]", "flips [nobody]"))
    with pytest.raises(FormatError, match=r"sqitch\.plan:6: .*requires 'nobody'") as e:
        load_project(project)
    assert e.value.exit_code is ExitCode.USAGE
    plan.write_text(text + "broken line without a date\n")
    with pytest.raises(FormatError, match=r"sqitch\.plan:10: not a change line"):
        load_project(project)
    plan.write_text(text)
    (project / "deploy" / "users.sql").unlink()
    with pytest.raises(FormatError, match=r"sqitch\.plan:5: .*no deploy script deploy/users.sql"):
        load_project(project)


def test_sqitch_conf_dirs(tmp_path: Path) -> None:
    project = tmp_path / "p"
    shutil.copytree(DATA / "sqitch" / "flipr", project / "db")
    (project / "db" / "sqitch.conf").unlink()
    (project / "sqitch.conf").write_text("[core]\n\tengine = sqlite\n\ttop_dir = db\n")
    p = load_project(project)
    assert next(m.apply.path for m in p.migrations) == "db/deploy/users.sql"


def test_flyway_versions_undo_and_repeatable() -> None:
    assert version_key("1.10") > version_key("1.9")
    assert version_key("1.0") == version_key("1") == version_key("1_0")
    p = load_project(DATA / "flyway" / "shop")
    assert [m.id for m in p.migrations] == ["1", "1.9", "1.10", "R__item_view"]
    v1, v19, v110, rep = p.migrations
    assert v1.revert is not None
    assert v1.revert.path == "U1__create_items.sql"
    assert v19.reversible
    assert not v110.reversible
    assert "U1.10__index_sku.sql" in v110.why_not_reversible()
    assert not rep.reversible
    assert "repeatable" in rep.why_not_reversible()


def test_flyway_errors(tmp_path: Path) -> None:
    d = tmp_path / "sql"
    shutil.copytree(DATA / "flyway" / "shop", d)
    (d / "V1.0__again.sql").write_text("SELECT 1;")
    with pytest.raises(FormatError, match=r"version 1 is also V1(__create_items|\.0__again)\.sql"):
        load_project(d, "flyway")
    (d / "V1.0__again.sql").unlink()
    (d / "U7__nothing.sql").write_text("SELECT 1;")
    with pytest.raises(FormatError, match=r"U7__nothing\.sql: an undo migration with no V"):
        load_project(d, "flyway")


def test_golang_migrate() -> None:
    p = load_project(DATA / "golang-migrate" / "profiles")
    assert [(m.id, m.apply.path, m.revert.path if m.revert else None) for m in p.migrations] == [
        ("1", "1_create_profiles.up.sql", "1_create_profiles.down.sql"),
        ("2", "2_drop_profile_bio.up.sql", "2_drop_profile_bio.down.sql"),
        ("3", "3_index_user_names.up.sql", "3_index_user_names.down.sql"),
    ]


def test_goose_sections_statement_blocks_and_no_transaction() -> None:
    p = load_project(DATA / "goose" / "notes")
    first, second = p.migrations
    assert "CREATE TRIGGER notes_touch" in first.apply.text
    assert "DROP TABLE notes" not in first.apply.text
    assert first.revert is not None
    assert "DROP TABLE notes" in first.revert.text
    assert first.revert.line == 12
    assert first.apply.path == first.revert.path
    assert first.no_transaction is None
    assert second.no_transaction == "goose `NO TRANSACTION` (00002_notes_fts.sql:1)"
    change = change_for(p, first)
    assert set(change.files) == {"00001_create_notes.sql", "change.toml"}


def test_goose_errors(tmp_path: Path) -> None:
    (tmp_path / "1_a.sql").write_text(
        "-- +goose Up\n-- +goose StatementBegin\nCREATE TABLE a (x);\n-- +goose Down\n"
    )
    with pytest.raises(FormatError, match=r"1_a\.sql:2: StatementBegin without StatementEnd"):
        load_project(tmp_path, "goose")
    (tmp_path / "1_a.sql").write_text("CREATE TABLE a (x);\n-- +goose Up\nSELECT 1;\n")
    with pytest.raises(FormatError, match=r"1_a\.sql:1: SQL before the `-- \+goose Up` line"):
        load_project(tmp_path, "goose")


def test_dbmate_sections_and_transaction_false(tmp_path: Path) -> None:
    p = load_project(DATA / "dbmate" / "accounts")
    assert [m.id for m in p.migrations] == ["20240101120000", "20240102120000", "20240103120000"]
    create, index, seed = p.migrations
    assert create.reversible
    assert create.no_transaction is None
    assert index.no_transaction == (
        "dbmate `transaction:false` (20240102120000_email_lower_index.sql:1)"
    )
    assert not seed.reversible  # an empty `-- migrate:down`
    (tmp_path / "1_x.sql").write_text("-- migrate:up\nSELECT 1;\n-- migrate:up\nSELECT 2;\n")
    with pytest.raises(FormatError, match=r"1_x\.sql:3: a second `-- migrate:up` section"):
        load_project(tmp_path, "dbmate")


def test_detect_refuses_to_guess(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="no migrations of a known tool"):
        load_project(tmp_path)
    (tmp_path / "1_a.up.sql").write_text("SELECT 1;")
    (tmp_path / "V2__b.sql").write_text("SELECT 1;")
    with pytest.raises(FormatError, match="flyway and golang-migrate: give --format"):
        load_project(tmp_path)


def test_range_change_is_inline() -> None:
    p = load_project(DATA / "golang-migrate" / "profiles")
    change = range_change(p, p.migrations)
    assert set(change.files) == {"change.toml"}
    assert change.revert is not None
    assert change.revert.text.index("DROP INDEX") < change.revert.text.index("DROP TABLE")
