"""OWNER TO under run-time enforcement (engines/postgres/owner.py).

The change role is lent membership in the new owner for exactly one owner-only statement on a
declared object; a new owner that can read a forbidden table is refused with the reason, and
its twin (a role that cannot) rehearses and PASSes. Sequences and views rehearse like tables;
the lent membership never outlives the statement.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from rollproof.core.model import LegName, Verdict
from rollproof.core.policy import Policy, load_policy
from rollproof.rehearse.flow import RehearsalResult
from rollproof.rehearse.flow import rehearse as _rehearse
from rollproof.rehearse.report import report_json
from tests.conftest import assert_valid_report
from tests.pg_fixtures import (
    MakePgChange,
    MakeSource,
    Servers,
    admin,
    make_pg_change_fixture,  # noqa: F401  (fixture)
    pg_servers_fixture,  # noqa: F401  (fixture)
    pg_source_fixture,  # noqa: F401  (fixture)
)

BASE = """
CREATE TABLE customer (id integer PRIMARY KEY, name text);
INSERT INTO customer SELECT i, 'n' || i FROM generate_series(1, 5) AS i;
CREATE TABLE staff (id integer PRIMARY KEY, salary integer);
CREATE SEQUENCE counter;
CREATE VIEW customer_names AS SELECT id, name FROM customer;
"""
LEGS = [LegName.TRANSACTION, LegName.REVERT]


def rehearse(*args: Any, **kwargs: Any) -> RehearsalResult:
    result = _rehearse(*args, **kwargs)
    assert_valid_report(report_json(result))
    return result


@pytest.fixture(name="roles", scope="module")
def roles_fixture(pg_servers: Servers) -> Iterator[tuple[str, str]]:
    """(a role that reads nothing, a role that may read every table: staff too)."""
    tag = secrets.token_hex(3)
    plain, reader = f"rp_plain_{tag}", f"rp_reader_{tag}"
    with admin(pg_servers.source) as conn:
        for role in (plain, reader):
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT pg_read_all_data TO {}").format(sql.Identifier(reader)))
    yield plain, reader
    for server in (pg_servers.source, pg_servers.scratch):
        with admin(server) as conn:
            for role in (plain, reader):
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def policy(tmp_path: Path) -> Policy:
    path = tmp_path / "rollproof.toml"
    path.write_text('[forbidden]\nobjects = ["staff"]\n')
    return load_policy(path)


def owner_of(dsn: str) -> str:
    with admin(dsn) as conn:
        row = conn.execute(
            "SELECT relowner::regrole::text FROM pg_class WHERE relname = 'customer'"
        )
        found = row.fetchone()
    assert found is not None
    return str(found[0])


@pytest.mark.parametrize(
    ("writes", "apply", "revert"),
    [
        pytest.param(
            '["counter"]',
            "ALTER SEQUENCE counter OWNER TO {r};\n",
            "ALTER SEQUENCE counter OWNER TO {owner};\n",
            id="sequence",
        ),
        pytest.param(
            '["customer_names"]',
            "ALTER VIEW customer_names OWNER TO {r};\n",
            "ALTER VIEW customer_names OWNER TO {owner};\n",
            id="view",
        ),
    ],
)
@pytest.mark.parametrize("forgotten", [False, True], ids=["restored", "forgotten"])
def test_owner_to_rehearses_for_sequences_and_views(
    writes: str,
    apply: str,
    revert: str,
    forgotten: bool,
    roles: tuple[str, str],
    pg_servers: Servers,
    pg_source: MakeSource,
    make_pg_change: MakePgChange,
    tmp_path: Path,
) -> None:
    dsn = pg_source(BASE)
    owner = owner_of(dsn)
    plain = roles[0]
    if forgotten:
        revert = "SELECT 1;\n"
    change = make_pg_change(
        apply.format(r=plain),
        revert.format(owner=owner),
        surfaces=f"writes = {writes}\n",
    )
    result = rehearse(change, dsn, scratch=pg_servers.scratch, legs=LEGS, policy=policy(tmp_path))
    verdicts = {str(x.name): x.verdict for x in result.legs}
    if not forgotten:
        assert set(verdicts.values()) == {Verdict.PASS}, [(x.name, x.reason) for x in result.legs]
        return
    revert_leg = next(x for x in result.legs if x.name == LegName.REVERT)
    assert revert_leg.verdict is Verdict.FAIL, revert_leg.reason
    assert "apply changed nothing" not in (revert_leg.reason or "")
    assert plain in (revert_leg.reason or ""), revert_leg.reason


def test_owner_to_a_role_that_reads_a_forbidden_table_is_refused(
    roles: tuple[str, str],
    pg_servers: Servers,
    pg_source: MakeSource,
    make_pg_change: MakePgChange,
    tmp_path: Path,
) -> None:
    dsn = pg_source(BASE)
    reader = roles[1]
    change = make_pg_change(
        f"ALTER TABLE customer OWNER TO {reader};\n",
        f"ALTER TABLE customer OWNER TO {owner_of(dsn)};\n",
        surfaces='writes = ["customer"]\n',
    )
    result = rehearse(change, dsn, scratch=pg_servers.scratch, legs=LEGS, policy=policy(tmp_path))
    for leg in result.legs:
        assert leg.verdict is Verdict.FAIL, (leg.name, leg.reason)
        assert f"OWNER TO {reader} is not rehearsed" in (leg.reason or ""), leg.reason
        assert "forbidden object(s) staff" in (leg.reason or ""), leg.reason
    _no_membership_left(pg_servers.scratch)


def test_owner_to_a_role_that_reads_nothing_forbidden_passes(
    roles: tuple[str, str],
    pg_servers: Servers,
    pg_source: MakeSource,
    make_pg_change: MakePgChange,
    tmp_path: Path,
) -> None:
    dsn = pg_source(BASE)
    plain = roles[0]
    change = make_pg_change(
        f"ALTER TABLE customer OWNER TO {plain};\n",
        f"ALTER TABLE customer OWNER TO {owner_of(dsn)};\n",
        surfaces='writes = ["customer"]\n',
    )
    result = rehearse(change, dsn, scratch=pg_servers.scratch, legs=LEGS, policy=policy(tmp_path))
    assert {x.verdict for x in result.legs} == {Verdict.PASS}, [
        (x.name, x.reason) for x in result.legs
    ]
    _no_membership_left(pg_servers.scratch)


def test_a_script_cannot_use_the_lent_membership_after_its_statement(
    roles: tuple[str, str],
    pg_servers: Servers,
    pg_source: MakeSource,
    make_pg_change: MakePgChange,
    tmp_path: Path,
) -> None:
    """Given the table away, the next statement cannot SET ROLE to the new owner."""
    dsn = pg_source(BASE)
    plain = roles[0]
    change = make_pg_change(
        f"ALTER TABLE customer OWNER TO {plain};\nSET ROLE {plain};\n",
        f"ALTER TABLE customer OWNER TO {owner_of(dsn)};\n",
        surfaces='writes = ["customer"]\n',
    )
    result = rehearse(
        change, dsn, scratch=pg_servers.scratch, legs=[LegName.REVERT], policy=policy(tmp_path)
    )
    [leg] = result.legs
    assert leg.verdict is Verdict.FAIL
    assert "SET ROLE" in (leg.reason or ""), leg.reason


def _no_membership_left(scratch: str) -> None:
    with admin(scratch) as conn:
        rows = conn.execute(
            "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member "
            "WHERE r.rolname LIKE 'rollproof\\_%\\_change'"
        ).fetchall()
    assert rows == []
