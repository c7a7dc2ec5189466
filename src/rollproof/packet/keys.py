"""Ed25519 key files for signing packets: generate, load. The only module that reads key files.

    rollproof key generate --out DIR
        DIR/rollproof-ed25519.key   private key, PKCS#8 PEM, unencrypted, mode 0600
        DIR/rollproof-ed25519.pub   public key, SubjectPublicKeyInfo PEM, mode 0644

Invariants, each against a named leak:
* private key bytes are never printed, logged or put in an error message; what is shown about
  a key is its keyid (sha256 of the raw public key);
* the private key file is created 0600 from its first byte (a temporary file made by mkstemp,
  then renamed into place), never overwrites an existing file, and a private key readable by
  group or others is refused when loaded, as ssh refuses one.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from rollproof.errors import UsageError
from rollproof.packet.attest import TrustedKey, trusted_key
from rollproof.packet.write import atomic_write_bytes

PRIVATE_NAME = "rollproof-ed25519.key"
PUBLIC_NAME = "rollproof-ed25519.pub"


class KeyFileError(UsageError):
    """A key file that cannot be used; the message names the file, never its content."""


@dataclass(frozen=True, slots=True)
class GeneratedKey:
    private_path: Path
    public_path: Path
    keyid: str


def generate_key(out_dir: Path, *, key: Ed25519PrivateKey | None = None) -> GeneratedKey:
    """Write a new Ed25519 key pair into `out_dir` (created if needed; files must not exist)."""
    private_path, public_path = out_dir / PRIVATE_NAME, out_dir / PUBLIC_NAME
    for p in (private_path, public_path):
        if os.path.lexists(p):
            raise KeyFileError(f"{p} already exists; keys are never overwritten")
    key = key or Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    public_pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(private_path, private_pem, mode=0o600)
        atomic_write_bytes(public_path, public_pem, mode=0o644)
    except OSError as e:
        raise KeyFileError(f"cannot write keys into {out_dir}: {e.strerror}") from e
    return GeneratedKey(private_path, public_path, trusted_key(key.public_key()).keyid)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in `path` (PEM), refusing a file others can read."""
    try:
        st = os.stat(path)
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file") from None
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read: {e.strerror}") from e
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise KeyFileError(
            f"{path}: private key is readable by others (mode "
            f"{stat.S_IMODE(st.st_mode):04o}); chmod 600 it"
        )
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyFileError(f"{path}: not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> TrustedKey:
    """The Ed25519 public key in `path` (PEM) as a trusted key."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file") from None
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read: {e.strerror}") from e
    try:
        key = load_pem_public_key(data)
    except (ValueError, TypeError):
        raise KeyFileError(f"{path}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: not an Ed25519 public key")
    return trusted_key(key)
