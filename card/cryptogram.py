"""The INTERNAL AUTHENTICATE binding shared by the card, the kiosk and the server.

docs/card-protocol.md, "Internal authenticate", is the specification. The card side (the software card) and the
verifier (the server) build the message here so that the two can never drift apart.
"""

from __future__ import annotations

import hashlib
from typing import Literal
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import cmac, hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

LABEL = b"SSCARD-IA-1"
CHALLENGE_LEN = 32
CONTEXT_LEN = 32
FLAG_PIN_VERIFIED = 0x01
ECDSA_SIG_LEN = 64

SymmetricAlgorithm = Literal["3des", "sm4"]
SYMMETRIC_ALGORITHMS: tuple[SymmetricAlgorithm, ...] = ("3des", "sm4")
MAC_LEN: dict[str, int] = {"3des": 8, "sm4": 16}


def kiosk_context(terminal_id: str) -> bytes:
    return hashlib.sha256(b"sscard-kiosk:" + terminal_id.encode()).digest()


def web_origin(url: str) -> str:
    """The origin (RFC 6454) of `url` as a browser serialises it in the Origin header: lower-case scheme and host,
    the port only when it is not the scheme's default."""
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in ("http", "https") or not host:
        raise ValueError(f"not an http(s) URL: {url!r}")
    if not host.isascii():
        # A browser's Origin carries an internationalised name (a .政务 domain, say) in its A-label form; the
        # helper compares that header with this, and the card's context is computed from this.
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ValueError(f"not a valid host name: {url!r}") from exc
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    default = {"http": 80, "https": 443}[scheme]
    return f"{scheme}://{host}" if port is None or port == default else f"{scheme}://{host}:{port}"


def web_context(origin: str) -> bytes:
    """A browser login: bound to the origin of the login page that asked for it (the Web eID model), so a challenge
    relayed through another site yields a response that the service, computing it from its own origin, refuses."""
    return hashlib.sha256(b"sscard-web:" + origin.encode()).digest()


def files_digest(ef05: bytes, ef06: bytes) -> bytes:
    return hashlib.sha256(ef05 + ef06).digest()


def auth_message(*, challenge: bytes, context: bytes, digest: bytes, flags: int) -> bytes:
    if len(challenge) != CHALLENGE_LEN or len(context) != CONTEXT_LEN or len(digest) != 32:
        raise ValueError("challenge, context and digest are 32 bytes each")
    if not 0 <= flags <= 0xFF:
        raise ValueError("flags is one byte")
    return LABEL + challenge + context + digest + bytes([flags])


# -- 2nd generation: diversified symmetric key, CMAC cryptogram ---------------------------------------------


def _block_cipher(algorithm: str, key: bytes) -> algorithms.BlockCipherAlgorithm:
    if algorithm == "3des":
        if len(key) != 16:
            raise ValueError("3DES keys here are two-key (16 bytes)")
        # Keying option 2 as K1 K2 K1: the 24-byte form the library keeps supporting.
        return TripleDES(key + key[:8])
    if algorithm == "sm4":
        if len(key) != 16:
            raise ValueError("SM4 keys are 16 bytes")
        return algorithms.SM4(key)
    raise ValueError(f"unknown card algorithm {algorithm!r}")


def diversify_key(master_key: bytes, identification_code: str, algorithm: str) -> bytes:
    """Card key from the issuer master key and the card identification code (docs/card-protocol.md)."""
    try:
        code = bytes.fromhex(identification_code)
    except ValueError as exc:
        raise ValueError("card identification code must be hexadecimal") from exc
    if len(code) < 8:
        raise ValueError("card identification code too short")
    d = code[-8:]
    d_inv = bytes(b ^ 0xFF for b in d)
    encryptor = Cipher(_block_cipher(algorithm, master_key), modes.ECB()).encryptor()  # noqa: S305 - key derivation of one block per half, as the card standard specifies
    return encryptor.update(d + d_inv) + encryptor.finalize()


def symmetric_cryptogram(card_key: bytes, algorithm: str, message: bytes) -> bytes:
    mac = cmac.CMAC(_block_cipher(algorithm, card_key))
    mac.update(message)
    return mac.finalize()


def verify_symmetric_cryptogram(card_key: bytes, algorithm: str, message: bytes, cryptogram: bytes) -> bool:
    mac = cmac.CMAC(_block_cipher(algorithm, card_key))
    mac.update(message)
    try:
        mac.verify(cryptogram)  # constant-time comparison inside the library
    except InvalidSignature:
        return False
    return True


# -- 3rd generation: the card's own P-256 key ---------------------------------------------------------------


def sign_message(private_key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    der = private_key.sign(message, ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def verify_message(public_key: ec.EllipticCurvePublicKey, message: bytes, signature: bytes) -> bool:
    if len(signature) != ECDSA_SIG_LEN:
        return False
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        public_key.verify(der, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True
