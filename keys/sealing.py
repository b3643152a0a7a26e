"""Sealing private key material at rest with Fernet; several key-encryption keys for rotation (newest first)."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class SealError(Exception):
    pass


class Sealer:
    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise SealError("no key-encryption key")
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    def seal(self, secret: bytes) -> bytes:
        return self._fernet.encrypt(secret)

    def open(self, sealed: bytes) -> bytes:
        try:
            return self._fernet.decrypt(sealed)
        except InvalidToken as exc:
            raise SealError("sealed key material cannot be opened with the configured key-encryption key") from exc

    def reseal(self, sealed: bytes) -> bytes:
        """Re-encrypt under the newest key-encryption key (after adding one)."""
        return self._fernet.rotate(sealed)

    @classmethod
    def from_config(cls, kek: str | None, key_dir: Path) -> Sealer:
        if kek:
            return cls([part.strip().encode() for part in kek.split(",")])
        return cls([_file_kek(key_dir / "kek")])


def _file_kek(path: Path) -> bytes:
    """The embedded default's key-encryption key: created once, readable by the owner only."""
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Fernet.generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key
