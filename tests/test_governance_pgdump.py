"""A pg_dump archive through the governed path (issue 17): the production-shaped-clone lane
rehearsed from an operator's dump, its grant bound to the dump's sha256.

Real keys and ledger, a real PostgreSQL source and scratch server (tests.pg_fixtures), real
`pg_dump -Fc` archives, the real command line in-process.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from rollproof.cli import main
from rollproof.governance import fold_ledger, read_verified
from tests.pg_fixtures import (
    MakeSource,
    Servers,
    pg_servers_fixture,  # noqa: F401  (fixture)
    pg_source_fixture,  # noqa: F401  (fixture)
)
from tests.test_dump_sources import _pg_dump

SCHEMA = (
    "CREATE TABLE items (id serial PRIMARY KEY, label text NOT NULL);\n"
    "INSERT INTO items (label) SELECT 'item ' || i FROM generate_series(1, {rows}) AS i;\n"
)
CHANGE = {
    "change.toml": (
        'id = "add-item-note"\napply = "apply.sql"\nrevert = "revert.sql"\n\n'
        '[surfaces]\nreads = []\nwrites = ["items"]\n'
    ),
    "apply.sql": "ALTER TABLE items ADD COLUMN note text;\nUPDATE items SET note = 'x';\n",
    "revert.sql": "ALTER TABLE items DROP COLUMN note;\n",
}


def test_a_pg_dump_is_rehearsed_in_the_production_shaped_lane_bound_to_its_sha256(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    pg_servers: Servers,
    pg_source: MakeSource,
) -> None:
    monkeypatch.chdir(tmp_path)

    def run(*argv: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main(list(argv))
        return code, capsys.readouterr().err

    def ok(*argv: str) -> None:
        code, err = run(*argv)
        assert code == 0, err

    production = pg_source(SCHEMA.format(rows=300))
    elsewhere = pg_source(SCHEMA.format(rows=299))
    for name in ("alice", "bob", "executor"):
        ok("key", "generate", "--out", "keys", "--name", name)
    ok(
        "init", "--executor-key", "keys/executor.pub", "--operator", "alice=keys/alice.pub",
        "--operator", "bob=keys/bob.pub", "--production", production,
        "--ci-trigger", ".ci/deploy.sh",
    )  # fmt: skip
    change = tmp_path / "changes" / "add-item-note"
    change.mkdir(parents=True)
    for name, text in CHANGE.items():
        (change / name).write_text(text)
    # One rollback leg each keeps the test short; the lanes need a PASS, not every leg.
    scratch = ("--scratch", pg_servers.scratch, "--legs", "transaction")
    issue = ("grant", "issue", "--change", "changes/add-item-note", "--expires", "1h",
             "--key", "keys/alice.key")  # fmt: skip

    ok(*issue, "--lane", "rehearsal-clone", "--source", production, "--out", "g/clone.grant")
    ok("rehearse", "changes/add-item-note", "--source", production, *scratch,
       "--grant", "g/clone.grant", "--out", "packets/clone")  # fmt: skip

    dump = _pg_dump(production, tmp_path / "prod.dump", "custom")
    digest = hashlib.sha256(dump.read_bytes()).hexdigest()
    other = _pg_dump(elsewhere, tmp_path / "other.dump", "custom")
    other_digest = hashlib.sha256(other.read_bytes()).hexdigest()
    ok(*issue, "--lane", "production-shaped-clone", "--source", f"pgdump:{dump}",
       "--evidence", "packets/clone", "--out", "g/shaped.grant")  # fmt: skip
    lane = ("--lane", "production-shaped-clone", "--grant", "g/shaped.grant", *scratch)

    # Another dump (another sha256) is refused before any leg runs, on the record.
    code, err = run("rehearse", "changes/add-item-note", "--source", f"pgdump:{other}", *lane)
    assert code == 3
    assert err.strip().splitlines() == [
        f"rollproof: grant refused (wrong-source): grant is for the dump with sha256 "
        f"{digest[:16]}…, not this one ({other_digest[:16]}…): another dump, or it changed "
        "since the grant was issued"
    ]
    last = read_verified(tmp_path / ".rollproof" / "ledger.db").events[-1]
    assert (str(last.kind), json.loads(last.body)["reason"]) == ("grant.refused", "wrong-source")

    # The positive twin: the dump the grant names, end to end.
    ok("rehearse", "changes/add-item-note", "--source", f"pgdump:{dump}", *lane,
       "--out", "packets/shaped")  # fmt: skip
    state = fold_ledger(tmp_path / ".rollproof" / "ledger.db")
    assert [(r.lane, str(r.overall)) for r in state.rehearsals.values()] == [
        ("rehearsal-clone", "PASS"),
        ("production-shaped-clone", "PASS"),
    ]
    report = json.loads((tmp_path / "packets" / "shaped" / "report.json").read_text())
    assert report["source"]["dump"] == {
        "format": "pg-custom",
        "sha256": digest,
        "lane": "production-shaped-clone",
    }
