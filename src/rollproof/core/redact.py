"""Secret redaction for everything that leaves the process: packet files and printed lines.

No secret is ever written to a packet or printed (DESIGN, Exit codes). Every DSN that goes into
evidence passes through `redact_dsn`, every recorded command line through `redact_argv`, and
every line printed from an error (ours, psycopg's, libpq's, pg_dump's) through `scrub`.

Redaction is by *field*, never by characters. A password is removed where it stands -- in a
DSN's userinfo, in a secret query parameter, in a libpq `keyword=value` pair -- and the rest of
the text is left byte for byte as it was. Replacing each occurrence of the password string
anywhere in a message (what this module used to do) is an oracle: with the password `r`, the
line `rollproof: source ...` came out as `***ollp***oof: sou***ce ...`, which spells it out.

Fields (the parsing follows libpq's, `fe-connect.c`, and errs towards removing more):
* URL DSNs, `scheme://user:password@host/db?k=v&...`, any scheme. The userinfo ends at the last
  `@` before the first `/` or the first `?` (libpq scans for `@` up to `/` only, so
  `user:pw?x@host` has the password `pw?x`; taking the last `@` also covers an unencoded `@` in
  the password). Query parameters named `password`, `passwd`, `pwd`, `sslpassword`, `token` or
  `secret` (percent-encoded or not, any case) are secret; a value runs to the next `&` -- libpq
  knows no fragment, so `?password=a#b` has the password `a#b`.
* libpq keyword/value DSNs, `host=db password=secret` or `password='a b \\' c'`: the value of
  `password`/`sslpassword` (and the other names above) per libpq's quoting rules -- unquoted it
  runs to the next unescaped white space, quoted to the next unescaped `'`; `\\` escapes one
  character in both.
* The libpq parse errors that quote a piece of a DSN (`invalid percent-encoded token: "..."`
  and the like): the quoted piece.

Two ways of redacting a field:
* `redact_dsn` / `redact_argv` (packets, recorded commands) drop it with its key: nothing stands
  in for the password, so a recorded command still works where the password comes from the
  usual places (PGPASSWORD, ~/.pgpass, a secrets manager) and nothing hints at its length.
  `scheme://user:pw@host` becomes `scheme://user@host`, `host=h password=pw` becomes `host=h`.
* `redact_text` / `scrub` (lines for a person to read) keep the key and replace the value by the
  fixed marker `REDACTED`, whatever its length: `scheme://user:***@host`, `password=***`.

In free text a field is found wherever it stands (also `PGPASSWORD=...`); a URL there ends at
the next white space, so an unencoded space in a URL password, or an unencoded `?` followed by
`/`, cannot be told apart from the text around it (libpq refuses such URLs anyway). Anything
else (SQLite paths, plain words) is returned unchanged.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence

SECRET_PARAMS = frozenset({"password", "passwd", "pwd", "sslpassword", "token", "secret"})
"""Query parameters and libpq keywords whose value is a secret."""

REDACTED = "***"
"""What stands in for a secret value in a line printed for a person (never in a packet)."""

MIN_SECRET_TOKEN = 12
"""The shortest known secret `scrub` removes from free text (see `scrub`)."""

_SPACE = " \t\n\r\f\v"  # C isspace(), what libpq skips
_WS = "[ \\t\\n\\r\\f\\v]"
_URL_AT_START = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_KEYWORD_NAMES = "|".join(sorted({*SECRET_PARAMS, "pgpassword"}, key=len, reverse=True))
# libpq errors that quote a piece of the DSN they could not parse (which may be the password).
_ECHOES = (
    r'invalid percent-encoded token: "',
    r'forbidden value %00 in percent-encoded value: "',
    r'missing "=" after "',
)
_TEXT_FIELD = re.compile(
    r"(?P<url>(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*://)"
    rf"|(?P<kw>(?<![A-Za-z0-9_])(?:{_KEYWORD_NAMES}){_WS}*={_WS}*)"
    rf"|(?P<echo>{'|'.join(re.escape(e) for e in _ECHOES)})",
    re.IGNORECASE,
)
_CONNINFO_PAIR = re.compile(rf"(?P<lead>{_WS}*)(?P<name>[^ \t\n\r\f\v=]+){_WS}*={_WS}*")
_CONNINFO_START = re.compile(rf"{_WS}*[A-Za-z_][A-Za-z0-9_]*{_WS}*=")
_NEXT_PAIR = re.compile(rf"{_WS}+[A-Za-z_][A-Za-z0-9_]*{_WS}*=")


def _is_secret_key(key: str) -> bool:
    return key.lower() in SECRET_PARAMS


def _is_secret_param(part: str) -> bool:
    return _is_secret_key(urllib.parse.unquote_plus(part.partition("=")[0]))


# --- URL DSNs ----------------------------------------------------------------------------------


def _split_url(url: str) -> tuple[str, str | None, str | None, str, list[str] | None]:
    """`url` as (scheme://, user, password, host-and-path, query parts); see the module doc."""
    i = url.index("://") + 3
    scheme, rest = url[:i], url[i:]
    slash, qmark = rest.find("/"), rest.find("?")
    at = max(
        rest.rfind("@", 0, slash if slash >= 0 else len(rest)),
        rest.rfind("@", 0, qmark if qmark >= 0 else len(rest)),
    )
    user: str | None = None
    password: str | None = None
    if at >= 0:
        user, colon, pw = rest[:at].partition(":")
        password = pw if colon else None
        rest = rest[at + 1 :]
    middle, qmark_, query = rest.partition("?")
    return scheme, user, password, middle, (query.split("&") if qmark_ else None)


def _redact_url(url: str, marker: str | None) -> str:
    scheme, user, password, middle, query = _split_url(url)
    out = scheme
    if user is not None:
        if password is None:
            out += user + "@"
        elif marker is None:
            out += user + "@" if user else ""
        else:
            out += user + ":" + marker + "@"
    out += middle
    if query is not None:
        if marker is None:
            kept = [p for p in query if not _is_secret_param(p)]
        else:
            kept = [
                p.partition("=")[0] + "=" + marker if _is_secret_param(p) and "=" in p else p
                for p in query
            ]
        if kept or len(kept) == len(query):
            out += "?" + "&".join(kept)
    return out


def _url_secrets(url: str) -> set[str]:
    _, _, password, _, query = _split_url(url)
    raw = [] if password is None else [password]
    raw += [p.partition("=")[2] for p in query or [] if _is_secret_param(p)]
    found: set[str] = set()
    for value in raw:
        found.update({value, urllib.parse.unquote(value), urllib.parse.unquote_plus(value)})
    return found


# --- libpq keyword/value DSNs -------------------------------------------------------------------


def _libpq_value(s: str, i: int) -> tuple[int, str]:
    """The end of the libpq conninfo value starting at `s[i]`, and the value it stands for."""
    n = len(s)
    chars: list[str] = []
    if i < n and s[i] == "'":
        i += 1
        while i < n:
            if s[i] == "\\":
                chars.append(s[i + 1 : i + 2])
                i += 2
            elif s[i] == "'":
                return i + 1, "".join(chars)
            else:
                chars.append(s[i])
                i += 1
        return n, "".join(chars)  # unterminated: libpq refuses it, we take all of it
    while i < n and s[i] not in _SPACE:
        if s[i] == "\\":
            chars.append(s[i + 1 : i + 2])
            i += 2
        else:
            chars.append(s[i])
            i += 1
    return min(i, n), "".join(chars)


def _keyword_fields(s: str, *, whole: bool) -> list[tuple[int, int, int, str]]:
    """(pair start, value start, value end, value) of each secret keyword field in `s`.

    `whole`: `s` is one keyword/value DSN, tokenized as libpq does; a secret value followed by
    something that is not the next `key=` (libpq would refuse the DSN) extends up to it, so an
    unescaped space in a password does not leave its tail behind. Otherwise `s` is free text
    and `key=value` pairs with a secret key are found wherever they stand.
    """
    fields: list[tuple[int, int, int, str]] = []
    i = 0
    if whole:
        while i < len(s) and s[i:].strip(_SPACE):
            m = _CONNINFO_PAIR.match(s, i)
            if m is None:
                break  # not libpq syntax from here on: look for pairs as in free text
            end, value = _libpq_value(s, m.end())
            if _is_secret_key(m.group("name")):
                tail_ok = (
                    not s[end:].strip(_SPACE)
                    or _NEXT_PAIR.match(s, end) is not None
                    or (s[m.end() : m.end() + 1] == "'" and _CONNINFO_START.match(s, end))
                )
                if not tail_ok:
                    nxt = _NEXT_PAIR.search(s, end)
                    end = len(s) if nxt is None else nxt.start()
                    value = s[m.end() : end]
                fields.append((m.start("name"), m.end(), end, value))
            i = end
    for m in _TEXT_FIELD.finditer(s, i):
        if m.group("kw") is not None:
            end, value = _libpq_value(s, m.end())
            fields.append((m.start(), m.end(), end, value))
    return _non_overlapping(fields)


def _non_overlapping(fields: list[tuple[int, int, int, str]]) -> list[tuple[int, int, int, str]]:
    out: list[tuple[int, int, int, str]] = []
    for f in sorted(fields):
        if not out or f[0] >= out[-1][2]:
            out.append(f)
    return out


def _remove_pair(s: str, start: int, end: int) -> tuple[int, int]:
    """The span that removes the pair `s[start:end]` with the white space before it (or, at the
    start of `s`, after it)."""
    lead = start
    while lead > 0 and s[lead - 1] in _SPACE:
        lead -= 1
    if lead < start and lead > 0:
        return lead, end
    trail = end
    while trail < len(s) and s[trail] in _SPACE:
        trail += 1
    return start, trail


# --- free text ----------------------------------------------------------------------------------


def _echo_end(text: str, start: int, prefix: str) -> int:
    """Where the quoted piece of a libpq parse error that starts at `start` ends."""
    line_end = text.find("\n", start)
    line_end = len(text) if line_end < 0 else line_end
    if prefix.lower().startswith("missing"):
        close = text.rfind('" in connection info string', start, line_end)
    else:
        close = text.rfind('"', start, line_end)
    return line_end if close < 0 else close


_TRAILING = frozenset(".,:;!?)]}>'\"")


def _trimmed(value: str, known: Iterable[str]) -> int:
    """How much of `value` (a field that runs to the next white space) is the secret: all of it,
    unless it is a known secret followed only by punctuation (`password=pw: could not ...`)."""
    ends = [
        len(s)
        for s in known
        if s and value.startswith(s) and len(s) < len(value) and set(value[len(s) :]) <= _TRAILING
    ]
    return max(ends, default=len(value))


def _scan(text: str, known: Iterable[str] = ()) -> Iterator[tuple[re.Match[str], int]]:
    """Each secret-bearing field of free text: its match in `_TEXT_FIELD` and where it ends.

    A URL ends at white space, an unquoted keyword value too (libpq's rule). A password may hold
    any other character, so punctuation right after such a field is taken as part of it -- unless
    the field is a `known` secret followed only by punctuation. A libpq echo ends at its quote.
    """
    pos = 0
    while (m := _TEXT_FIELD.search(text, pos)) is not None:
        if m.group("url") is not None:
            end = m.end()
            while end < len(text) and text[end] not in _SPACE:
                end += 1
            query = _split_url(text[m.start() : end])[4]
            if query and _is_secret_param(query[-1]):
                value = query[-1].partition("=")[2]
                end -= len(value) - _trimmed(value, known)
        elif m.group("kw") is not None:
            end = _libpq_value(text, m.end())[0]
            if text[m.end() : m.end() + 1] != "'":
                end = m.end() + _trimmed(text[m.end() : end], known)
        else:
            end = _echo_end(text, m.end(), m.group("echo"))
        yield m, end
        pos = max(end, m.end())


def _redact_text(text: str, marker: str | None, known: Iterable[str] = ()) -> str:
    out: list[str] = []
    pos = 0
    for m, end in _scan(text, known):
        if m.group("url") is not None:
            out += [text[pos : m.start()], _redact_url(text[m.start() : end], marker)]
            pos = end
        elif end == m.end():
            continue  # an empty value hides nothing
        elif marker is not None:
            out += [text[pos : m.end()], marker]
            pos = end
        elif m.group("kw") is not None:
            cut, after = _remove_pair(text, m.start(), end)
            out.append(text[pos : max(cut, pos)])
            pos = after
        else:
            out.append(text[pos : m.end()])
            pos = end
    out.append(text[pos:])
    return "".join(out)


def _redact_conninfo(dsn: str) -> str:
    out: list[str] = []
    pos = 0
    for start, _, end, _ in _keyword_fields(dsn, whole=True):
        cut, after = _remove_pair(dsn, start, end)
        out.append(dsn[pos : max(cut, pos)])
        pos = after
    out.append(dsn[pos:])
    return "".join(out)


# --- the interface ------------------------------------------------------------------------------


def redact_dsn(dsn: str) -> str:
    """`dsn` without any password field (see the module docstring), for packets and commands."""
    if _URL_AT_START.match(dsn):
        return _redact_url(dsn, None)
    if _CONNINFO_START.match(dsn):
        return _redact_conninfo(dsn)
    return _redact_text(dsn, None)


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


def redact_text(text: str, known: Iterable[str] = ()) -> str:
    """`text` (an error line, a traceback, a program's stderr) with the secret field of every DSN
    it contains replaced by `REDACTED`; every other character is left as it was.

    `known` secrets (`secrets_in` of the command line) only tell where a field that runs into
    punctuation ends (see `_scan`); they are not searched for anywhere else in `text`."""
    return _redact_text(text, REDACTED, list(known))


def secrets_in(args: Iterable[str]) -> set[str]:
    """The passwords and secret parameter values of the DSNs among `args` (also `--opt=DSN`), as
    written and as decoded, for `scrub` and for refusing a secret on a command line."""
    found: set[str] = set()
    for arg in args:
        value = arg.partition("=")[2] if arg.startswith("--") and "=" in arg else arg
        if _URL_AT_START.match(value):
            found |= _url_secrets(value)
            continue
        if _CONNINFO_START.match(value):
            for _, start, end, decoded in _keyword_fields(value, whole=True):
                found.update({value[start:end], decoded})
            continue
        for m, end in _scan(value):
            if m.group("url") is not None:
                found |= _url_secrets(value[m.start() : end])
            elif m.group("kw") is not None:
                found.update({value[m.end() : end], _libpq_value(value, m.end())[1]})
    return {s for s in found if s}


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` for printing: `redact_text`, then each known secret of at least `MIN_SECRET_TOKEN`
    characters that still stands as a whole token replaced by `REDACTED`.

    The second step is for a lower layer that quotes a secret outside any DSN (a program's
    stderr, a driver error that echoes a piece of its input). It has to be restricted, because
    substituting a known string is an oracle whenever that string also occurs in the text for
    another reason: the reader sees which letters or words were hidden and so learns the secret
    (the one-letter password `r` turned `rollproof` into `***ollp***oof`). Hence:
    * only whole tokens: an occurrence flanked by a letter or digit is part of a longer word and
      is left alone, so no character of an ordinary word is ever masked;
    * only secrets of 12 characters or more: a shorter one is likely to be an ordinary word,
      number or name in the same line (`postgres`, `admin`, `5432`, the user or database name),
      and hiding that word would tell the reader the password. A random 12-character token
      occurs in a line by chance with negligible probability, while a password that short or a
      dictionary word is already weak. Shorter secrets are protected by the field-wise pass
      alone, which does not depend on the secret at all.
    """
    secrets = {s for s in secrets if s}
    text = redact_text(text, secrets)
    for secret in sorted({s for s in secrets if len(s) >= MIN_SECRET_TOKEN}, key=len, reverse=True):
        token = re.compile(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])")
        text = token.sub(lambda _: REDACTED, text)
    return text
