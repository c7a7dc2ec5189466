"""Making operator and executor keys: `rollproof key generate`.

The key format, key ids and loading are `rollproof.core.keys`; this module only writes new key
files, under the invariants stated there: a private key file is mode 0600 from its first byte,
never replaces an existing file, and appears complete or not at all.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rollproof.core.keys import KeyFileError, PublicKey, SigningKey
from rollproof.evidence.write import atomic_write_bytes

DEFAULT_KEY_NAME = "rollproof-ed25519"
_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with `data`, atomically and only if it does not exist yet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        try:
            os.link(tmp, path)  # fails if `path` exists: never replaces a key
        except FileExistsError:
            raise KeyFileError(f"{path} already exists; refusing to overwrite a key") from None
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        Path(tmp).unlink(missing_ok=True)


def generate_key_pair(
    private_path: Path, public_path: Path, *, passphrase: bytes | None = None
) -> PublicKey:
    """Generate an Ed25519 key pair into two files; return the public key."""
    private = Ed25519PrivateKey.generate()
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    public = SigningKey.from_private(private).public
    _write_new_file(private_path, pem, 0o600)
    atomic_write_bytes(public_path, public.to_pem(), mode=0o644)
    return public


@dataclass(frozen=True, slots=True)
class GeneratedKey:
    private_path: Path
    public_path: Path
    key_id: str


def generate_key(
    out_dir: Path, *, name: str = DEFAULT_KEY_NAME, passphrase: bytes | None = None
) -> GeneratedKey:
    """Write a new key pair as `out_dir/NAME.key` and `out_dir/NAME.pub`; neither may exist."""
    if not _KEY_NAME.fullmatch(name):
        raise KeyFileError(f"key name {name!r} must be letters, digits, '.', '_' or '-'")
    private_path, public_path = out_dir / f"{name}.key", out_dir / f"{name}.pub"
    for p in (private_path, public_path):
        if os.path.lexists(p):
            raise KeyFileError(f"{p} already exists; keys are never overwritten")
    try:
        public = generate_key_pair(private_path, public_path, passphrase=passphrase)
    except OSError as e:
        raise KeyFileError(f"cannot write keys into {out_dir}: {e.strerror}") from e
    return GeneratedKey(private_path, public_path, public.key_id)
