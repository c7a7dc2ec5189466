"""`rollproof rehearse-dir` and `rollproof plan` over the migrations users already have.

THE acceptance test is `test_range_hides_a_lossy_down_that_per_migration_rehearsal_finds`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rollproof.cli import main
from rollproof.core.canonical import canonical_json
from rollproof.core.model import Verdict
from rollproof.verify.reader import validate_packet

DATA = Path(__file__).parent / "data" / "formats"
PROFILES = DATA / "golang-migrate" / "profiles"


def make_source(tmp_path: Path, *, deployed: int | None = None) -> Path:
    path = tmp_path / "prod" / "prod.db"
    path.parent.mkdir()
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
    conn.executemany("INSERT INTO users (name) VALUES (?)", [(f"user{i}",) for i in range(40)])
    if deployed is not None:
        conn.execute("CREATE TABLE schema_migrations (version bigint NOT NULL, dirty boolean)")
        conn.execute("INSERT INTO schema_migrations VALUES (?, 0)", (deployed,))
        for n in range(1, deployed + 1):
            for f in sorted(PROFILES.glob(f"{n}_*.up.sql")):
                conn.executescript(f.read_text())
    conn.commit()
    conn.close()
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_range_hides_a_lossy_down_that_per_migration_rehearsal_finds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Migration 1 creates `profiles` and fills `bio`; migration 2 drops `bio`, and its down
    adds the column back *empty* (the bios are lost); migration 3 indexes users.

    Rehearsed at its own position (the source with migration 1 applied, bios present),
    migration 2's revert leg FAILS: every bio set before is NULL after. The range round trip
    (1, 2, 3 up, then 3, 2, 1 down) compares the source before migration 1 with the state
    after migration 1's down: that down drops the whole `profiles` table, bios and all, so the
    bios migration 2's down failed to bring back are nowhere to be compared, and the range
    comes back digest-equal to the source. It genuinely passes, and it proves nothing about
    migration 2: only the per-migration round trip does.
    """
    source = make_source(tmp_path)
    before = sha(source)
    out = tmp_path / "packets"
    code = main(["rehearse-dir", str(PROFILES), "--source", str(source), "--out", str(out)])
    lines = capsys.readouterr().out.splitlines()
    assert code == 1  # the worst of the rehearsals: migration 2's FAIL
    verdicts = [line.split()[0] for line in lines[:4]]
    assert verdicts == ["PASS", "FAIL", "PASS", "PASS"]
    assert lines[1].startswith("FAIL    exit 1  2-2 (drop profile bio): revert: ")
    assert (
        "table profiles: 40 rows differ; bio: 40 values lost (set before, NULL now)" in (lines[1])
    )
    assert lines[3].startswith("PASS    exit 0  range-1-to-3: ")
    assert "3 of 3 golang-migrate migrations rehearsed; source unchanged" in lines[5]
    assert sha(source) == before  # the source was only ever read

    packets = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert packets == ["1-1", "2-2", "3-3", "range-1-to-3"]
    for name in packets:
        verified = validate_packet(out / name)  # the existing validator, unchanged
        assert verified.overall is (Verdict.FAIL if name == "2-2" else Verdict.PASS)
    # Migration 2's packet holds the migration's own files, byte for byte.
    copy = out / "2-2" / "change"
    for f in ("2_drop_profile_bio.up.sql", "2_drop_profile_bio.down.sql"):
        assert (copy / f).read_bytes() == (PROFILES / f).read_bytes()
    report = json.loads((out / "2-2" / "report.json").read_text())
    assert report["change"]["surfaces"]["writes"] == ["profiles"]


