"""Forgeries of this session's new evidence, each through `rollproof validate` as a user runs it.

Every packet here comes from a real rehearsal (SQLite file, or the PostgreSQL test servers) and
is then forged the way an attacker without the key forges one (`assurance.selftest.forge`: edit,
re-render with rollproof's public renderers, recompute the manifest and tree hash, and where it
helps the forger, the content id too). Each case asserts the exact first finding line; the
untouched packet (each test's positive twin) validates with exit 0.

Classes: change.toml selections (`lines`, `strip_transaction`, `transaction = false`) and
`[impact]`; fingerprint v3 (row counts, order, a table digest copied from another table);
carried points (PostgreSQL); range packets (RANGE.json).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rollproof.assurance.selftest import forge, leg, reseal
from rollproof.core.canonical import canonical_json
from rollproof.core.change import load_change
from rollproof.core.fingerprint import fingerprint_from_json
from rollproof.evidence.write import write_tree_atomically
from rollproof.rehearse.flow import rehearse
from rollproof.rehearse.packet import build_packet
from rollproof.verify.recompute import recomputed_content_id
from tests.pg_fixtures import (
    MakePgChange,
    MakeSource,
    Servers,
    make_pg_change_fixture,  # noqa: F401  (fixture)
    pg_servers_fixture,  # noqa: F401  (fixture)
    pg_source_fixture,  # noqa: F401  (fixture)
)

Files = dict[str, bytes]
TOML = "change/change.toml"


def validate(packet: Path) -> tuple[int, str]:
    """`rollproof validate PACKET` in a subprocess: exit code and its first output line."""
    done = subprocess.run(
        [sys.executable, "-m", "rollproof", "validate", str(packet)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "NO_COLOR": "1"},
    )
    lines = (done.stdout + done.stderr).splitlines()
    return done.returncode, lines[0] if lines else ""


def _assert_cases(
    tmp_path: Path, files: Files, cases: list[tuple[str, Callable[[Files], Files], str]]
) -> None:
    code, first = validate(write_tree_atomically(tmp_path / "twin", forge(files)))
    assert code == 0, first  # the forger's renderers alone change nothing
    for i, (what, build, expected) in enumerate(cases):
        packet = write_tree_atomically(tmp_path / f"forged-{i}", build(files))
        code, first = validate(packet)
        assert (code, first) == (1, f"INVALID {expected}"), what


def _reid(report: dict[str, Any]) -> None:
    change = report["change"]
    change["content_id"] = recomputed_content_id(change, report["impact"]["limits"]["change"])


def _toml(files: Files, old: str, new: str) -> Files:
    text = files[TOML].decode()
    assert old in text
    return {**files, TOML: text.replace(old, new).encode()}


def _script(name: str, **fields: Any) -> Callable[[dict[str, Any]], None]:
    def edit(report: dict[str, Any]) -> None:
        report["change"]["scripts"][name].update(fields)
        _reid(report)

    return edit


# -- change.toml selections ------------------------------------------------------------------

MIGRATION = (
    "-- migrate:up\n"
    "BEGIN;\n"
    "ALTER TABLE items ADD COLUMN note TEXT;\n"
    "COMMIT;\n"
    "-- migrate:down\n"
    "ALTER TABLE items DROP COLUMN note;\n"
)
APPLY = 'apply = {file = "m.sql", lines = [2, 4], strip_transaction = true}'
REVERT = 'revert = {file = "m.sql", lines = [6, 6]}'


def _tiny(path: Path) -> str:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, qty INTEGER)")
    conn.executemany("INSERT INTO items (qty) VALUES (?)", [(i,) for i in range(5)])
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


def _selection_packet(tmp_path: Path, extra: str = "") -> Files:
    change = tmp_path / "change"
    change.mkdir()
    (change / "m.sql").write_text(MIGRATION)
    (change / "change.toml").write_text(
        f'id = "sel"\n{APPLY}\n{REVERT}\n{extra}\n[surfaces]\nreads = []\nwrites = ["items"]\n'
    )
    result = rehearse(load_change(change), _tiny(tmp_path / "src.db"))
    assert str(result.overall) == "PASS"
    return build_packet(result)


def test_change_toml_selections_cannot_be_forged(tmp_path: Path) -> None:
    def both(old: str, new: str, name: str, **fields: Any) -> Callable[[Files], Files]:
        return lambda f: forge(_toml(f, old, new), _script(name, **fields))

    cases = [
        (
            "change.toml selects other lines than the report records",
            lambda f: reseal(_toml(f, "lines = [6, 6]", "lines = [5, 6]")),
            "CHANGE_COPY_MISMATCH change/change.toml: revert = {'file': 'm.sql', 'lines': [5, 6]} "
            "is not the recorded script",
        ),
        (
            "a float line number that compares equal",
            lambda f: reseal(_toml(f, "lines = [6, 6]", "lines = [6, 6.0]")),
            "CHANGE_COPY_MISMATCH change/change.toml: revert = {'file': 'm.sql', 'lines': [6, "
            "6.0]} is not the recorded script",
        ),
        (
            "lines out of the file, in both (content id recomputed)",
            both("lines = [6, 6]", "lines = [6, 60]", "revert", lines=[6, 60]),
            "CHANGE_COPY_MISMATCH change/m.sql: revert: the file has no lines 6..60",
        ),
        (
            "a strip that is not a whole-script bracket",
            both("lines = [2, 4]", "lines = [2, 3]", "apply", lines=[2, 3]),
            "CHANGE_COPY_MISMATCH change/m.sql: apply: strip_transaction, but it is not one "
            "BEGIN ... COMMIT",
        ),
        (
            "overlapping selections of one file",
            both("lines = [6, 6]", "lines = [4, 6]", "revert", lines=[4, 6]),
            "CHANGE_COPY_MISMATCH change/m.sql: apply lines 2..4 overlap revert lines 4..6",
        ),
        (
            "transaction = false added: another change than the one rehearsed",
            lambda f: reseal({**f, TOML: b"transaction = false\n" + f[TOML]}),
            "CONTENT_ID_MISMATCH report.json: change.content_id is not the digest of the "
            "recorded change",
        ),
        (
            "transaction = false added, the content id recomputed for it",
            lambda f: forge(
                {**f, TOML: b"transaction = false\n" + f[TOML]},
                lambda r: r["change"].update(
                    content_id=recomputed_content_id(
                        r["change"], r["impact"]["limits"]["change"], no_transaction=True
                    )
                ),
            ),
            "CHANGE_COPY_MISMATCH change/change.toml: transaction = false, but the transaction "
            "leg is not NOT_APPLICABLE for it",
        ),
        (
            "[impact] limits edited in change.toml only",
            lambda f: reseal({**f, TOML: f[TOML] + b"\n[impact]\nmax_duration_ms = 1\n"}),
            "CHANGE_COPY_MISMATCH change/change.toml: [impact] is not the recorded "
            "impact.limits.change",
        ),
        (
            "[impact] limits edited in the report only",
            lambda f: forge(
                f, lambda r: r["impact"]["limits"].update(change={"max_duration_ms": 1})
            ),
            "CONTENT_ID_MISMATCH report.json: change.content_id is not the digest of the "
            "recorded change",
        ),
    ]
    _assert_cases(tmp_path, _selection_packet(tmp_path), cases)


def test_a_no_transaction_leg_must_be_what_change_toml_says(tmp_path: Path) -> None:
    files = _selection_packet(tmp_path, 'transaction = false\ntransaction_marker = "-- NO TX"\n')
    report = json.loads(files["report.json"])
    reason = "the migration is marked to run outside a transaction: -- NO TX"
    assert leg(report, "transaction")["reason"] == reason  # what rehearse writes
    cases = [
        (
            "transaction = false dropped: another change than the one rehearsed",
            lambda f: reseal(_toml(f, "transaction = false\n", "")),
            "CONTENT_ID_MISMATCH report.json: change.content_id is not the digest of the "
            "recorded change",
        ),
        (
            "both lines dropped, the content id recomputed: the leg's reason has no footing",
            lambda f: forge(
                _toml(f, 'transaction = false\ntransaction_marker = "-- NO TX"\n', ""), _reid
            ),
            f"CHANGE_COPY_MISMATCH change/change.toml: the transaction leg says {reason!r}, "
            "change.toml has no transaction = false",
        ),
        (
            "another marker",
            lambda f: reseal(_toml(f, '"-- NO TX"', '"-- other"')),
            "CHANGE_COPY_MISMATCH change/change.toml: transaction = false, but the transaction "
            "leg is not NOT_APPLICABLE for it",
        ),
        (
            "a marker with transaction = true",
            lambda f: reseal(_toml(f, "transaction = false", "transaction = true")),
            "CONTENT_ID_MISMATCH report.json: change.content_id is not the digest of the "
            "recorded change",
        ),
    ]
    _assert_cases(tmp_path, files, cases)


# -- fingerprints (v3) ---------------------------------------------------------------------


def _refingerprint(files: Files, digest: str, edit: Callable[[dict[str, Any]], None]) -> Files:
    """The fingerprint `digest` edited and its digest recomputed, renamed, every reference in
    the report moved to it: a consistent forgery of one fingerprint."""
    old = f"fingerprints/{digest.removeprefix('sha256:')}.json"
    doc = json.loads(files[old])
    edit(doc)
    doc["digest"] = ""
    fp = fingerprint_from_json(doc)
    new = f"fingerprints/{fp.digest.removeprefix('sha256:')}.json"
    kept = {p: d for p, d in files.items() if p != old} | {new: canonical_json(fp.to_json())}

    def move(report: dict[str, Any]) -> None:
        text = json.dumps(report).replace(digest, fp.digest)
        report.clear()
        report.update(json.loads(text))

    return forge(kept, move)


def _digest_of(files: Files, leg_name: str, point: str) -> str:
    return str(leg(json.loads(files["report.json"]), leg_name)["fingerprints"][point])


# -- PostgreSQL: carried points and fingerprints --------------------------------------------

PG_SOURCE = """
CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL);
CREATE TABLE other (id int PRIMARY KEY, note text);
INSERT INTO items SELECT g, g FROM generate_series(1, 50) g;
INSERT INTO other SELECT g, 'o' || g FROM generate_series(1, 50) g;
"""


@pytest.fixture
def pg_packet(pg_servers: Servers, pg_source: MakeSource, make_pg_change: MakePgChange) -> Files:
    from rollproof.core.model import LegName

    change = make_pg_change(
        "UPDATE items SET qty = qty + 1 WHERE id <= 10;",
        "UPDATE items SET qty = qty - 1 WHERE id <= 10;",
        surfaces='writes = ["items"]\n',
    )
    result = rehearse(
        change,
        pg_source(PG_SOURCE),
        scratch=pg_servers.scratch,
        legs=[LegName.TRANSACTION, LegName.REVERT, LegName.RESTORE],
    )
    return build_packet(result)


def _full_argv(doc: dict[str, Any]) -> None:
    doc["commands"][0]["argv"] = [*doc["commands"][0]["argv"], "--full-fingerprints"]


def _carried_cases(engine: str) -> list[tuple[str, Callable[[Files], Files], str]]:
    """Forged carried points, refused on every engine whose clones are copied."""
    return [
        (
            "carried from an equal digest no rehearsal copies",
            lambda f: forge(
                f,
                lambda r: leg(r, "revert").update(
                    carried={"after_apply": "transaction.after_apply"}
                ),
            ),
            "LEG_CARRIED_UNFOUNDED report.json: revert: after_apply carried over from "
            f"transaction.after_apply: no {engine} rehearsal carries that point over from "
            "anywhere but "
            "restore.after_apply",
        ),
        (
            "carried under --full-fingerprints",
            lambda f: forge(f, None, _full_argv),
            "LEG_CARRIED_UNFOUNDED report.json: revert: after_apply carried over from "
            "restore.after_apply: the recorded command read every point (--full-fingerprints)",
        ),
        (
            "carried into a point after a script ran, from the snapshot",
            lambda f: forge(
                f, lambda r: leg(r, "revert").update(carried={"after_revert": "snapshot"})
            ),
            "LEG_CARRIED_UNFOUNDED report.json: revert: after_revert carried over from "
            "snapshot: only a restore is a copy of the snapshot",
        ),
    ]


def test_carried_points_and_v3_fingerprints_cannot_be_forged(
    pg_packet: Files, tmp_path: Path
) -> None:
    report = json.loads(pg_packet["report.json"])
    assert leg(report, "revert")["carried"] == {"after_apply": "restore.after_apply"}
    tx_apply = _digest_of(pg_packet, "transaction", "after_apply")
    assert tx_apply == _digest_of(pg_packet, "restore", "after_apply")  # an equal digest...

    def other_rows(doc: dict[str, Any]) -> None:
        doc["tables"]["other"]["rows"] += 1

    def items_digest_on_other(doc: dict[str, Any]) -> None:
        doc["tables"]["other"]["digest"] = doc["tables"]["items"]["digest"]

    cases = [
        *_carried_cases("postgresql"),
        (
            "an unchanged table's row count edited in one fingerprint",
            lambda f: _refingerprint(f, tx_apply, other_rows),
            "FINGERPRINT_INVALID",
        ),
        (
            "a table digest copied from another table",
            lambda f: _refingerprint(f, tx_apply, items_digest_on_other),
            "FINGERPRINT_INVALID",
        ),
        (
            "a row count edited, the digest left as it was",
            lambda f: reseal(
                {
                    **f,
                    f"fingerprints/{tx_apply.removeprefix('sha256:')}.json": f[
                        f"fingerprints/{tx_apply.removeprefix('sha256:')}.json"
                    ].replace(b'"rows":50', b'"rows":51', 1),
                }
            ),
            f"FINGERPRINT_INVALID fingerprints/{tx_apply.removeprefix('sha256:')}.json: "
            "ValueError: fingerprint digest does not match its components",
        ),
    ]
    code, first = validate(write_tree_atomically(tmp_path / "twin", forge(pg_packet)))
    assert code == 0, first
    for i, (what, build, expected) in enumerate(cases):
        code, first = validate(write_tree_atomically(tmp_path / f"forged-{i}", build(pg_packet)))
        assert code == 1, what
        assert first.startswith(f"INVALID {expected}"), (what, first)
        if expected == "FINGERPRINT_INVALID":
            assert "has the digest of table" in first, (what, first)


def test_a_sqlite_packet_carries_the_revert_legs_apply_from_its_byte_copy(tmp_path: Path) -> None:
    """The revert leg continues from a byte copy of the restore leg's committed apply (checked
    equal to it), so its after_apply is carried; forged carries are refused as on PostgreSQL."""
    files = _selection_packet(tmp_path)
    report = json.loads(files["report.json"])
    assert leg(report, "revert")["carried"] == {"after_apply": "restore.after_apply"}
    assert _digest_of(files, "revert", "after_apply") == _digest_of(files, "restore", "after_apply")
    assert "carried" not in leg(report, "restore")
    cases = [
        *_carried_cases("sqlite"),
        (
            "a restore carried from the snapshot: SQLite reads its restore",
            lambda f: forge(
                f, lambda r: leg(r, "restore").update(carried={"after_restore": "snapshot"})
            ),
            "LEG_CARRIED_UNFOUNDED report.json: restore: after_restore carried over from "
            "snapshot: no sqlite rehearsal carries that point over",
        ),
        (
            "a carried point whose origin gives another digest",
            lambda f: forge(
                f,
                lambda r: leg(r, "revert").update(carried={"after_revert": "restore.after_apply"}),
            ),
            "LEG_CARRIED_UNFOUNDED report.json: revert: after_revert carried over from "
            "restore.after_apply: only an apply is carried over from another leg's apply",
        ),
    ]
    _assert_cases(tmp_path, files, cases)


# -- range packets ---------------------------------------------------------------------------

PROFILES = Path(__file__).parent / "data" / "formats" / "golang-migrate" / "profiles"


def _users(path: Path, n: int) -> Path:
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
    conn.executemany("INSERT INTO users (name) VALUES (?)", [(f"u{i}",) for i in range(n)])
    conn.commit()
    conn.close()
    return path


def _rehearse_dir(source: Path, out: Path) -> Path:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "rollproof",
            "rehearse-dir",
            str(PROFILES),
            "--source",
            str(source),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 1, done.stderr  # migration 2's down is lossy
    return out


@pytest.fixture(scope="module")
def ranges(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ranges")
    a = _rehearse_dir(_users(root / "a" / "prod.db", 40), root / "a" / "out")
    b = _rehearse_dir(_users(root / "b" / "prod.db", 41), root / "b" / "out")
    assert validate(a)[0] == 0  # the positive twins, checked once
    assert validate(b)[0] == 0
    return a, b


def _edit_range(out: Path, change: Callable[[dict[str, Any]], None]) -> None:
    doc = json.loads((out / "RANGE.json").read_bytes())
    change(doc)
    (out / "RANGE.json").write_bytes(canonical_json(doc))


def _swap_in(out: Path, other: Path, name: str) -> None:
    """`name` replaced by the other range's packet of that name, RANGE.json re-listed."""
    shutil.rmtree(out / name)
    shutil.copytree(other / name, out / name)
    tree = (out / name / "TREE_HASH").read_text().strip()
    _edit_range(out, lambda d: [e.update(tree_hash=tree) for e in d["packets"] if e["dir"] == name])


