"""Redaction is by field: a password is removed where it stands, and nothing else is touched.

The property tests build a message around a DSN with a random password (one letter, letters of
the message itself, URL-special and quote characters, non-ASCII) and check the output against
the same message built with the fixed marker in place of the password field: byte for byte
equal, so the output cannot depend on the password, and no raw, URL-encoded, base64 or hex form
of it remains beyond what the surrounding text contains by itself. libpq (through psycopg) is
the referee of what the password in a generated DSN is.
"""

from __future__ import annotations

import base64
import urllib.parse

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from psycopg import conninfo as pg_conninfo

from rollproof.core.redact import (
    MIN_SECRET_TOKEN,
    REDACTED,
    redact_argv,
    redact_dsn,
    redact_text,
    scrub,
    secrets_in,
)

# Letters of the surrounding messages, so that a password is often made of them; URL-special,
# quote and escape characters; white space; non-ASCII. No NUL: libpq cannot carry it.
PASSWORD_CHARS = "rolpfsuceabdnt" + "RP0123456789" + ":@/?#&=%+;,.!$*()[]~-_" + "'\"\\` \t" + "é€"
passwords = st.one_of(
    st.sampled_from(["r", "o", "p", "'", "\\", "@", ":", "/", "%", "=", " ", "rollproof"]),
    st.text(alphabet=PASSWORD_CHARS, min_size=1, max_size=24),
)
# Text around the DSN: the letters of real messages, no `=` (it would make a keyword pair of
# its own) and no `/` (it could make a URL of its own).
FILLER_CHARS = "rolpfsuceabdnt RP0123456789.,;!'\"()-_"
prefixes = st.one_of(
    st.sampled_from(["rollproof: source", "rollproof: error: could not connect to", "", "\t"]),
    st.text(alphabet=FILLER_CHARS, max_size=30),
)
# After a DSN: white space, nothing, or punctuation and white space. A URL or an unquoted
# keyword value runs to the next white space (a password may contain any other character), so
# punctuation right after one is told apart from the password only by `scrub`, which knows it.
suffixes = st.one_of(
    st.sampled_from(["", ": could not connect to server", " (connection refused)", "\n", "'."]),
    st.tuples(
        st.sampled_from(["", ":", ")", "'", '".', "),"]),
        st.text(alphabet=FILLER_CHARS, max_size=30),
    ).map(lambda t: t[0] + " " + t[1]),
)


def space_first(suffix: str) -> bool:
    return suffix[:1] in ("", " ", "\t", "\n")


users = st.sampled_from(["app", "rollproof", "r", "user.name"])
hosts = st.sampled_from(["db", "db.internal:5432", "10.0.0.7", "[::1]:5433"])


def forms(password: str) -> set[str]:
    raw = password.encode()
    return {
        password,
        urllib.parse.quote(password, safe=""),
        urllib.parse.quote(password),
        urllib.parse.quote_plus(password),
        base64.b64encode(raw).decode(),
        raw.hex(),
        raw.hex().upper(),
        libpq_quoted(password),
    }


def assert_hidden(out: str, expected: str, password: str) -> None:
    """`out` is `expected` (the message with the marker in the password's place) and keeps no
    form of the password beyond the occurrences the rest of the message has by itself."""
    assert out == expected
    for form in forms(password):
        assert out.count(form) <= expected.count(form), form
        if form not in expected:
            assert form not in out


def libpq_quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def libpq_bare(value: str) -> str:
    """`value` as an unquoted libpq value: every white space, backslash and quote escaped."""
    return "".join("\\" + c if c in " \t\n\\'" else c for c in value)


def check_scrub(message: str, dsn: str, expected: str, password: str) -> None:
    """`scrub` as the CLI calls it, with the secrets of the DSN on its command line."""
    secrets = secrets_in([dsn])
    assert password in secrets or urllib.parse.quote(password, safe="") in secrets
    if any(len(s) >= MIN_SECRET_TOKEN and s in expected for s in secrets):
        return  # the surrounding text contains the long secret itself; tested separately
    assert_hidden(scrub(message, secrets), expected, password)


# --- URL DSNs -----------------------------------------------------------------------------------


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(password=passwords, user=users, host=hosts, prefix=prefixes, suffix=suffixes)
@example(password="r", user="app", host="db", prefix="rollproof: source", suffix=": refused")
def test_url_userinfo_password(
    password: str, user: str, host: str, prefix: str, suffix: str
) -> None:
    encoded = urllib.parse.quote(password, safe="")
    dsn = f"postgresql://{user}:{encoded}@{host}/prod?sslmode=require"
    assert pg_conninfo.conninfo_to_dict(dsn)["password"] == password
    marked = f"postgresql://{user}:{REDACTED}@{host}/prod?sslmode=require"
    message = f"{prefix} {dsn}{suffix}"
    expected = f"{prefix} {marked}{suffix}"
    assert_hidden(redact_text(message), expected, password)
    check_scrub(message, dsn, expected, password)
    removed = f"postgresql://{user}@{host}/prod?sslmode=require"
    assert_hidden(redact_dsn(dsn), removed, password)
    assert "password" not in pg_conninfo.conninfo_to_dict(redact_dsn(dsn))