def test_pending_from_golang_migrate_bookkeeping(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = make_source(tmp_path, deployed=1)
    assert main(["plan", str(PROFILES), "--source", str(source), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(m["id"], m["state"], m["reversible"]) for m in doc["migrations"]] == [
        ("1", "deployed", True),
        ("2", "pending", True),
        ("3", "pending", True),
    ]
    out = tmp_path / "packets"
    code = main(
        ["rehearse-dir", str(PROFILES), "--source", str(source), "--out", str(out), "--to", "2"]
    )
    text = capsys.readouterr().out
    assert code == 1
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["2-2", "range-2-to-2"]
    assert "1 of 3 golang-migrate migrations rehearsed" in text


def test_sqitch_rework_and_self_bracketing_rehearse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "prod" / "empty.db"
    source.parent.mkdir()
    sqlite3.connect(source).close()
    project = DATA / "sqitch" / "flipr"
    # sqitch's registry is another database: without --from there is no position to start at.
    assert main(["rehearse-dir", str(project), "--source", str(source)]) == 2
    assert "give --from" in capsys.readouterr().err
    out = tmp_path / "packets"
    code = main(
        [
            "rehearse-dir",
            str(project),
            "--source",
            str(source),
            "--from",
            "users",
            "--out",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    assert code == 0, text
    lines = text.splitlines()
    assert lines[0].startswith("PASS    exit 0  1-users")
    # The BEGIN ... COMMIT each script brackets itself with is left out: the transaction leg
    # runs (and passes) instead of being not applicable, and the note says why.
    assert "note: deploy/users.sql: its BEGIN ... COMMIT is left out" in text
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "1-users",
        "2-flips-at-v1.0",
        "3-flips",
        "range-users-to-flips",
    ]
    for p in (d for d in out.iterdir() if d.is_dir()):
        validate_packet(p)
        report = json.loads((p / "report.json").read_text())
        legs = {leg["name"]: leg["verdict"] for leg in report["legs"]}
        assert legs["transaction"] == "PASS"
        assert legs["revert"] == "PASS"
        if not p.name.startswith("range"):
            assert legs["read-only"] == "PASS"  # the verify script


def test_goose_no_transaction_marker_makes_the_transaction_leg_not_applicable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "prod" / "notes.db"
    source.parent.mkdir()
    sqlite3.connect(source).close()
    out = tmp_path / "packets"
    project = DATA / "goose" / "notes"
    code = main(["rehearse-dir", str(project), "--source", str(source), "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    report = json.loads((out / "2-2" / "report.json").read_text())
    legs = {leg["name"]: leg for leg in report["legs"]}
    assert legs["transaction"]["verdict"] == "NOT_APPLICABLE"
    assert "goose `NO TRANSACTION` (00002_notes_fts.sql:1)" in legs["transaction"]["reason"]
    assert legs["revert"]["verdict"] == "PASS"
    validate_packet(out / "2-2")
    first = json.loads((out / "1-1" / "report.json").read_text())
    assert {leg["name"]: leg["verdict"] for leg in first["legs"]}["transaction"] == "PASS"


def test_dbmate_and_flyway_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "prod" / "a.db"
    source.parent.mkdir()
    conn = sqlite3.connect(source)
    conn.execute("CREATE TABLE schema_migrations (version varchar(128) PRIMARY KEY)")
    conn.execute("INSERT INTO schema_migrations VALUES ('20240101120000')")
    conn.commit()
    conn.close()
    assert main(["plan", str(DATA / "dbmate" / "accounts"), "--source", str(source)]) == 0
    text = capsys.readouterr().out
    assert "deployed 20240101120000" in text
    assert "pending  20240102120000" in text
    assert "transaction:false" in text
    assert "NOT reversible" in text.splitlines()[-1]
    assert main(["plan", str(DATA / "flyway" / "shop"), "--source", str(source)]) == 0
    text = capsys.readouterr().out
    # No flyway_schema_history: Flyway has never run here, so every migration is pending.
    assert "pending  1 (create items)" in text
    assert "R__item_view (item view): NOT reversible (a repeatable (R__) migration" in text


def test_malformed_directory_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "1_a.sql").write_text("-- migrate:down\nSELECT 1;\n")
    source = make_source(tmp_path)
    assert main(["plan", str(tmp_path), "--source", str(source), "--format", "dbmate"]) == 2
    assert "1_a.sql:1: has no `-- migrate:up` section" in capsys.readouterr().err


# --- one packet per range -------------------------------------------------------------------


@pytest.fixture(scope="module")
def range_packet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The profiles range (migration 2 FAILS) written as one range packet."""
    root = tmp_path_factory.mktemp("range")
    source = make_source(root)
    out = root / "packets"
    assert main(["rehearse-dir", str(PROFILES), "--source", str(source), "--out", str(out)]) == 1
    return out


def _copy(range_packet: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(range_packet, out)
    return out


def _edit_manifest(
    out: Path, change: Callable[[dict[str, Any]], None], *, canonical: bool = True
) -> None:
    doc = json.loads((out / "RANGE.json").read_bytes())
    change(doc)
    data = canonical_json(doc) if canonical else json.dumps(doc).encode()
    (out / "RANGE.json").write_bytes(data)


def test_range_packet_validates_as_a_whole(
    range_packet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = json.loads((range_packet / "RANGE.json").read_bytes())
    assert [(e["dir"], e["migration"], e["overall"]) for e in doc["packets"]] == [
        ("1-1", "1", "PASS"),
        ("2-2", "2", "FAIL"),
        ("3-3", "3", "PASS"),
        ("range-1-to-3", None, "PASS"),
    ]
    assert (doc["overall"], doc["exit_code"]) == ("FAIL", 1)
    assert main(["validate", str(range_packet)]) == 0
    out = capsys.readouterr().out
    assert f"VALID {range_packet}: range-1-to-3 overall FAIL, exit code 1" in out
    verified = validate_packet(range_packet)
    assert [p.change_id for p in verified.parts] == ["1", "2", "3", "range-1-to-3"]


def _remove_listed(out: Path) -> None:
    shutil.rmtree(out / "3-3")


def _remove_with_entry(out: Path) -> None:
    shutil.rmtree(out / "3-3")
    _edit_manifest(out, lambda d: d.update(packets=[e for e in d["packets"] if e["dir"] != "3-3"]))


def _swap(out: Path) -> None:
    (out / "1-1").rename(out / "tmp")
    (out / "3-3").rename(out / "1-1")
    (out / "tmp").rename(out / "3-3")


def _reorder(out: Path) -> None:
    def move(d: dict[str, Any]) -> None:
        d["packets"][0], d["packets"][1] = d["packets"][1], d["packets"][0]

    _edit_manifest(out, move)


@pytest.mark.parametrize(
    ("tamper", "code"),
    [
        (_remove_listed, "RANGE_PACKET_MISSING 3-3: listed in RANGE.json, not present"),
        (
            _remove_with_entry,
            "RANGE_PACKET_MISSING range-1-to-3: the range rehearsed migrations 1 2 3; "
            "RANGE.json lists 1 2",
        ),
        (_swap, "RANGE_PACKET_MISMATCH 1-1: holds change 3 with tree hash"),
        (_reorder, "RANGE_ORDER 1-1: index 1 does not follow 2"),
        (
            lambda out: _edit_manifest(out, lambda d: d.update(overall="PASS", exit_code=0)),
            "RANGE_VERDICT_CONTRADICTS RANGE.json: the range says PASS exit 0; its packets' "
            "worst is FAIL exit 1",
        ),
        (
            lambda out: _edit_manifest(out, lambda d: d, canonical=False),
            "RANGE_MALFORMED RANGE.json: not canonical JSON (RFC 8785)",
        ),
        (
            lambda out: (out / "2-2" / "report.md").write_text("all fine\n"),
            "RANGE_PACKET_INVALID 2-2: SIZE_MISMATCH report.md",
        ),
        (
            lambda out: (out / "notes.txt").write_text("hi\n"),
            "RANGE_PACKET_EXTRA notes.txt: not listed in RANGE.json",
        ),
    ],
    ids=[
        "removed",
        "removed-and-unlisted",
        "swapped",
        "reordered",
        "verdict",
        "edited",
        "sub",
        "extra",
    ],
)
def test_a_tampered_range_packet_fails_closed(
    range_packet: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tamper: Callable[[Path], None],
    code: str,
) -> None:
    out = _copy(range_packet, tmp_path)
    assert main(["validate", str(out)]) == 0  # the positive twin: the untouched copy
    capsys.readouterr()
    tamper(out)
    assert main(["validate", str(out)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"INVALID {code}"), lines
