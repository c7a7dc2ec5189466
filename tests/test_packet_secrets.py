"""No secret reaches a packet or the terminal: DSN passwords and private keys."""

from __future__ import annotations

import base64
import dataclasses
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from rollproof.assurance.selftest import (
    SOUND_CHANGE,
    build_tiny_source,
    tiny_rehearsal,
    write_change,
)
from rollproof.cli import main
from rollproof.core.redact import redact_argv, redact_dsn, scrub, secrets_in
from rollproof.rehearse.packet import build_packet
from rollproof.verify.validate import PacketTree, check_tree
from tests.packet_fixtures import read_tree

PASSWORD = "Pl4nted-S3cret"
PG_DSN = f"postgresql://app:{PASSWORD}@db.internal:5432/prod?sslmode=require&password={PASSWORD}"


@pytest.mark.parametrize(
    ("dsn", "redacted"),
    [
        pytest.param(
            "postgresql://app:pw@db:5432/prod", "postgresql://app@db:5432/prod", id="userinfo"
        ),
        pytest.param("postgresql://:pw@db/prod", "postgresql://db/prod", id="no-user"),
        pytest.param("postgresql://app:p@ss@db/prod", "postgresql://app@db/prod", id="at-in-pw"),
        pytest.param(
            "postgresql://db/prod?sslmode=require&password=pw&application_name=x",
            "postgresql://db/prod?sslmode=require&application_name=x",
            id="query-password",
        ),
        pytest.param("postgresql://db/prod?PWD=pw#frag", "postgresql://db/prod", id="pwd"),
        pytest.param("postgresql://app@db/prod", "postgresql://app@db/prod", id="no-secret"),
        pytest.param("sqlite:////srv/prod.db", "sqlite:////srv/prod.db", id="sqlite"),
        pytest.param("/srv/prod.db", "/srv/prod.db", id="plain-path"),
    ],
)
def test_redact_dsn(dsn: str, redacted: str) -> None:
    assert redact_dsn(dsn) == redacted
    for secret in secrets_in([dsn]):
        assert secret not in redacted


def test_redact_argv_and_scrub() -> None:
    argv = ["rollproof", "rehearse", "c", f"--source={PG_DSN}", "--source", PG_DSN]
    assert PASSWORD not in " ".join(redact_argv(argv))
    assert PASSWORD in secrets_in(argv)
    assert scrub(f"could not connect to {PG_DSN}", secrets_in(argv)).count(PASSWORD) == 0


def test_a_planted_password_never_reaches_a_packet(tmp_path: Path) -> None:
    source = build_tiny_source(tmp_path / "source.db")
    result = tiny_rehearsal(source, write_change(tmp_path / "add-item-note", SOUND_CHANGE))
    planted = dataclasses.replace(result, source={**result.source, "dsn": PG_DSN})
    files = build_packet(
        planted, invocation=["rollproof", "rehearse", "add-item-note", "--source", PG_DSN]
    )
    leaks = [p for p, d in files.items() if PASSWORD.encode() in d]
    assert leaks == []
    assert b"postgresql://app@db.internal:5432/prod?sslmode=require" in files["commands.sh"]
    assert check_tree(PacketTree.from_files(files)).ok


@pytest.mark.parametrize(
    "dsn",
    [
        pytest.param(f"sqlite://app:{PASSWORD}@/prod.db", id="sqlite-with-userinfo"),
        pytest.param(f"mysql://app:{PASSWORD}@db/prod", id="unsupported-scheme"),
    ],
)
@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_a_planted_password_is_never_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dsn: str, debug: bool
) -> None:
    """The engine refuses these DSNs by echoing them; the CLI scrubs the password. (A
    PostgreSQL DSN would need a server; its redaction is tested on the packet writer.)"""
    change = write_change(tmp_path / "add-item-note", SOUND_CHANGE)
    argv = ["--debug"] if debug else []
    code = main([*argv, "rehearse", str(change), "--source", dsn, "--out", str(tmp_path / "p")])
    assert code == 2
    captured = capsys.readouterr()
    assert PASSWORD not in captured.out + captured.err
    assert not (tmp_path / "p").exists()


def test_private_key_never_printed_nor_packed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["key", "generate", "--out", str(tmp_path / "keys")]) == 0
    private = tmp_path / "keys" / "rollproof-ed25519.key"
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    key = load_pem_private_key(private.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    pem_body = b"".join(private.read_bytes().splitlines()[1:-1])
    needles = [raw, raw.hex().encode(), base64.b64encode(raw), pem_body]

    source = build_tiny_source(tmp_path / "source.db")
    change = write_change(tmp_path / "add-item-note", SOUND_CHANGE)
    code = main(
        [
            "rehearse",
            str(change),
            "--source",
            f"sqlite:///{source}",
            "--out",
            str(tmp_path / "packet"),
            "--sign",
            str(private),
        ]
    )
    assert code == 0
    printed = capsys.readouterr()
    text = (printed.out + printed.err).encode()
    for needle in needles:
        assert needle not in text
        for path, data in read_tree(tmp_path / "packet").items():
            assert needle not in data, path
    assert (tmp_path / "packet" / "attestation.dsse.json").is_file()


def test_keys_are_never_overwritten_and_loose_keys_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    assert main(["key", "generate", "--out", str(keys)]) == 0
    before = (keys / "rollproof-ed25519.key").read_bytes()
    assert main(["key", "generate", "--out", str(keys)]) == 2
    assert (keys / "rollproof-ed25519.key").read_bytes() == before
    (keys / "rollproof-ed25519.key").chmod(0o644)
    change = write_change(tmp_path / "add-item-note", SOUND_CHANGE)
    source = build_tiny_source(tmp_path / "source.db")
    capsys.readouterr()
    code = main(
        [
            "rehearse",
            str(change),
            "--source",
            f"sqlite:///{source}",
            "--out",
            str(tmp_path / "packet"),
            "--sign",
            str(keys / "rollproof-ed25519.key"),
        ]
    )
    assert code == 2
    assert "readable by others" in capsys.readouterr().err
    assert not (tmp_path / "packet").exists()
