"""Signed kiosk requests: every request a kiosk sends carries an Ed25519 signature over what it asks.

A bearer secret could be replayed by anyone who saw it once; a signature over the method, path, time, a
single-use nonce and the body's digest cannot. The server keeps only the kiosk's public key. The scheme is
specified in docs/kiosk-api.md; this module is its one implementation, used by the kiosk to sign and by the
server to verify (the server also enforces the time window and the nonce's single use).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

H_TERMINAL = "Sscard-Terminal"
H_TIMESTAMP = "Sscard-Timestamp"
H_NONCE = "Sscard-Nonce"
H_SIGNATURE = "Sscard-Signature"
LABEL = "SSCARD-REQ-1"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")


def b64url_decode(text: str) -> bytes:
    # urlsafe_b64decode alone skips characters outside the alphabet and also takes "+" and "/".
    if not isinstance(text, str) or len(text) > 100_000 or not _B64URL.fullmatch(text):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError("not base64url") from exc


def signing_input(*, terminal_id: str, method: str, target: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    """`target` is the request's path with its query string, exactly as sent."""
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join([LABEL, terminal_id, method.upper(), target, timestamp, nonce, digest, ""]).encode()


def sign_headers(
    key: Ed25519PrivateKey, *, terminal_id: str, method: str, target: str, body: bytes, now: float | None = None
) -> dict[str, str]:
    timestamp = str(int(time.time() if now is None else now))
    nonce = b64url(secrets.token_bytes(18))
    message = signing_input(
        terminal_id=terminal_id, method=method, target=target, timestamp=timestamp, nonce=nonce, body=body
    )
    return {
        H_TERMINAL: terminal_id,
        H_TIMESTAMP: timestamp,
        H_NONCE: nonce,
        H_SIGNATURE: b64url(key.sign(message)),
    }


@dataclass(frozen=True)
class SignedRequest:
    terminal_id: str
    timestamp: int
    nonce: str
    signature: bytes


class SignatureHeaderError(ValueError):
    """The signature headers are missing or malformed; `reason` is machine-readable."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def parse_headers(headers: Mapping[str, str]) -> SignedRequest:
    values = {name: headers.get(name) for name in (H_TERMINAL, H_TIMESTAMP, H_NONCE, H_SIGNATURE)}
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise SignatureHeaderError("signature_missing", f"missing header(s): {', '.join(missing)}")
    terminal_id, timestamp, nonce, signature = (values[h] for h in (H_TERMINAL, H_TIMESTAMP, H_NONCE, H_SIGNATURE))
    assert terminal_id and timestamp and nonce and signature
    if len(terminal_id) > 64 or not terminal_id.isascii() or not terminal_id.isprintable():
        raise SignatureHeaderError("signature_malformed", f"{H_TERMINAL} is not a terminal id")
    # isdigit() alone accepts "²" (a Latin-1 header byte), which int() then refuses with a bare ValueError.
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        raise SignatureHeaderError("signature_malformed", f"{H_TIMESTAMP} must be Unix seconds")
    if not _NONCE.fullmatch(nonce):
        raise SignatureHeaderError("signature_malformed", f"{H_NONCE} must be 16 to 64 base64url characters")
    try:
        raw = b64url_decode(signature)
    except ValueError as exc:
        raise SignatureHeaderError("signature_malformed", f"{H_SIGNATURE} is not base64url") from exc
    if len(raw) != 64:
        raise SignatureHeaderError("signature_malformed", f"{H_SIGNATURE} is not an Ed25519 signature")
    return SignedRequest(terminal_id=terminal_id, timestamp=int(timestamp), nonce=nonce, signature=raw)


def verify(public_key: Ed25519PublicKey, request: SignedRequest, *, method: str, target: str, body: bytes) -> bool:
    message = signing_input(
        terminal_id=request.terminal_id,
        method=method,
        target=target,
        timestamp=str(request.timestamp),
        nonce=request.nonce,
        body=body,
    )
    try:
        public_key.verify(request.signature, message)
    except InvalidSignature:
        return False
    return True
