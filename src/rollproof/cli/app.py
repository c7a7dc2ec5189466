"""The `rollproof` command: the group, and `main`'s one `try`.

The cli package is the only code that prints or exits. Its command modules (evidence, ledger,
grants, demo) are thin layers over library functions: a command parses its options (declared
once in `options`), calls one library function and prints the result through `console`, where
the consoles are opened.

Commands are loaded lazily (`LazyGroup`, `COMMANDS`): `rollproof X` imports the module that
defines X and nothing of the others, and the consoles (rich) only when something is printed, so
`rollproof --version` loads click and little else (tests/test_startup_imports.py holds each
command to a module budget).

`main` holds the one `try` that turns a RollproofError into its documented exit code and one
line on stderr, and anything unexpected into exit 70, never 0 and never a traceback (unless
--debug asks for one).
"""

from __future__ import annotations

import importlib
import sys
import traceback

import click

from rollproof.core.errors import ExitCode, RollproofError
from rollproof.core.redact import scrub, secrets_in
from rollproof.core.version import __version__

COMMANDS: dict[str, str] = {
    "demo": "demo",
    "rehearse": "evidence",
    "validate": "evidence",
    "validator-hash": "evidence",
    "rerun": "evidence",
    "key": "evidence",
    "surfaces": "evidence",
    "fingerprint": "evidence",
    "grant": "grants",
    "preflight": "grants",
    "decide": "grants",
    "status": "grants",
    "init": "ledger",
    "ledger": "ledger",
    "ticket": "ledger",
    "blocker": "ledger",
    "gc": "maintenance",
    "rehearse-dir": "migrations",
    "plan": "migrations",
    "policy": "policy",
    "probe": "probe",
}
"""Each command and the module of `rollproof.cli` that defines it, imported only when the
command runs (or `--help` lists it): a command pays for its own imports, not for every other
command's (psycopg, sqlglot, cryptography, governance...)."""


def load_all() -> None:
    """Import every command module (a name not in COMMANDS may be defined by one of them)."""
    for module in sorted(set(COMMANDS.values())):
        importlib.import_module(f"rollproof.cli.{module}")


class LazyGroup(click.Group):
    """The top-level group: commands are registered by their modules, imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            module = COMMANDS.get(cmd_name)
            if module is None:
                load_all()
            else:
                importlib.import_module(f"rollproof.cli.{module}")
        return self.commands.get(cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rollproof")
@click.option("--debug", is_flag=True, help="Show a traceback for unexpected errors.")
def cli(debug: bool) -> None:
    """Prove a database change can be undone before it may run against production.

    Exit codes: 0 passed, 1 a check failed, 2 bad input, 3 held (isolation not proven,
    result unknown, HOLD, a grant missing or refused), 4 environment problem, 70 internal error.
    """


def one_line(text: str) -> str:
    """`text` as one line: a newline, NUL or other control character a user's input carried into
    a message is shown escaped (`\\n`), so an error is always exactly one line on stderr."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (tests call this directly)."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    # A password given in a DSN is scrubbed from every error line, even one a lower layer
    # built by echoing its input.
    secrets = secrets_in(args)

    def fail(line: str, code: int, *, trace: bool = False) -> int:
        """One line on stderr (after the traceback, if asked for); `code` is the exit code."""
        from rollproof.cli.console import err, show

        if trace and debug:
            show(scrub(traceback.format_exc(), secrets), end="", console=err)
        show(one_line(scrub(line, secrets)), console=err)
        return int(code)

    try:
        rv = cli.main(
            args=args, prog_name="rollproof", standalone_mode=False, obj={"argv": list(args)}
        )
        return int(rv or 0)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else int(ExitCode.INTERNAL)
    except click.exceptions.NoArgsIsHelpError as e:
        return fail(e.format_message(), ExitCode.USAGE)
    except click.ClickException as e:
        return fail(f"rollproof: error: {e.format_message()}", ExitCode.USAGE)
    except (click.exceptions.Abort, KeyboardInterrupt):
        return fail("rollproof: interrupted", 130)
    except RollproofError as e:
        return fail(f"rollproof: {e}", e.exit_code, trace=True)
    except Exception as e:
        return fail(
            f"rollproof: internal error ({type(e).__name__}: {e}); "
            "please report it; rerun with --debug for a traceback",
            ExitCode.INTERNAL,
            trace=True,
        )