@settings(max_examples=200)
@given(
    password=passwords.filter(lambda p: not any(c in p for c in " \t/")),
    prefix=prefixes,
    suffix=suffixes,
)
@example(password="p@ss", prefix="", suffix="")
@example(password="pw?x", prefix="", suffix="")
def test_url_userinfo_password_not_encoded(password: str, prefix: str, suffix: str) -> None:
    """A password typed into a URL as it is: libpq's first `@` or the last one, it is gone."""
    dsn = f"postgresql://app:{password}@db/prod"
    message = f"{prefix} {dsn}{suffix}"
    assert_hidden(
        redact_text(message), f"{prefix} postgresql://app:{REDACTED}@db/prod{suffix}", password
    )
    assert_hidden(redact_dsn(dsn), "postgresql://app@db/prod", password)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    password=passwords,
    key=st.sampled_from(["password", "sslpassword", "PWD", "pass%77ord", "token"]),
    last=st.booleans(),
    encode=st.booleans(),
    prefix=prefixes,
    suffix=suffixes,
)
def test_url_query_password(
    password: str, key: str, last: bool, encode: bool, prefix: str, suffix: str
) -> None:
    # As typed (when libpq can read it so) or percent-encoded.
    typed = encode or any(c in password for c in "%&= \t\n")
    value = urllib.parse.quote(password, safe="") if typed else password
    secret = f"{key}={value}"
    marked_field = f"{key}={REDACTED}"
    if last:
        query, marked, removed = (
            f"sslmode=require&{secret}",
            f"sslmode=require&{marked_field}",
            "sslmode=require",
        )
    else:
        query, marked, removed = (
            f"{secret}&application_name=x",
            f"{marked_field}&application_name=x",
            "application_name=x",
        )
    dsn = f"postgresql://app@db/prod?{query}"
    if key in ("password", "sslpassword"):
        assert pg_conninfo.conninfo_to_dict(dsn)[key] == urllib.parse.unquote(value)
    message = f"{prefix} {dsn}{suffix}"
    expected = f"{prefix} postgresql://app@db/prod?{marked}{suffix}"
    if not last or space_first(suffix):
        assert_hidden(redact_text(message), expected, password)
    check_scrub(message, dsn, expected, password)
    assert_hidden(redact_dsn(dsn), f"postgresql://app@db/prod?{removed}", password)


# --- libpq keyword/value DSNs ------------------------------------------------------------------


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    password=passwords,
    key=st.sampled_from(["password", "sslpassword"]),
    quoted=st.booleans(),
    position=st.integers(min_value=0, max_value=2),
    prefix=prefixes,
    suffix=suffixes,
)
@example(password="r", key="password", quoted=False, position=1, prefix="", suffix="")
@example(password="a b ' c", key="password", quoted=True, position=2, prefix="", suffix="")
def test_keyword_dsn_password(
    password: str, key: str, quoted: bool, position: int, prefix: str, suffix: str
) -> None:
    value = libpq_quoted(password) if quoted else libpq_bare(password)
    others = ["host=db.internal", "port=5432", "dbname=prod"]
    pairs = [*others[:position], f"{key}={value}", *others[position:]]
    dsn = " ".join(pairs)
    assert pg_conninfo.conninfo_to_dict(dsn)[key] == password
    marked = " ".join([*others[:position], f"{key}={REDACTED}", *others[position:]])
    message = f"{prefix} {dsn}{suffix}"
    expected = f"{prefix} {marked}{suffix}"
    if quoted or position < 2 or space_first(suffix):
        assert_hidden(redact_text(message), expected, password)
    check_scrub(message, dsn, expected, password)
    assert_hidden(redact_dsn(dsn), " ".join(others), password)
    assert_hidden(
        " ".join(redact_argv(["--source", dsn])), "--source " + " ".join(others), password
    )
    assert key not in pg_conninfo.conninfo_to_dict(redact_dsn(dsn))


@settings(max_examples=100)
@given(password=passwords, prefix=prefixes)
def test_two_dsns_in_one_message(password: str, prefix: str) -> None:
    url = f"postgresql://app:{urllib.parse.quote(password, safe='')}@db/prod"
    kw = f"host=db password={libpq_quoted(password)}"
    message = f"{prefix} copying {url} to {kw} failed"
    expected = f"{prefix} copying postgresql://app:{REDACTED}@db/prod to host=db password={REDACTED} failed"
    assert_hidden(redact_text(message), expected, password)


# --- exact outputs ------------------------------------------------------------------------------


