"""The package layout holds: import contracts pass and can fail, no cycles, a closed validator.

docs/architecture.md draws the layers; pyproject.toml's [tool.importlinter] states them as
contracts. These tests prove the contracts are checked for real (a planted forbidden import
breaks exactly the contract that forbids it), that the validator package loads no engine and no
database driver, that no two modules import each other in a cycle, and that a module over 600
lines says at its top why it is long.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

import rollproof

REPO = Path(__file__).resolve().parent.parent
PACKAGE = Path(rollproof.__file__).resolve().parent
MAX_LINES = 600
LONG_REASON = "Longer than 600 lines because"


def _lint_imports(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports_command;"
            " sys.exit(lint_imports_command())",
            "--config",
            str(REPO / "pyproject.toml"),
            "--no-cache",
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def _contract_lines(output: str) -> dict[str, str]:
    """`{contract name: KEPT|BROKEN}` from lint-imports' summary."""
    out: dict[str, str] = {}
    for line in output.splitlines():
        for status in ("KEPT", "BROKEN"):
            if line.endswith(" " + status):
                out[line.removesuffix(" " + status)] = status
    return out


def _contract_names() -> dict[str, str]:
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))
    return {c["id"]: c["name"] for c in config["tool"]["importlinter"]["contracts"]}


def test_every_contract_is_kept_by_the_code_as_it_is() -> None:
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 4 kept, 0 broken." in result.stdout


@pytest.mark.parametrize(
    ("module", "planted", "contract"),
    [
        pytest.param("core/model.py", "import sqlite3", "core-pure", id="core-imports-sqlite3"),
        pytest.param(
            "core/canonical.py", "import rollproof.rehearse.flow", "core-pure", id="core-up"
        ),
        pytest.param(
            "verify/validate.py",
            "import rollproof.engines.base",
            "verify-closed",
            id="verify-engine",
        ),
        pytest.param("verify/findings.py", "import psycopg", "verify-closed", id="verify-psycopg"),
        pytest.param(
            "engines/base.py",
            "import rollproof.governance.events",
            "engines-below",
            id="engine-gov",
        ),
        pytest.param(
            "rehearse/flow.py", "import rollproof.governance.lanes", "layers", id="rehearse-up"
        ),
    ],
)
def test_a_planted_forbidden_import_breaks_its_contract(
    tmp_path: Path, module: str, planted: str, contract: str
) -> None:
    copy = tmp_path / "src" / "rollproof"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / module
    target.write_text(target.read_text("utf-8") + f"\n{planted}  # planted by the test\n")
    result = _lint_imports(tmp_path, pythonpath=tmp_path / "src")
    statuses = _contract_lines(result.stdout)
    name = _contract_names()[contract]
    assert result.returncode == 1, result.stdout + result.stderr
    assert statuses[name] == "BROKEN"


def test_the_unmodified_copy_keeps_every_contract(tmp_path: Path) -> None:
    """The twin of the planted-import test: the same copy without the plant is clean, so a
    BROKEN above comes from the planted line and not from copying the package."""
    shutil.copytree(
        PACKAGE, tmp_path / "src" / "rollproof", ignore=shutil.ignore_patterns("__pycache__")
    )
    result = _lint_imports(tmp_path, pythonpath=tmp_path / "src")
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(_contract_lines(result.stdout).values()) == {"KEPT"}


def test_the_validator_loads_no_engine_rehearsal_governance_or_driver() -> None:
    code = (
        "import json, sys\n"
        "import rollproof.verify, rollproof.verify.reader, rollproof.verify.validate\n"
        "import rollproof.verify.recompute, rollproof.verify.pin\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = json.loads(out.stdout)
    forbidden_prefixes = (
        "rollproof.engines",
        "rollproof.rehearse",
        "rollproof.governance",
        "rollproof.evidence",
        "rollproof.surfaces",
        "rollproof.cli",
        "psycopg",
        "apsw",
        "sqlite3",
        "_sqlite3",
        "pglast",
        "sqlglot",
    )
    assert [m for m in loaded if m.startswith(forbidden_prefixes)] == []
    assert "rollproof.verify.validate" in loaded  # the probe did load the validator


def _strongly_connected(graph: grimp.ImportGraph) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return out


def test_no_two_modules_import_each_other_in_a_cycle() -> None:
    graph = grimp.build_graph("rollproof")
    assert _strongly_connected(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    """Twin of the test above: a graph with a planted cycle is reported."""
    graph = grimp.ImportGraph()
    for a, b in [("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")]:
        graph.add_import(importer=a, imported=b)
    assert _strongly_connected(graph) == [["p.a", "p.b", "p.c"]]


def test_a_long_module_says_why_at_its_top() -> None:
    unexplained = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text("utf-8")
        if text.count("\n") <= MAX_LINES:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        if LONG_REASON not in doc:
            unexplained.append(str(path.relative_to(PACKAGE)))
    assert unexplained == []