def _without_range_and_failure(out: Path) -> None:
    for name in ("2-2", "3-3", "range-1-to-3"):
        shutil.rmtree(out / name)

    def keep_first(d: dict[str, Any]) -> None:
        d["packets"] = d["packets"][:1]
        d.update(overall="PASS", exit_code=0)

    _edit_range(out, keep_first)


def _pass_over_fail(out: Path) -> None:
    """Migration 2's FAIL re-stated as PASS, its manifest and tree hash recomputed, RANGE.json
    re-listed with the new tree hash and verdicts."""
    sub = out / "2-2"
    files = {
        str(p.relative_to(sub)): p.read_bytes()
        for p in sub.rglob("*")
        if p.is_file() and p.name not in {"MANIFEST.json", "TREE_HASH"}
    }

    def passed(report: dict[str, Any]) -> None:
        report["overall"] = "PASS"
        for x in report["legs"]:
            if x["verdict"] == "FAIL":
                x["verdict"] = "PASS"

    shutil.rmtree(sub)
    write_tree_atomically(sub, forge(files, passed))
    tree = (sub / "TREE_HASH").read_text().strip()

    def relist(d: dict[str, Any]) -> None:
        for e in d["packets"]:
            if e["dir"] == "2-2":
                e.update(tree_hash=tree, overall="PASS", exit_code=0)
        d.update(overall="PASS", exit_code=0)

    _edit_range(out, relist)


