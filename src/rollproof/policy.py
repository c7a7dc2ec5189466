"""The policy file, `rollproof.toml`: registered production sources and forbidden surfaces.

    [production]
    sources = ["sqlite:///data/prod.db"]      # only ever opened read-only by a rehearsal

    [forbidden]
    objects = ["payments", "secret_*"]        # tables, views, triggers, indexes: names or globs
    files = [".github/workflows/**", "deploy/*.sh"]   # globs relative to this file
    env = ["AWS_SECRET_ACCESS_KEY"]           # never passed to a subprocess rollproof starts

    [enforcement]
    undeclared_reads = "deny"                 # or "report": allow, but record, undeclared reads

Unknown tables and keys are refused with the file and key named: a misspelt `[forbiden]` must
not silently forbid nothing. A missing policy file is an empty policy (nothing registered,
nothing forbidden), and the report says which policy, if any, was in force.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from rollproof.canonical import sha256_hex
from rollproof.errors import UsageError

POLICY_FILE = "rollproof.toml"


class ReadMode(StrEnum):
    DENY = "deny"
    REPORT = "report"


class PolicyError(UsageError):
    def __init__(self, path: str, message: str, key: str | None = None) -> None:
        self.path = path
        self.key = key
        super().__init__(f"{path}: {key}: {message}" if key else f"{path}: {message}")


_SECTIONS: Mapping[str, frozenset[str]] = {
    "production": frozenset({"sources"}),
    "forbidden": frozenset({"objects", "files", "env"}),
    "enforcement": frozenset({"undeclared_reads"}),
}


@dataclass(frozen=True, slots=True)
class Policy:
    path: Path | None
    sha256: str | None
    production_sources: tuple[str, ...] = ()
    forbidden_objects: tuple[str, ...] = ()
    forbidden_files: tuple[str, ...] = ()
    forbidden_env: tuple[str, ...] = ()
    undeclared_reads: ReadMode = ReadMode.DENY

    @property
    def directory(self) -> Path:
        return Path.cwd() if self.path is None else self.path.parent

    def describe(self) -> dict[str, Any]:
        return {"path": None if self.path is None else str(self.path), "sha256": self.sha256}


EMPTY_POLICY = Policy(path=None, sha256=None)


def load_policy(path: Path | None = None) -> Policy:
    """Load `path`, or `./rollproof.toml` if it exists, or the empty policy."""
    if path is None:
        default = Path(POLICY_FILE)
        if not default.is_file():
            return EMPTY_POLICY
        path = default
    shown = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise PolicyError(shown, "no such file") from None
    except OSError as e:
        raise PolicyError(shown, f"cannot read: {e.strerror}") from e
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise PolicyError(shown, f"invalid TOML: {e}") from e

    for section, value in data.items():
        if section not in _SECTIONS:
            raise PolicyError(shown, "unknown section", section)
        if not isinstance(value, dict):
            raise PolicyError(shown, "must be a table", section)
        for key in value:
            if key not in _SECTIONS[section]:
                raise PolicyError(shown, "unknown key", f"{section}.{key}")

    def strings(section: str, key: str) -> tuple[str, ...]:
        value = data.get(section, {}).get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise PolicyError(shown, "must be a list of non-empty strings", f"{section}.{key}")
        return tuple(value)

    mode = data.get("enforcement", {}).get("undeclared_reads", "deny")
    if mode not in {m.value for m in ReadMode}:
        raise PolicyError(shown, 'must be "deny" or "report"', "enforcement.undeclared_reads")
    return Policy(
        path=path.resolve(),
        sha256=sha256_hex(raw),
        production_sources=strings("production", "sources"),
        forbidden_objects=strings("forbidden", "objects"),
        forbidden_files=strings("forbidden", "files"),
        forbidden_env=strings("forbidden", "env"),
        undeclared_reads=ReadMode(mode),
    )
