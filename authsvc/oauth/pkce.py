"""PKCE (RFC 7636), S256 only: `plain` would put the verifier itself in the front channel."""

from __future__ import annotations

import hashlib
import hmac
import re

from card.request_signing import b64url

METHOD = "S256"
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url of a SHA-256, unpadded


def valid_verifier(verifier: str) -> bool:
    return _VERIFIER.fullmatch(verifier) is not None


def valid_challenge(challenge: str) -> bool:
    return _CHALLENGE.fullmatch(challenge) is not None


def challenge_for(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return b64url(digest)


def verify(verifier: str | None, challenge: str) -> bool:
    if verifier is None or not valid_verifier(verifier):
        return False
    return hmac.compare_digest(challenge_for(verifier), challenge)
