"""PostgreSQL client programs: finding them, running them, and the ephemeral scratch cluster.

`pg_dump`, `pg_restore`, `initdb` and `pg_ctl` are the one place rollproof shells out: they are
the only complete implementations of what they do. They run with list arguments (no shell), a
password only in their environment (never in argv, which `ps` shows to everyone), and every
line they print passes through `scrub` before it reaches a progress callback or an error.

The ephemeral cluster lives in a private directory (mode 0700, made by the session), listens
only on a unix socket in that directory (no TCP), and is stopped and removed when the
rehearsal ends unless the clone is kept. `initdb` refuses to run as root; rollproof says so
before trying, and asks for a scratch server instead.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rollproof.core.errors import EnvironmentProblemError
from rollproof.core.redact import scrub, secrets_in

EPHEMERAL = "ephemeral"
ROOT_MESSAGE = (
    "--scratch ephemeral starts a private PostgreSQL cluster with initdb, which refuses to "
    "run as root; run rollproof as an ordinary user, or name a scratch server that is not the "
    "source: --scratch postgresql://user@scratch-host/postgres"
)
_PROGRESS = re.compile(r"(dumping contents of table|processing data for table)\s*(.*)$")


def find_tool(name: str) -> str:
    """The path of a PostgreSQL program: PATH, then `pg_config --bindir`, then Debian's layout."""
    found = shutil.which(name)
    if found:
        return found
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            bindir = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            bindir = ""
        candidate = Path(bindir) / name
        if bindir and candidate.is_file():
            return str(candidate)
    versions = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    if versions:
        return str(versions[-1])
    raise EnvironmentProblemError(
        f"the PostgreSQL program {name} was not found (install the PostgreSQL client and "
        "server packages, e.g. `apt-get install postgresql`)"
    )


@dataclass(frozen=True, slots=True)
class ToolRun:
    returncode: int
    errors: tuple[str, ...]
    """Error and warning lines the program printed (secrets scrubbed)."""

    def failure(self, label: str) -> str | None:
        """Why the program failed, in one line, or None when it exited 0. A program killed
        by a signal (the OOM killer, an operator) says so: it is the machine, not the input."""
        if self.returncode == 0:
            return None
        if self.returncode < 0:
            try:
                name = signal.Signals(-self.returncode).name
            except ValueError:
                name = f"signal {-self.returncode}"
            return f"{label} was killed by {name} (out of memory, or stopped by someone)"
        return f"{label} failed (exit {self.returncode}): " + (
            "; ".join(self.errors[-3:]) or "no message"
        )


def run_tool(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    secrets: Iterable[str],
    progress: Callable[[str], None],
    label: str,
) -> ToolRun:
    """Run a client program, relaying its per-table progress and keeping its error lines."""
    secret_set = {s for s in secrets if s}
    if secrets_in(argv) or any(arg == s for s in secret_set for arg in argv):
        # A secret on a command line is visible to every local user through `ps`. Checked by
        # field (an argument holding a DSN password, or the secret as a whole argument), not by
        # substring: a one-letter password is a substring of nearly every argument.
        raise RuntimeError(f"refusing to put a secret on the command line of {label}")
    errors: list[str] = []
    items = 0
    try:
        proc = subprocess.Popen(
            list(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
    except OSError as e:
        raise EnvironmentProblemError(f"cannot run {label}: {e.strerror}") from e
    with proc:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = scrub(raw.rstrip("\n"), secret_set)
            m = _PROGRESS.search(line)
            if m is not None:
                items += 1
                progress(f"{label}: {m.group(1)} {m.group(2)} (table {items})")
            elif any(w in line.lower() for w in ("error", "warning", "fatal")):
                errors.append(line)
    return ToolRun(proc.returncode, tuple(errors))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class EphemeralCluster:
    """A private cluster: data in `directory/pgdata`, socket in `directory`, no TCP."""

    directory: Path
    port: int
    superuser: str = "rollproof"

    @property
    def data(self) -> Path:
        return self.directory / "pgdata"

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.superuser}@/postgres?host={self.directory}&port={self.port}"

    def stop(self) -> None:
        if not (self.data / "postmaster.pid").exists():
            return
        subprocess.run(
            [find_tool("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
            timeout=60,
        )


def start_ephemeral(
    directory: Path, progress: Callable[[str], None], env: Mapping[str, str] | None = None
) -> EphemeralCluster:
    """initdb + pg_ctl start in `directory` (which must be private: mode 0700, ours).

    `env` is the environment the two programs get (forbidden variables already removed).
    """
    if os.geteuid() == 0:
        raise EnvironmentProblemError(ROOT_MESSAGE)
    initdb, pg_ctl = find_tool("initdb"), find_tool("pg_ctl")
    cluster = EphemeralCluster(directory=directory, port=free_port())
    progress("starting a private PostgreSQL cluster (initdb)")
    init = subprocess.run(
        [
            initdb,
            "-D",
            str(cluster.data),
            "-U",
            cluster.superuser,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env=None if env is None else dict(env),
    )
    if init.returncode != 0:
        raise EnvironmentProblemError(
            "initdb failed: " + (init.stderr.strip().splitlines() or ["no message"])[-1]
        )
    with (cluster.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
        # Socket only, in the private directory; durability is pointless for a throwaway clone.
        conf.write(
            "\n# rollproof ephemeral scratch cluster\n"
            "listen_addresses = ''\n"
            f"unix_socket_directories = '{directory}'\n"
            f"port = {cluster.port}\n"
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
        )
    started = subprocess.run(
        [pg_ctl, "-D", str(cluster.data), "-l", str(directory / "server.log"), "-w", "start"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=None if env is None else dict(env),
    )
    if started.returncode != 0:
        log = directory / "server.log"
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
        raise EnvironmentProblemError(
            "the private PostgreSQL cluster did not start: " + (" ".join(tail) or "no message")
        )
    return cluster
