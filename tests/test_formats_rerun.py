"""A format packet re-runs the SQL rehearse-dir ran: its RERUN.sh, run by bash, says MATCH.

change.toml says what the loader did (a section is `lines`, a whole-script BEGIN/COMMIT left
out is `strip_transaction`, a non-transactional marker is `transaction = false`), so
`rollproof rehearse` of the packet's change/ runs the same SQL, not the whole file. Each
migration here is the first pending one, rehearsed at the source itself, so the packet records
a source RERUN.sh can reach. Without the selection the re-run would run a dbmate or goose file's
down section too (after_apply would differ) and sqitch's BEGIN inside rollproof's transaction.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from rollproof.cli import main
from rollproof.core.change import ChangeError, load_change
from rollproof.formats.changes import change_for
from rollproof.formats.detect import load_project
from tests.packet_fixtures import subprocess_env

DATA = Path(__file__).parent / "data" / "formats"


def _source(tmp_path: Path, sql: str = "") -> Path:
    path = tmp_path / "prod" / "prod.db"
    path.parent.mkdir()
    conn = sqlite3.connect(path)
    conn.executescript(sql)
    conn.close()
    return path


def _rerun(packet: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(packet / "RERUN.sh")],
        cwd=cwd,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize(
    ("project", "args", "packet", "selection"),
    [
        (
            DATA / "dbmate" / "accounts",
            ["--to", "20240101120000"],
            "1-20240101120000",
            'apply = { file = "20240101120000_create_accounts.sql", lines = [2, 3] }',
        ),
        (
            DATA / "goose" / "notes",
            [],
            "2-2",
            'apply = { file = "00002_notes_fts.sql", lines = [3, 4] }',
        ),
        (
            DATA / "sqitch" / "flipr",
            ["--from", "users", "--to", "users"],
            "1-users",
            'apply = { file = "deploy/users.sql", strip_transaction = true }',
        ),
    ],
    ids=["dbmate", "goose", "sqitch"],
)
def test_rerun_sh_of_a_format_packet_matches(
    project: Path,
    args: list[str],
    packet: str,
    selection: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup = ""
    if project.name == "notes":  # goose: migration 1 deployed, so 2 is rehearsed at the source
        one = (project / "00001_create_notes.sql").read_text().split("-- +goose Down")[0]
        setup = one.replace("-- +goose Up", "").replace("-- +goose StatementBegin", "")
        setup = setup.replace("-- +goose StatementEnd", "") + (
            "CREATE TABLE goose_db_version (id INTEGER PRIMARY KEY, version_id INTEGER, "
            "is_applied INTEGER, tstamp TEXT);"
            "INSERT INTO goose_db_version (version_id, is_applied) VALUES (0, 1), (1, 1);"
        )
    source = _source(tmp_path, setup)
    out = tmp_path / "packets"
    code = main(["rehearse-dir", str(project), "--source", str(source), "--out", str(out), *args])
    text = capsys.readouterr().out
    assert code == 0, text
    toml = (out / packet / "change" / "change.toml").read_text()
    assert selection in toml
    proc = _rerun(out / packet, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS/MATCH" in proc.stdout
    assert "MISMATCH" not in proc.stdout.replace("PASS/MATCH", "")
    if project.name == "notes":
        assert 'transaction = false\ntransaction_marker = "goose `NO TRANSACTION`' in toml
        report = json.loads((out / packet / "report.json").read_text())
        legs = {leg["name"]: leg for leg in report["legs"]}
        assert legs["transaction"]["verdict"] == "NOT_APPLICABLE"


@pytest.mark.parametrize(
    "fmt", ["dbmate", "goose", "sqitch", "flyway", "golang-migrate", "liquibase"]
)
def test_generated_change_toml_loads_as_the_change_rehearsed(fmt: str, tmp_path: Path) -> None:
    """For every migration of every sample project, load_change of the written change/ gives
    the text, digests and marker change_for rehearsed: the packet's change is the change."""
    directory = next(p for p in (DATA / fmt).iterdir() if p.is_dir())
    project = load_project(directory)
    for i, m in enumerate(project.migrations):
        made = change_for(project, m, reads=["a"], writes=["b"])
        target = tmp_path / f"{fmt}-{i}"
        for rel, body in made.files.items():
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            (target / rel).write_bytes(body)
        loaded = load_change(target)
        for name in ("apply", "revert", "verify"):
            assert getattr(loaded, name) == getattr(made, name), (m.id, name)
        assert loaded.no_transaction == made.no_transaction
        assert loaded.content_id == made.content_id


