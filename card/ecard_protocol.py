"""The electronic social security card's wire protocol: the device key as a JWK, its RFC 7638 thumbprint, and the
two messages the device key signs. The one implementation, used by the reference app (card/ecard.py) to sign and
by the service (authsvc/ecard/) to verify; docs/ecard.md describes it.

Each signed message is UTF-8 text, one field per line, led by a purpose label that names the message and its
version, so that a signature made for one purpose can never be taken for another (an enrolment signature is not a
sign-in, a sign-in for one login is not one for another). No field may contain a line break; every field is
checked before it is joined.

    SSCARD-ECARD-ENROL-1        SSCARD-ECARD-SIGNIN-1
    <issuer>                    <service origin>
    <challenge>                 <login id>
    <key thumbprint>            <portal client_id>
                                <challenge>
                                <e-card id>

Signatures are ES256 in the JWS form (RFC 7518 §3.4): the 64-byte r || s, base64url without padding.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from card.request_signing import b64url, b64url_decode

ENROL_LABEL = "SSCARD-ECARD-ENROL-1"
SIGNIN_LABEL = "SSCARD-ECARD-SIGNIN-1"
SIGNATURE_LEN = 64
COORDINATE_LEN = 32
# P-256's field prime: a coordinate is a field element below it (SEC 1 §3.2.2.1). cryptography would reduce a
# larger one modulo p, taking a second encoding of the same key.
_P256_PRIME = 2**256 - 2**224 + 2**192 + 2**96 - 1
# Members a public JWK may carry besides the key itself; anything private is refused outright.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_FIELD = re.compile(r"[\x21-\x7e]{1,512}")  # printable ASCII, no spaces or line breaks


class JwkError(ValueError):
    """The documented refusal of `parse_public_jwk`: not an EC P-256 public key in JWK form."""


def public_jwk(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The key's public JWK, only the members RFC 7638 hashes (what the service stores)."""
    if not isinstance(key.curve, ec.SECP256R1):
        raise JwkError("the device key must be on P-256")
    numbers = key.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url(numbers.x.to_bytes(COORDINATE_LEN, "big")),
        "y": b64url(numbers.y.to_bytes(COORDINATE_LEN, "big")),
    }


def _coordinate(value: Any, name: str) -> int:
    if not isinstance(value, str):
        raise JwkError(f"{name} must be a base64url string")
    try:
        raw = b64url_decode(value)
    except ValueError:
        raise JwkError(f"{name} is not base64url") from None
    # RFC 7518 §6.2.1.2: the full coordinate length, so one key has one JWK (and one thumbprint).
    if len(raw) != COORDINATE_LEN or b64url(raw) != value:
        raise JwkError(f"{name} must be {COORDINATE_LEN} bytes, base64url without padding")
    return int.from_bytes(raw, "big")


def parse_public_jwk(doc: Any) -> tuple[ec.EllipticCurvePublicKey, dict[str, str]]:
    """The P-256 public key of a JWK and its canonical form; raises JwkError (only) for anything else: another key
    type or curve, private members, a malformed coordinate, a point that is not on the curve."""
    if not isinstance(doc, dict):
        raise JwkError("public_key must be a JWK object")
    if _PRIVATE_MEMBERS & set(doc):
        raise JwkError("public_key must not contain private key members")
    if doc.get("kty") != "EC":
        raise JwkError("public_key must be an EC key (kty EC)")
    if doc.get("crv") != "P-256":
        raise JwkError("public_key must be on curve P-256")
    if doc.get("alg", "ES256") != "ES256" or doc.get("use", "sig") != "sig":
        raise JwkError("public_key must be for ES256 signatures")
    x, y = _coordinate(doc.get("x"), "x"), _coordinate(doc.get("y"), "y")
    if x >= _P256_PRIME or y >= _P256_PRIME:
        raise JwkError("public_key is not a point on P-256")
    try:
        key = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    except ValueError:
        raise JwkError("public_key is not a point on P-256") from None
    return key, public_jwk(key)


def thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) of an EC public JWK."""
    members = {name: jwk[name] for name in ("crv", "kty", "x", "y")}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True, ensure_ascii=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


def _message(label: str, *fields: str) -> bytes:
    for value in fields:
        if not isinstance(value, str) or not _FIELD.fullmatch(value):
            raise ValueError("a signed field must be 1-512 printable ASCII characters without spaces")
    return "\n".join((label, *fields)).encode()


def enrol_message(*, issuer: str, challenge: str, key_thumbprint: str) -> bytes:
    """What the device key signs to enrol: the service (issuer), the service's challenge, the key itself."""
    return _message(ENROL_LABEL, issuer, challenge, key_thumbprint)


def signin_message(*, origin: str, login_id: str, client_id: str, challenge: str, ecard_id: str) -> bytes:
    """What the device key signs to sign in: the service's origin, the pending login, the portal it is for, the
    login's current challenge and the e-card."""
    return _message(SIGNIN_LABEL, origin, login_id, client_id, challenge, ecard_id)


def sign(key: ec.EllipticCurvePrivateKey, message: bytes) -> str:
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    return b64url(r.to_bytes(COORDINATE_LEN, "big") + s.to_bytes(COORDINATE_LEN, "big"))


def verify(key: ec.EllipticCurvePublicKey, message: bytes, signature: str) -> bool:
    """Whether `signature` (JWS ES256 form) is the key's over `message`; anything malformed is simply False."""
    try:
        raw = b64url_decode(signature)
    except ValueError:
        return False
    if len(raw) != SIGNATURE_LEN:
        return False
    r, s = int.from_bytes(raw[:COORDINATE_LEN], "big"), int.from_bytes(raw[COORDINATE_LEN:], "big")
    if not (r > 0 and s > 0):
        return False
    try:
        key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True
