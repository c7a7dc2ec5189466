"""The rollproof error tree: every failure a user can cause, each with its exit code.

    RollproofError                    (exit 70 unless a subclass says otherwise)
    ├── UsageError                    exit 2  bad input or usage; one clear line, fail closed
    │   ├── ChangeError               a change.toml that is missing, malformed or incomplete
    │   └── SourceError               a DSN rollproof cannot use
    ├── CheckFailedError              exit 1  an invariant, a leg or validation failed
    ├── HeldError                     exit 3  held or blocked: isolation not proven, HOLD in force
    │   ├── IsolationError            the clone's isolation from the source is not proven
    │   └── ScopeNotReadyError        undeclared objects, or SQL whose scope is unknown
    ├── EnvironmentProblemError       exit 4  a database unreachable, a needed tool missing
    └── InternalError                 exit 70 a bug in rollproof; never reported as success

Errors raised while parsing untrusted bytes are translated into one of these at the boundary
that read them (`raise ChangeError(...) from e`), so `cli.main` needs exactly one `try`.
Programming mistakes by a library caller (a wrong argument type, a call out of order) raise
`ValueError`/`RuntimeError` instead and reach the user as an internal error (exit 70).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The documented process exit codes (docs/exit-codes.md)."""

    OK = 0
    CHECK_FAILED = 1
    USAGE = 2
    HELD = 3
    ENVIRONMENT = 4
    INTERNAL = 70


class RollproofError(Exception):
    """Root of every error rollproof raises on purpose."""

    exit_code: ExitCode = ExitCode.INTERNAL


class UsageError(RollproofError):
    """Bad input or usage: rollproof refuses to guess."""

    exit_code = ExitCode.USAGE


class ChangeError(UsageError):
    """A change definition that cannot be loaded; names the file and, where known, the key."""

    def __init__(self, path: str, message: str, key: str | None = None) -> None:
        self.path = path
        self.key = key
        where = f"{path}: {key}" if key else path
        super().__init__(f"{where}: {message}")


class SourceError(UsageError):
    """A source DSN that rollproof cannot use."""


class CheckFailedError(RollproofError):
    """A check ran and failed: an invariant, a leg, or validation of evidence."""

    exit_code = ExitCode.CHECK_FAILED


class HeldError(RollproofError):
    """Rollproof will not go on: something that must be proven first is not."""

    exit_code = ExitCode.HELD


class IsolationError(HeldError):
    """The clone is not proven isolated from the source; names each item that failed."""

    def __init__(self, failed: list[str]) -> None:
        self.failed = failed
        super().__init__("isolation not proven: " + "; ".join(failed))


class ScopeNotReadyError(HeldError):
    """The change touches objects it did not declare, or SQL whose scope cannot be read."""

    def __init__(self, status: str, problems: list[str]) -> None:
        self.status = status
        self.problems = problems
        super().__init__(
            f"surface scoping {status}: "
            + "; ".join(problems)
            + " (declare them, or pass --allow-undeclared to rehearse anyway, on the record)"
        )


class EnvironmentProblemError(RollproofError):
    """The environment is missing something: a database is unreachable or a tool is absent."""

    exit_code = ExitCode.ENVIRONMENT


class InternalError(RollproofError):
    """A bug in rollproof. Reported with exit 70, never as success."""

    exit_code = ExitCode.INTERNAL
