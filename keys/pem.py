"""PEM encodings used for stored and exported keys: PKCS#8 for private keys, SubjectPublicKeyInfo for public ones.

Unencrypted here on purpose: a private key leaves this module only to be sealed (keys/sealing.py) or written to a
0600 credential file that belongs to a kiosk or a software card.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes


def private_pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: PublicKeyTypes) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
