"""`--scratch ephemeral` for real: rollproof, run as an ordinary user, starts its own private
PostgreSQL cluster (initdb + pg_ctl), clones the source into it, rehearses, and removes it.

initdb refuses to run as root, and the test suite runs as root, so the rollproof under test is
started as the `postgres` user with the distribution's Python 3.11 and a private copy of
rollproof and its dependencies (copied from this interpreter's installed distributions, no
download). Where that user or that Python is missing, the test skips with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.pg_fixtures import (
    MakeSource,
    pg_servers_fixture,  # noqa: F401  (fixture)
    pg_source_fixture,  # noqa: F401  (fixture)
)

SYSTEM_PYTHON = Path("/usr/bin/python3.11")
SOURCE = """
CREATE TABLE items (id serial PRIMARY KEY, label text NOT NULL, qty integer);
INSERT INTO items (label, qty) SELECT 'item ' || i, i FROM generate_series(1, 30) AS i;
"""


def _closure(name: str, seen: set[str]) -> None:
    key = name.lower().replace("_", "-")
    if key in seen:
        return
    seen.add(key)
    for req in metadata.requires(name) or []:
        r = Requirement(req)
        if r.marker is None or r.marker.evaluate({"extra": ""}):
            _closure(r.name, seen)


def _copy_distributions(target: Path) -> None:
    names: set[str] = set()
    _closure("rollproof", names)
    names.discard("rollproof")
    for name in names:
        dist = metadata.distribution(name)
        for file in dist.files or []:
            src = Path(str(dist.locate_file(file)))
            if src.is_file() and ".." not in file.parts:
                dest = target / file
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the postgres user can read (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="rollproof-ephemeral-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_ephemeral_scratch_cluster_as_an_ordinary_user(
    pg_source: MakeSource, shared_dir: Path
) -> None:
    if os.geteuid() != 0 or not shutil.which("runuser") or not SYSTEM_PYTHON.exists():
        pytest.skip("needs root, runuser and the distribution's python3.11 to act as postgres")
    if sys.version_info[:2] != (3, 11):
        pytest.skip("the private copy of the dependencies is built for Python 3.11")
    dsn = pg_source(SOURCE)
    site = shared_dir / "site"
    _copy_distributions(site)
    shutil.copytree(Path(__file__).parent.parent / "src" / "rollproof", site / "rollproof")
    change = shared_dir / "change"
    change.mkdir()
    (change / "change.toml").write_text(
        'apply_sql = "UPDATE items SET qty = 0 WHERE id = 1;"\n'
        'revert_sql = "UPDATE items SET qty = 1 WHERE id = 1;"\n'
        '[surfaces]\nwrites = ["items"]\n'
    )
    out, work = shared_dir / "out", shared_dir / "work"
    work.mkdir()
    for p in (shared_dir, *shared_dir.rglob("*")):
        p.chmod(0o777 if p.is_dir() else 0o644)
    proc = subprocess.run(
        [
            "runuser",
            "-u",
            "postgres",
            "--",
            "env",
            f"PYTHONPATH={site}",
            f"HOME={shared_dir}",
            f"TMPDIR={work}",
            str(SYSTEM_PYTHON),
            "-m",
            "rollproof",
            "rehearse",
            str(change),
            "--source",
            dsn,
            "--scratch",
            "ephemeral",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=shared_dir,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["overall"] == "PASS"
    assert report["source"]["scratch"] == "ephemeral"
    checks = {c["name"]: c["holds"] for c in report["isolation"]["checks"]}
    assert checks["scratch-server-distinct"] is True
    # the private cluster was stopped and its directory removed
    assert list(work.iterdir()) == []
