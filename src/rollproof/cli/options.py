"""What the commands share to read their input: options declared once, the policy, the clock.

Each factory returns a click decorator; the help text that differs from command to command is
its argument, so every command's --help reads as it always has.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rollproof.core.policy import Policy

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

PATH = click.Path(path_type=Path)


def path_option(*decls: str, **attrs: Any) -> Decorator:
    """An option whose value is a file or directory path."""
    return click.option(*decls, type=PATH, **attrs)


def policy_option(help: str = "Policy file (default: ./rollproof.toml).") -> Decorator:
    """`--policy FILE`, passed as `policy_path`."""
    return path_option("--policy", "policy_path", default=None, help=help)


def json_option(help: str) -> Decorator:
    """`--json`, passed as `as_json`: print the result as JSON (`console.render`)."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def key_option(help: str) -> Decorator:
    """`--key OPKEY` (required), passed as `key_path`: an operator's private key."""
    return path_option("--key", "key_path", required=True, metavar="OPKEY", help=help)


def source_option(help: str | None = None) -> Decorator:
    """`--source DSN` (required): the database a change is meant for."""
    return click.option("--source", required=True, metavar="DSN", help=help)


def change_option(*, required: bool) -> Decorator:
    """`--change CHANGE`, passed as `change_id`."""
    if required:
        return click.option("--change", "change_id", required=True, metavar="CHANGE")
    return click.option("--change", "change_id", default=None, metavar="CHANGE")


def out_option(help: str) -> Decorator:
    """`--out PATH`, optional: where a command writes what it makes."""
    return path_option("--out", default=None, help=help)


def evidence_option(help: str) -> Decorator:
    """`--evidence PACKET`: a validated evidence packet."""
    return path_option("--evidence", default=None, metavar="PACKET", help=help)


def scratch_option(help: str) -> Decorator:
    """`--scratch DSN`: the PostgreSQL server a rehearsal clones into."""
    return click.option("--scratch", metavar="DSN", default=None, help=help)


def workdir_option() -> Decorator:
    """`--workdir DIR`: where a rehearsal makes its private clone directory."""
    return path_option(
        "--workdir",
        default=None,
        help="Where to make the private clone directory (default: the system temp dir).",
    )


def id_argument(name: str) -> Decorator:
    """The ID of a ticket or blocker, passed as `name`."""
    return click.argument(name, metavar="ID")


def read_grant(path: Path) -> bytes:
    """The bytes of the grant file a --grant names."""
    from rollproof.core.errors import UsageError

    try:
        return path.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read grant {path}: {e.strerror}") from e


def now() -> datetime:
    """The clock every command passes its library call."""
    return datetime.now(UTC)


def governed_policy(policy_path: Path | None) -> Policy:
    """The --policy file (default: ./rollproof.toml), which must be governed."""
    from rollproof.core.policy import load_policy

    policy = load_policy(policy_path)
    policy.governed()  # a usage error naming what is missing
    return policy