def _duplicate(d: dict[str, Any]) -> None:
    d["packets"].insert(1, dict(d["packets"][0]))


RANGE_CASES: list[tuple[str, Callable[[Path, Path], None], str]] = [
    (
        "a sub-packet's verdict edited with its own tree hash recomputed",
        lambda out, other: _pass_over_fail(out),
        "RANGE_PACKET_INVALID 2-2: LEG_VERDICT_CONTRADICTS report.json: ",
    ),
    (
        "migration 1 from a range rehearsed on another source",
        lambda out, other: _swap_in(out, other, "1-1"),
        "RANGE_PACKET_MISMATCH 1-1: starts from another source than the range's own packet",
    ),
    (
        "the range's own packet from another source",
        lambda out, other: _swap_in(out, other, "range-1-to-3"),
        "RANGE_PACKET_MISMATCH 1-1: starts from another source than the range's own packet",
    ),
    (
        "the failing migration dropped with the range packet",
        lambda out, other: _without_range_and_failure(out),
        "RANGE_PACKET_MISSING RANGE.json: no range packet (range-<first>-to-<last>): the "
        "range's own rehearsal is what binds its migrations",
    ),
    (
        "an entry listed twice",
        lambda out, other: _edit_range(out, _duplicate),
        "RANGE_MALFORMED RANGE.json: a directory is listed twice",
    ),
    (
        "path traversal in a sub-packet name",
        lambda out, other: _edit_range(out, lambda d: d["packets"][0].update(dir="1-1/../../etc")),
        "RANGE_MALFORMED RANGE.json: packets[0].dir is not <index>-<id> or range-<id>",
    ),
    (
        "a listed sub-packet replaced by a symlink to a valid copy",
        lambda out, other: (
            shutil.copytree(out / "1-1", out.parent / "elsewhere"),
            shutil.rmtree(out / "1-1"),
            (out / "1-1").symlink_to(out.parent / "elsewhere"),
        ),
        "RANGE_PACKET_INVALID 1-1: MANIFEST_MISSING",
    ),
    (
        "an extra symlink at the top",
        lambda out, other: (out / "4-4").symlink_to(out / "1-1"),
        "RANGE_PACKET_EXTRA 4-4: not listed in RANGE.json",
    ),
    (
        "an extra, unlisted sub-packet directory",
        lambda out, other: shutil.copytree(out / "1-1", out / "4-1"),
        "RANGE_PACKET_EXTRA 4-1: not listed in RANGE.json",
    ),
]


@pytest.mark.parametrize(
    ("what", "tamper", "expected"), RANGE_CASES, ids=[c[0] for c in RANGE_CASES]
)
def test_a_forged_range_fails_closed(
    ranges: tuple[Path, Path],
    tmp_path: Path,
    what: str,
    tamper: Callable[[Path, Path], None],
    expected: str,
) -> None:
    out = tmp_path / "copy" / "out"
    shutil.copytree(ranges[0], out, symlinks=True)
    tamper(out, ranges[1])
    code, first = validate(out)
    assert code == 1, what
    assert first.startswith(f"INVALID {expected}"), (what, first)
