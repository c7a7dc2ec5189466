"""Alembic projects: revisions rendered offline by Alembic itself, rehearsed one at a time, and
what a source has deployed read from `alembic_version`, compared with what Alembic reports.

`tests/data/formats/alembic/library`: 0001 creates `authors` with 30 nicknames; two branches
grow from it: 0002 drops `authors.nickname` (its downgrade adds the column back empty, so the
nicknames are lost) and 0003 (branch label `reports`) adds a `reports` table.

Alembic comes from PyPI (the dev extra); without it these tests skip, except in CI where a
missing Alembic fails them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from rollproof.cli import main
from rollproof.core.errors import ExitCode
from rollproof.formats.detect import detect, load_project
from rollproof.formats.model import FormatError
from rollproof.verify.reader import validate_packet

LIBRARY = Path(__file__).parent / "data" / "formats" / "alembic" / "library"
VERSIONS = LIBRARY / "migrations" / "versions"


@pytest.fixture(autouse=True)
def _alembic_installed() -> None:
    if importlib.util.find_spec("alembic") is None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("Alembic is not installed in CI: pip install -e '.[dev]'")
        pytest.skip("Alembic is not installed (pip install -e '.[dev]')")


def alembic(cwd: Path, *args: str, ini: Path = LIBRARY / "alembic.ini") -> str:
    """The real `alembic` command, run in `cwd` (the ini's sqlalchemy.url is relative)."""
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ini), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return done.stdout


def test_revisions_render_offline_in_alembic_order() -> None:
    assert detect(LIBRARY) == "alembic"
    assert detect(LIBRARY / "migrations") == "alembic"  # the script directory itself
    p = load_project(LIBRARY)
    assert p.bookkeeping == "alembic_version"
    # The order `alembic upgrade heads` runs them from base: 0001, then its two branches.
    assert [m.id for m in p.migrations] == ["0001", "0003", "0002"]
    first, reports, drop = p.migrations
    assert drop.requires == ("0001",)
    assert reports.name == "create reports"
    assert drop.apply.text == "ALTER TABLE authors DROP COLUMN nickname;\n"
    assert drop.revert is not None
    assert drop.revert.text == "ALTER TABLE authors ADD COLUMN nickname TEXT;\n"
    assert first.apply.text.count("INSERT INTO authors") == 30
    # Alembic's own bookkeeping is not part of what a revision rehearses.
    assert "alembic_version" not in first.apply.text
    assert first.revert is not None
    assert "alembic_version" not in first.revert.text
    assert set(drop.files) == {
        "rollproof-alembic/0002.upgrade.sql",
        "rollproof-alembic/0002.downgrade.sql",
    }
    source_sha = hashlib.sha256((VERSIONS / "0002_drop_author_nickname.py").read_bytes())
    assert drop.notes == (
        "rendered offline by Alembic 1.20.1 for sqlite from "
        f"migrations/versions/0002_drop_author_nickname.py (sha256 {source_sha.hexdigest()}; "
        "upgrade() line 18, downgrade() line 22)",
    )


def test_rehearse_dir_finds_the_lossy_downgrade(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "prod" / "library.db"
    source.parent.mkdir()
    sqlite3.connect(source).close()
    out = tmp_path / "packets"
    code = main(["rehearse-dir", str(LIBRARY), "--source", str(source), "--out", str(out)])
    lines = [ln for ln in capsys.readouterr().out.splitlines() if not ln.startswith(" ")]
    assert code == 1
    assert [ln.split()[0] for ln in lines[:4]] == ["PASS", "PASS", "FAIL", "PASS"]
    assert lines[2].startswith("FAIL    exit 1  3-0002 (drop author nickname): revert: ")
    assert (
        "table authors: 30 rows differ; nickname: 30 values lost (set before, NULL now)"
        in (lines[2])
    )
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "1-0001",
        "2-0003",
        "3-0002",
        "range-0001-to-0002",
    ]
    for packet in (d for d in out.iterdir() if d.is_dir()):
        validate_packet(packet)
    copy = out / "3-0002" / "change"
    assert (copy / "rollproof-alembic" / "0002.upgrade.sql").read_text() == (
        "ALTER TABLE authors DROP COLUMN nickname;\n"
    )
    assert "migrations/versions/0002_drop_author_nickname.py" in (
        (copy / "change.toml").read_text()
    )


