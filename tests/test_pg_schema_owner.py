"""`ALTER SCHEMA s OWNER TO role` under run-time enforcement (roles.py, owner.py).

The change role is given a schema declared in `writes` (as it is given a declared table), and
for the statement itself CREATE on the database (PostgreSQL checks it for the role running
ALTER SCHEMA ... OWNER TO) and membership in the new owner. A revert that gives the schema
back PASSes; one that forgets FAILs naming the schema's owner. A schema holding a forbidden
table is never handed over (its owner could drop the table), and says so.
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

SCHEMA = """
CREATE SCHEMA app;
CREATE TABLE app.orders (id integer PRIMARY KEY, total integer);
INSERT INTO app.orders SELECT i, i * 10 FROM generate_series(1, 5) AS i;
CREATE TABLE app.salaries (id integer PRIMARY KEY, amount integer);
"""
LEGS = [LegName.TRANSACTION, LegName.REVERT, LegName.RESTORE]


def rehearse(*args: Any, **kwargs: Any) -> RehearsalResult:
    result = _rehearse(*args, **kwargs)
    assert_valid_report(report_json(result))
    return result


@pytest.fixture(name="new_owner", scope="module")
def new_owner_fixture(pg_servers: Servers) -> Iterator[str]:
    """A role of the source cluster that reads nothing."""
    role = f"rp_schema_owner_{secrets.token_hex(3)}"
    with admin(pg_servers.source) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    yield role
    for server in (pg_servers.source, pg_servers.scratch):
        with admin(server) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def schema_owner(dsn: str) -> str:
    with admin(dsn) as conn:
        row = conn.execute(
            "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'app'"
        ).fetchone()
    assert row is not None
    return str(row[0])


def forbid(tmp_path: Path, pattern: str) -> Policy:
    path = tmp_path / "rollproof.toml"
    path.write_text(f'[forbidden]\nobjects = ["{pattern}"]\n')
    return load_policy(path)


@pytest.mark.parametrize("forgotten", [False, True], ids=["given-back", "forgotten"])
def test_alter_schema_owner_to_rehearses_with_an_honest_verdict(
    forgotten: bool,
    new_owner: str,
    pg_servers: Servers,
    pg_source: MakeSource,
    make_pg_change: MakePgChange,
    tmp_path: Path,
) -> None:
    dsn = pg_source(SCHEMA)
    owner = schema_owner(dsn)
    change = make_pg_change(
        f"ALTER SCHEMA app OWNER TO {new_owner};\n",
        "SELECT 1;\n" if forgotten else f"ALTER SCHEMA app OWNER TO {owner};\n",
        surfaces='writes = ["app"]\n',
    )
    # A forbidden table elsewhere: the schema is still handed over, and the new owner vetted.
    result = rehearse(
        change, dsn, scratch=pg_servers.scratch, legs=LEGS, policy=forbid(tmp_path, "secrets")
    )
    verdicts = {x.name: x.verdict for x in result.legs}
    assert list(result.surfaces.events) == []
    if not forgotten:
        assert set(verdicts.values()) == {Verdict.PASS}, [(x.name, x.reason) for x in result.legs]
        assert result.overall is Verdict.PASS
        return
    assert verdicts == {
        LegName.TRANSACTION: Verdict.PASS,
        LegName.REVERT: Verdict.FAIL,
        LegName.RESTORE: Verdict.PASS,
    }
    revert = next(x for x in result.legs if x.name is LegName.REVERT)
    assert f"schema app: owner {owner} -> {new_owner}" in (revert.reason or ""), revert.reason
    [diff] = revert.differences
    assert diff.component == "schema:schema:app"
    assert {"object": "schema app", "attribute": "owner", "old": owner, "new": new_owner} in (
        diff.detail["attributes"]
    )


def test_a_schema_holding_a_forbidden_table_is_not_given_to_the_change(
    new_owner: str,
    pg_servers: Servers,
    pg_source: MakeSource,
    make_pg_change: MakePgChange,
    tmp_path: Path,
) -> None:
    dsn = pg_source(SCHEMA)
    change = make_pg_change(
        f"ALTER SCHEMA app OWNER TO {new_owner};\n",
        f"ALTER SCHEMA app OWNER TO {schema_owner(dsn)};\n",
        surfaces='writes = ["app"]\n',
    )
    result = rehearse(
        change,
        dsn,
        scratch=pg_servers.scratch,
        legs=[LegName.REVERT],
        policy=forbid(tmp_path, "app.salaries"),
    )
    [leg] = result.legs
    assert leg.verdict is Verdict.FAIL
    assert leg.reason == (
        f"apply failed: statement 1 `ALTER SCHEMA app OWNER TO {new_owner}`: ALTER SCHEMA app "
        f"OWNER TO {new_owner} is not rehearsed: the schema holds forbidden object(s) "
        "app.salaries, and a schema's owner may drop anything in it, so the change role is "
        "not given the schema"
    )
