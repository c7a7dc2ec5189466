"""Secret redaction for everything that leaves the process: packet files and printed lines.

No secret is ever written to a packet or printed (DESIGN, Exit codes). Every DSN that goes into
evidence passes through `redact_dsn`, and every recorded command line through `redact_argv`.

Rules:
* `scheme://user:password@host/...` loses the password entirely: `scheme://user@host/...`.
  Nothing stands in for it, so a recorded command still works where the password comes from
  the usual places (PGPASSWORD, ~/.pgpass, a secrets manager) and nothing hints at its length.
* Query parameters that carry secrets (`password`, `passwd`, `pwd`, `sslpassword`, `token`,
  `secret`) are removed.
* Anything without `://` (SQLite paths, plain words) is returned unchanged.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Sequence

SECRET_PARAMS = frozenset({"password", "passwd", "pwd", "sslpassword", "token", "secret"})
_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#]*)@")


def _is_secret_param(part: str) -> bool:
    return urllib.parse.unquote_plus(part.partition("=")[0]).lower() in SECRET_PARAMS


def redact_dsn(dsn: str) -> str:
    """`dsn` without any password (see the module docstring)."""
    if "://" not in dsn:
        return dsn
    out = dsn
    m = _USERINFO.match(out)
    if m is not None:
        user = m.group("userinfo").split(":", 1)[0]
        out = m.group("scheme") + (user + "@" if user else "") + out[m.end() :]
    if "?" in out:
        base, _, rest = out.partition("?")
        query, hash_, fragment = rest.partition("#")
        kept = [part for part in query.split("&") if not _is_secret_param(part)]
        out = base + ("?" + "&".join(kept) if kept else "") + hash_ + fragment
    return out


def redact_argv(argv: Sequence[str]) -> list[str]:
    """A command line with every DSN-looking argument (also `--opt=DSN`) redacted."""
    out = []
    for arg in argv:
        if arg.startswith("--") and "=" in arg:
            opt, _, value = arg.partition("=")
            out.append(opt + "=" + redact_dsn(value))
        else:
            out.append(redact_dsn(arg))
    return out


def secrets_in(args: Iterable[str]) -> set[str]:
    """The passwords and secret parameter values found in DSN-looking `args`, so that a line
    about to be printed can be scrubbed of them even when a lower layer echoed its input."""
    found: set[str] = set()
    for arg in args:
        value = arg.partition("=")[2] if arg.startswith("--") and "=" in arg else arg
        if "://" not in value:
            continue
        m = _USERINFO.match(value)
        if m is not None and ":" in m.group("userinfo"):
            found.add(m.group("userinfo").split(":", 1)[1])
            found.add(urllib.parse.unquote(m.group("userinfo").split(":", 1)[1]))
        query = value.partition("?")[2].partition("#")[0]
        for part in query.split("&"):
            if _is_secret_param(part):
                raw = part.partition("=")[2]
                found.update({raw, urllib.parse.unquote_plus(raw)})
    return {s for s in found if s}


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of each secret replaced by `***` (longest first)."""
    for s in sorted(secrets, key=len, reverse=True):
        text = text.replace(s, "***")
    return text
