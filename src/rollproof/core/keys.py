"""Ed25519 keys: reading key files, key ids, signing and verifying. Writing new key files is
`rollproof.governance.keys` (this module only reads).

Operators sign grants, decisions and ledger checkpoints with these keys; an executor signs
evidence packets (`rollproof rehearse --sign`); `rollproof key generate` makes them all:

    rollproof key generate --out DIR [--name NAME]
        DIR/NAME.key   private key (default NAME: rollproof-ed25519)
        DIR/NAME.pub   public key

    private key file   PKCS#8 PEM (optionally passphrase-encrypted), mode 0600, created
                       atomically and never over an existing file
    public key file    SubjectPublicKeyInfo PEM, mode 0644, never over an existing file either
                       when made by `generate_key`
    key id             lowercase hex sha256 of the 32 raw public key bytes (the same id
                       `rollproof.verify.attest` uses); `short_key_id` is its first 16 digits

Invariants, each against a named failure:

* a private key never leaves a `SigningKey` as text: its repr and str name only the key id, it
  cannot be pickled (so it cannot ride into a subprocess, a log record or a cache), and nothing
  here returns its bytes;
* a private key file is readable by its owner only when it is created (mode 0600 from the first
  byte, `mkstemp`) and is refused on load if group or others can read it, like ssh does: a key
  that others could have copied no longer identifies one operator;
* generating never replaces an existing private key file (an operator's only key lost to a
  mistyped path); the file appears complete or not at all (hard link of a fsynced temp file);
* only Ed25519 keys load: a key of another type in the right place is refused, not adapted.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, SupportsIndex

from rollproof.core.errors import UsageError
from rollproof.core.inputs import InputFileError, read_input

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

# cryptography is imported where a key is read, signs or verifies, not with this module: the
# policy (and so every rehearsal) imports it for the key *type*, and a command that touches no
# key should not pay for the library (tests/test_startup_imports.py).

SHORT_ID_DIGITS = 16
MAX_KEY_FILE_BYTES = 64 * 1024
"""A PEM key is a few hundred bytes; anything this large is not a key file."""


class KeyFileError(UsageError):
    """A key file that cannot be used: missing, malformed, not Ed25519, or too readable."""


def short_key_id(key_id: str) -> str:
    """The display form of a key id (never used for matching)."""
    return key_id[:SHORT_ID_DIGITS]


@dataclass(frozen=True, slots=True)
class PublicKey:
    """An Ed25519 public key by its 32 raw bytes."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != 32:
            raise ValueError("an Ed25519 public key is 32 bytes")

    @property
    def key_id(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()

    def verify(self, signature: bytes, data: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, data)
        except (InvalidSignature, ValueError):
            return False
        return True

    def to_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        return Ed25519PublicKey.from_public_bytes(self.raw).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def __repr__(self) -> str:
        return f"PublicKey(key_id={self.key_id!r})"


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class SigningKey:
    """An Ed25519 private key and its public key. Signs; never shows its private half."""

    _private: Ed25519PrivateKey = field(repr=False)
    public: PublicKey

    @classmethod
    def from_private(cls, private: Ed25519PrivateKey) -> SigningKey:
        from cryptography.hazmat.primitives import serialization

        raw = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return cls(private, PublicKey(raw))

    @property
    def key_id(self) -> str:
        return self.public.key_id

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id!r}, private=<redacted>)"

    __str__ = __repr__

    def __reduce_ex__(self, protocol: SupportsIndex) -> str | tuple[Any, ...]:
        # Stops the private key travelling by pickle: multiprocessing arguments, caches, logs.
        raise TypeError("a SigningKey cannot be pickled; load it from its key file instead")


def _read(path: Path) -> bytes:
    try:
        return read_input(path, limit=MAX_KEY_FILE_BYTES)
    except InputFileError as e:
        if e.reason == "no such file":
            raise KeyFileError(f"{path}: no such key file") from None
        raise KeyFileError(f"{path}: key file {e.reason}") from None


def load_signing_key(path: Path, *, passphrase: bytes | None = None) -> SigningKey:
    """Load a private key file written by `generate_key_pair`."""
    data = _read(path)
    if stat.S_IMODE(os.stat(path).st_mode) & 0o077:
        # Stops use of a key others could have copied: it no longer identifies one operator.
        raise KeyFileError(f"{path}: private key file is readable by others; chmod 600 it")
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        private = serialization.load_pem_private_key(data, password=passphrase)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        # The cryptography message can echo parser state, never the key; keep it generic.
        raise KeyFileError(f"{path}: not a usable PEM private key (or wrong passphrase)") from e
    if not isinstance(private, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 private key")
    return SigningKey.from_private(private)


def public_key_from_pem(data: bytes, *, where: str = "public key") -> PublicKey:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        public = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as e:
        raise KeyFileError(f"{where}: not a PEM public key") from e
    if not isinstance(public, Ed25519PublicKey):
        raise KeyFileError(f"{where}: not an Ed25519 public key")
    return PublicKey(
        public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )


def load_public_key(path: Path) -> PublicKey:
    return public_key_from_pem(_read(path), where=str(path))