def test_pending_from_alembic_version_matches_alembic(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real Alembic deploys the `reports` branch (0001, 0003) online into the source; then
    `alembic upgrade <current>:heads --sql` says what it would run next, and rollproof's plan,
    read from alembic_version, must name the same revisions pending."""
    prod = tmp_path / "prod"
    prod.mkdir()
    alembic(prod, "upgrade", "0003")
    source = prod / "library.db"
    current = alembic(prod, "current").split()[0]
    assert current == "0003"
    offline = alembic(prod, "upgrade", f"{current}:heads", "--sql")
    alembic_pending = re.findall(r"^-- Running upgrade \S+ -> (\S+)$", offline, re.M)
    assert alembic_pending == ["0002"]
    assert main(["plan", str(LIBRARY), "--source", str(source), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    pending = [m["id"] for m in doc["migrations"] if m["state"] == "pending"]
    assert pending == alembic_pending
    assert [m["id"] for m in doc["migrations"] if m["state"] == "deployed"] == ["0001", "0003"]
    # rehearse-dir starts at the first pending revision; the source keeps its bytes.
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    out = tmp_path / "packets"
    assert main(["rehearse-dir", str(LIBRARY), "--source", str(source), "--out", str(out)]) == 1
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["3-0002", "range-0002-to-0002"]
    assert hashlib.sha256(source.read_bytes()).hexdigest() == before
    capsys.readouterr()
    # A head Alembic cannot locate is refused, as Alembic refuses it.
    conn = sqlite3.connect(source)
    conn.execute("UPDATE alembic_version SET version_num = 'ffff'")
    conn.commit()
    conn.close()
    assert main(["plan", str(LIBRARY), "--source", str(source)]) == ExitCode.USAGE
    assert (
        f"source {source}: alembic_version names revision 'ffff', which is not in the script "
        "directory (migrations): Alembic cannot locate it either"
    ) in capsys.readouterr().err


def copy_project(tmp_path: Path) -> Path:
    project = tmp_path / "library"
    shutil.copytree(LIBRARY, project)
    return project


REVISION = '''"""{doc}"""

import sqlalchemy as sa
from alembic import op

revision = "{rev}"
down_revision = {down}
branch_labels = None
depends_on = None


def upgrade() -> None:
{upgrade}


def downgrade() -> None:
{downgrade}
'''


def add_revision(project: Path, rev: str, down: str, upgrade: str, downgrade: str) -> Path:
    path = project / "migrations" / "versions" / f"{rev}_x.py"
    path.write_text(
        REVISION.format(doc=rev, rev=rev, down=down, upgrade=upgrade, downgrade=downgrade)
    )
    return path


def test_a_revision_that_reads_the_database_in_python_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = copy_project(tmp_path)
    path = add_revision(
        project,
        "0004",
        '"0002"',
        "    bind = op.get_bind()\n"
        "    for (name,) in bind.execute(sa.text('SELECT name FROM authors')):\n"
        "        op.execute(f\"UPDATE authors SET name = '{name.title()}'\")",
        "    pass",
    )
    with pytest.raises(FormatError) as e:
        load_project(project)
    assert str(e.value) == (
        f"{path}:13: it uses op.get_bind(): a migration that reads the database from Python "
        "cannot be rendered as SQL offline, and rollproof rehearses the SQL Alembic renders "
        "(docs/formats.md)"
    )
    source = tmp_path / "prod.db"
    sqlite3.connect(source).close()
    assert main(["rehearse-dir", str(project), "--source", str(source)]) == ExitCode.USAGE
    assert "it uses op.get_bind()" in capsys.readouterr().err


def test_errors_in_the_projects_code_name_file_and_line(tmp_path: Path) -> None:
    project = copy_project(tmp_path)
    path = add_revision(project, "0004", '"0002"', "    op.drop_table(missing_name)", "    pass")
    with pytest.raises(FormatError) as e:
        load_project(project)
    assert str(e.value) == f"{path}:13: NameError: name 'missing_name' is not defined"


def test_a_merge_revision_changes_nothing_and_says_so(tmp_path: Path) -> None:
    project = copy_project(tmp_path)
    add_revision(project, "0004", '("0002", "0003")', "    pass", "    pass")
    p = load_project(project)
    merge = p.migrations[-1]
    assert merge.id == "0004"
    assert merge.requires == ("0002", "0003")
    assert merge.no_mutation
    assert not merge.reversible
    assert merge.why_not_reversible() == (
        "its upgrade() and downgrade() (migrations/versions/0004_x.py) render no SQL: "
        "nothing to undo"
    )


def test_without_alembic_installed_rehearse_dir_exits_2(tmp_path: Path) -> None:
    """A real `rollproof` process in which Alembic cannot be imported."""
    source = tmp_path / "prod.db"
    sqlite3.connect(source).close()
    code = (
        "import sys; sys.modules['alembic'] = None; from rollproof.cli import main; "
        f"sys.exit(main(['rehearse-dir', {str(LIBRARY)!r}, '--source', {str(source)!r}]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 2
    assert done.stderr.strip().endswith(
        "this is an Alembic project, and Alembic is not installed with rollproof: "
        "install rollproof[alembic]"
    )
    assert "Traceback" not in done.stderr
