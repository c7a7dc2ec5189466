"""rollproof.toml's governed part: ladder, operators, executor, gates, CI scope; unknown keys refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rollproof.core.policy import (
    DEFAULT_GATES,
    DEFAULT_LANES,
    Check,
    Gate,
    LaneKind,
    PolicyError,
    load_policy,
)
from rollproof.governance.keys import generate_key


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    for name in ("alice", "bob", "executor"):
        generate_key(tmp_path / "keys", name=name)
    return tmp_path / "keys"


GOVERNED = """
[governance]
executor = "keys/executor.pub"
[operators]
alice = "keys/alice.pub"
"""


def test_a_policy_without_governance_is_not_governed(tmp_path: Path) -> None:
    policy = load_policy(_write(tmp_path, '[production]\nsources = ["sqlite:///p.db"]\n'))
    assert policy.governance is None
    with pytest.raises(Exception, match="needs a governed policy"):
        policy.governed()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rollproof.toml"
    path.write_text(text)
    return path


def test_defaults_ladder_gates_ledger_and_an_undeclared_ci_scope(
    tmp_path: Path, keys: Path
) -> None:
    gov = load_policy(_write(tmp_path, GOVERNED)).governed()
    assert gov.lanes == DEFAULT_LANES
    assert [(x.name, x.kind, x.grant, x.evidence, x.signatures) for x in gov.lanes] == [
        ("rehearsal-clone", LaneKind.CLONE, False, False, 1),
        ("production-shaped-clone", LaneKind.CLONE, True, True, 1),
        ("production-apply", LaneKind.PRODUCTION, True, True, 2),
        ("cutover", LaneKind.PRODUCTION, True, True, 2),
    ]
    assert dict(gov.gates) == dict(DEFAULT_GATES)
    assert gov.ledger == str(tmp_path.resolve() / ".rollproof" / "ledger.db")
    assert gov.ci_triggers is None  # the ci-scope check will be UNKNOWN
    assert gov.operator_name(gov.operators["alice"].key_id) == "alice"


def test_a_custom_ladder_inline_operator_key_and_ci_scope(tmp_path: Path, keys: Path) -> None:
    pem = (keys / "bob.pub").read_text()
    text = f'''
[forbidden]
files = ["deploy/*.sh"]
[governance]
executor = "keys/executor.pub"
ledger = "state/ledger.db"
[operators]
bob = """{pem}"""
[[lanes]]
name = "clone"
allow_unknown = ["ci-scope", "no-production-execution"]
[[lanes]]
name = "prod"
kind = "production"
signatures = 1
[gates]
cutover = "prod"
[ci]
triggers = [".github/workflows/deploy.yml"]
'''
    policy = load_policy(_write(tmp_path, text))
    gov = policy.governed()
    assert [(x.name, x.kind, x.grant, x.evidence) for x in gov.lanes] == [
        ("clone", LaneKind.CLONE, False, False),
        ("prod", LaneKind.PRODUCTION, True, True),
    ]
    assert gov.lanes[0].allow_unknown == (Check.CI_SCOPE, Check.NO_PRODUCTION_EXECUTION)
    assert gov.gates[Gate.CUTOVER] == "prod"
    assert gov.operator_name(gov.operators["bob"].key_id) == "bob"
    assert gov.ledger.endswith("state/ledger.db")
    # CI/deploy triggers are forbidden files to rehearsals.
    assert policy.forbidden_files == ("deploy/*.sh", ".github/workflows/deploy.yml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("[governance]\nledgr = 'x'\n", "governance.ledgr: unknown key", id="typo"),
        pytest.param("[operators]\na = 'k'\n", "needs a [governance] table", id="no-governance"),
        pytest.param(
            GOVERNED + "[gates]\ndeploy = 'cutover'\n", "gates.deploy: unknown key", id="gate"
        ),
        pytest.param(GOVERNED + "[gates]\ncutover = 'moon'\n", "must name a lane", id="gate-lane"),
        pytest.param(GOVERNED + "[ci]\ntrigger = []\n", "ci.trigger: unknown key", id="ci-key"),
        pytest.param(
            GOVERNED + "[[lanes]]\nname = 'a'\ngrants = true\n",
            "lanes[0].grants: unknown key",
            id="lane-key",
        ),
        pytest.param(
            GOVERNED + "[[lanes]]\nname = 'a'\nevidence = true\n",
            "the first lane must be a clone lane that needs no evidence",
            id="first-lane-evidence",
        ),
        pytest.param(
            GOVERNED + "[[lanes]]\nname = 'a'\n[[lanes]]\nname = 'b'\ngrant = false\n",
            "lanes.b.grant: every lane past the first needs a grant",
            id="ungranted-lane",
        ),
        pytest.param(
            GOVERNED
            + "[[lanes]]\nname = 'a'\n[[lanes]]\nname = 'p'\nkind = 'production'\n"
            + "[[lanes]]\nname = 'c'\n",
            "a clone lane cannot sit above a production lane",
            id="clone-above-production",
        ),
        pytest.param(
            GOVERNED + "[[lanes]]\nname = 'a'\n[[lanes]]\nname = 'a'\n",
            "appears twice",
            id="duplicate-lane",
        ),
        pytest.param(
            GOVERNED + "[[lanes]]\nname = 'a'\nsignatures = 0\n", "must be 1 to 16", id="sigs"
        ),
        pytest.param(
            GOVERNED + "[[lanes]]\nname = 'a'\nallow_unknown = ['everything']\n",
            "must be a list of check names",
            id="unknown-check",
        ),
        pytest.param(
            "[governance]\nexecutor = 'keys/missing.pub'\n", "no such key file", id="missing-key"
        ),
        pytest.param(
            "[governance]\nexecutor = 'keys/executor.pub'\n[operators]\nme = 'keys/executor.pub'\n",
            "the executor cannot be an operator",
            id="executor-as-operator",
        ),
        pytest.param(GOVERNED + "bob = 'keys/alice.pub'\n", "listed twice", id="one-key-two-names"),
        pytest.param(
            "[governance]\nledger = 'mysql://x/y'\n", "path or a postgresql:// DSN", id="ledger"
        ),
    ],
)
def test_bad_governed_policies_are_refused_with_file_and_key(
    tmp_path: Path, keys: Path, text: str, message: str
) -> None:
    with pytest.raises(PolicyError, match=re.escape(message)):
        load_policy(_write(tmp_path, text))