def _change(tmp_path: Path, toml: str, body: str = "BEGIN;\nSELECT 1;\nCOMMIT;\n") -> Path:
    (tmp_path / "x.sql").write_text(body)
    (tmp_path / "change.toml").write_text(toml)
    return tmp_path


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            'apply = { file = "x.sql", lines = [2, 9] }',
            "apply.lines: file 'x.sql' has no lines 2..9",
        ),
        (
            'apply = { file = "x.sql", lines = [3, 2] }',
            "apply.lines: must be [first, last]: line numbers, 1 <= first <= last",
        ),
        (
            'apply = { file = "x.sql", lines = [2, 2], strip_transaction = true }',
            "apply.strip_transaction: is true but the script is not one BEGIN ... COMMIT",
        ),
        ('apply = { file = "x.sql", section = "up" }', "apply.section: unknown key"),
        ("apply = { lines = [1, 3] }", "apply.file: missing: the file the script is part of"),
        (
            'apply = "x.sql"\ntransaction_marker = "goose"',
            "transaction_marker: is given but transaction is not false",
        ),
        ('apply = "x.sql"\ntransaction = "no"', "transaction: must be true or false"),
    ],
)
def test_bad_selection_is_refused_naming_the_key(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ChangeError) as e:
        load_change(_change(tmp_path, toml))
    assert message in str(e.value)


def test_selection_positive_twin(tmp_path: Path) -> None:
    change = load_change(
        _change(
            tmp_path,
            'apply = { file = "x.sql", lines = [1, 3], strip_transaction = true }\n'
            'transaction = false\ntransaction_marker = "dbmate `transaction:false` (x.sql:1)"\n',
        )
    )
    assert change.apply.text == "      \nSELECT 1;\n       \n"
    assert change.apply.lines == (1, 3)
    assert change.no_transaction == "dbmate `transaction:false` (x.sql:1)"
    whole = load_change(_change(tmp_path, 'apply = "x.sql"\n'))
    assert whole.content_id != change.content_id  # the selection is part of the change
    assert whole.no_transaction is None


USERS = (
    "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);"
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40) "
    "INSERT INTO users SELECT i, 'user' || i FROM n;"
)


def test_kept_position_packet_reruns_and_refuses_a_swapped_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --keep-positions, position 2 (migration 1 applied) is kept as a SQLite file; the
    packet of migration 2 records it as `sqlitedump:PATH#sha256=...` and its RERUN.sh, run by
    bash, re-rehearses from it: PASS/MATCH. Another position's copy in its place: exit 2."""
    source = _source(tmp_path, USERS)
    out, kept = tmp_path / "packets", tmp_path / "positions"
    project = DATA / "golang-migrate" / "profiles"
    args = ["--source", str(source), "--out", str(out), "--keep-positions", str(kept)]
    assert main(["rehearse-dir", str(project), *args]) == 1
    capsys.readouterr()
    assert sorted(p.name for p in kept.iterdir()) == ["position-1.db", "position-2.db"]
    report = json.loads((out / "2-2" / "report.json").read_text())
    first = kept.resolve() / "position-1.db"
    good = hashlib.sha256(first.read_bytes()).hexdigest()
    assert report["source"]["dsn"] == f"sqlitedump:{first}#sha256={good}"
    proc = _rerun(out / "2-2", tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS/MATCH" in proc.stdout
    shutil.copyfile(kept / "position-2.db", first)
    bad = hashlib.sha256(first.read_bytes()).hexdigest()
    proc = _rerun(out / "2-2", tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip() == (
        f"rollproof: source sqlitedump:{first}: the dump's sha256 is {bad}, not the {good} it "
        "must have: it is not the dump named (changed, or another)"
    )
    # Without --keep-positions nothing is kept, and OUT may not hold the positions.
    again = ["--source", str(source), "--out", str(tmp_path / "o2"), "--keep-positions"]
    assert main(["rehearse-dir", str(project), *again, str(tmp_path / "o2" / "k")]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(
            f"--keep-positions {tmp_path / 'o2' / 'k'}: must be outside --out {tmp_path / 'o2'} "
            "(a range packet holds only the packets RANGE.json lists)"
        )
    )
    assert main(["rehearse-dir", str(project), *again, str(kept)]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(f"--keep-positions {kept}: exists and is not an empty directory")
    )