def test_one_letter_password_masks_no_letter() -> None:
    """The attack: with the password `r`, every `r` in the line used to become `***`."""
    dsn = "postgresql://app:r@db.internal:5432/prod"
    line = f"rollproof: source {dsn}: could not connect to server: Connection refused"
    assert scrub(line, secrets_in(["rehearse", "--source", dsn])) == (
        "rollproof: source postgresql://app:***@db.internal:5432/prod: "
        "could not connect to server: Connection refused"
    )
    plain = "rollproof: source error: rollback script refused"
    assert scrub(plain, {"r"}) == plain
    assert scrub(plain, secrets_in([dsn])) == plain


def test_password_at_the_end_of_a_url_before_punctuation() -> None:
    """Without knowing the password, the colon could belong to it; `scrub` knows."""
    dsn = "postgresql://db/prod?password=r"
    line = f"rollproof: source {dsn}: could not connect"
    assert (
        redact_text(line) == "rollproof: source postgresql://db/prod?password=*** could not connect"
    )
    assert scrub(line, secrets_in([dsn])) == (
        "rollproof: source postgresql://db/prod?password=***: could not connect"
    )
    kw = "host=db password=r"
    assert (
        scrub(f"source {kw}: refused", secrets_in([kw])) == "source host=db password=***: refused"
    )


def test_keyword_dsn_is_redacted_by_field() -> None:
    dsn = "host=db.internal port=5432 password=r dbname=prod"
    assert redact_dsn(dsn) == "host=db.internal port=5432 dbname=prod"
    assert secrets_in(["--source", dsn]) == {"r"}
    line = f"rollproof: source {dsn}: could not connect to server"
    assert scrub(line, {"r"}) == (
        "rollproof: source host=db.internal port=5432 password=*** dbname=prod: "
        "could not connect to server"
    )


def test_keyword_dsn_quoted_password() -> None:
    dsn = r"host=db password='my secret \' and \\ more' dbname=prod"
    assert pg_conninfo.conninfo_to_dict(dsn)["password"] == r"my secret ' and \ more"
    assert redact_dsn(dsn) == "host=db dbname=prod"
    assert redact_text(f"bad {dsn} here") == "bad host=db password=*** dbname=prod here"
    assert redact_dsn(r"password='a b' host=db") == "host=db"
    assert redact_dsn("host='db'password=x") == "host='db'"
    assert secrets_in([dsn]) == {r"'my secret \' and \\ more'", r"my secret ' and \ more"}


def test_keyword_dsn_libpq_refuses_loses_the_tail_too() -> None:
    """An unescaped space in an unquoted password: libpq refuses the DSN; neither part stays."""
    assert redact_dsn("host=db password=two words port=5") == "host=db port=5"


@pytest.mark.parametrize(
    ("dsn", "redacted"),
    [
        pytest.param("postgresql://db/prod?password=a#b", "postgresql://db/prod", id="no-fragment"),
        pytest.param("postgresql://app:pw?x@db/prod", "postgresql://app@db/prod", id="qmark-in-pw"),
        pytest.param("postgresql://app:pa/ss@db/x", "postgresql://app@db/x", id="slash-in-pw"),
        pytest.param("jdbc:postgresql://app:pw@db/x", "jdbc:postgresql://app@db/x", id="jdbc"),
        pytest.param(
            "postgresql://db/x?options=-c%20a%3Db@c",
            "postgresql://db/x?options=-c%20a%3Db@c",
            id="at",
        ),
        pytest.param("/srv/prod.db", "/srv/prod.db", id="sqlite-path"),
        pytest.param("postgresql://app@db/prod", "postgresql://app@db/prod", id="no-secret"),
    ],
)
def test_redact_dsn_follows_libpq(dsn: str, redacted: str) -> None:
    assert redact_dsn(dsn) == redacted


def test_text_exact_outputs() -> None:
    assert redact_text("to postgresql://db/prod?password=pw&x=1 (refused)") == (
        "to postgresql://db/prod?password=***&x=1 (refused)"
    )
    assert redact_text("env PGPASSWORD=hunter2 pg_dump -d prod") == (
        "env PGPASSWORD=*** pg_dump -d prod"
    )
    # libpq quotes the piece of a DSN it cannot decode, which may be the password
    assert redact_text('ProgrammingError: invalid percent-encoded token: "p%zz"\nnext') == (
        'ProgrammingError: invalid percent-encoded token: "***"\nnext'
    )
    assert redact_text('missing "=" after "words" in connection info string') == (
        'missing "=" after "***" in connection info string'
    )
    untouched = 'FATAL: password authentication failed for user "app"'
    assert redact_text(untouched) == untouched


def test_scrub_removes_only_long_whole_tokens() -> None:
    secret = "correct-horse-battery"
    assert len(secret) >= MIN_SECRET_TOKEN
    assert scrub(f"pg_dump: echo '{secret}' x{secret}y", {secret}) == (
        f"pg_dump: echo '***' x{secret}y"
    )
    short = "hunter2"
    assert scrub(f"pg_dump: echo '{short}'", {short}) == f"pg_dump: echo '{short}'"
