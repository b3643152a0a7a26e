"""The generic liveness vendor's wire format (docs/liveness.md): signed JSON requests, responses and verdict
callbacks. Pure: bytes, headers and keys in, typed values out; no network, no database, the clock passed in.

Both sides sign with ECDSA P-256 / SHA-256 (DER, base64) over one layout, as Tencent Cloud FaceID, Alibaba Cloud's
实人认证 and the payment gateways do in their own spellings:

    <purpose>\\n<app id>\\n<timestamp>\\n<nonce>\\n<body bytes>

The purpose is `REQUEST <path>`, `RESPONSE <path>` or `CALLBACK`, so a signature made for one use never verifies for
another; the app id is our account at the vendor, so a verdict for another customer does not verify as ours.
`Liveness-Key-Id` names the signer's key: a `KeyRing` holds every key currently valid, so during a rotation the old
and the new key both verify. Whatever cannot be verified or understood raises CallbackRejected; messages name fields,
never their values.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from authsvc.liveness.vendor import CallbackRejected, RejectReason

H_APP, H_KEY_ID, H_TIMESTAMP, H_NONCE, H_SIGNATURE = (
    "Liveness-App-Id",
    "Liveness-Key-Id",
    "Liveness-Timestamp",
    "Liveness-Nonce",
    "Liveness-Signature",
)
HEADERS = (H_APP, H_KEY_ID, H_TIMESTAMP, H_NONCE, H_SIGNATURE)
CALLBACK = "CALLBACK"
SESSIONS_PATH = "/v1/liveness/sessions"
MAX_BODY = 16 * 1024
MIN_SCORE, MAX_SCORE = 0.0, 100.0

# No whitespace or separators: a newline in any of them would let bytes move between fields of the signed string.
TOKEN = re.compile(r"[A-Za-z0-9_\-]{1,64}")
NONCE = re.compile(r"[A-Za-z0-9_\-]{16,64}")
BIZ_REF = re.compile(r"[A-Za-z0-9_\-]{16,64}")
REFERENCE = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
_TIMESTAMP = re.compile(r"[1-9][0-9]{0,11}")
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


# --- keys and signatures ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    """One side's private key with the id the other side knows it by."""

    key_id: str
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        if not TOKEN.fullmatch(self.key_id):
            raise ValueError("a key id is 1 to 64 of A-Z a-z 0-9 _ -")
        if not isinstance(self.private_key.curve, ec.SECP256R1):
            raise ValueError("liveness vendor keys are ECDSA P-256")

    @classmethod
    def generate(cls, key_id: str) -> SigningKey:
        return cls(key_id, ec.generate_private_key(ec.SECP256R1()))

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self.private_key.sign(message, ec.ECDSA(hashes.SHA256()))).decode("ascii")

    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def private_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


@dataclass(frozen=True)
class KeyRing:
    """The other side's public keys by key id: every one verifies, so a new key and the old one overlap."""

    keys: Mapping[str, ec.EllipticCurvePublicKey]

    @classmethod
    def of(cls, *pairs: tuple[str, Any]) -> KeyRing:
        keys: dict[str, ec.EllipticCurvePublicKey] = {}
        for key_id, material in pairs:
            key = serialization.load_pem_public_key(material) if isinstance(material, bytes) else material
            if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
                raise ValueError(f"key {key_id!r} is not an ECDSA P-256 public key")
            keys[key_id] = key
        return cls(keys)

    def verify(self, key_id: str, message: bytes, signature: str) -> None:
        key = self.keys.get(key_id)
        if key is None:
            raise CallbackRejected(RejectReason.UNKNOWN_KEY, f"{H_KEY_ID} names no key we hold")
        try:
            raw = base64.b64decode(signature.encode("ascii"), validate=True)
            key.verify(raw, message, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, binascii.Error, ValueError, UnicodeEncodeError):
            raise CallbackRejected(RejectReason.SIGNATURE, "signature does not verify") from None


def signed_message(purpose: str, app_id: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    return f"{purpose}\n{app_id}\n{timestamp}\n{nonce}\n".encode("ascii") + body


def request_purpose(path: str) -> str:
    return f"REQUEST {path}"


def response_purpose(path: str) -> str:
    return f"RESPONSE {path}"


def new_nonce() -> str:
    return secrets.token_hex(16)


def sign_headers(
    key: SigningKey, purpose: str, app_id: str, body: bytes, *, now: float, nonce: str | None = None
) -> dict[str, str]:
    """The five headers of a signed message. A response passes the request's nonce, binding it to that request."""
    nonce = nonce or new_nonce()
    timestamp = str(int(now))
    signature = key.sign(signed_message(purpose, app_id, timestamp, nonce, body))
    return {H_APP: app_id, H_KEY_ID: key.key_id, H_TIMESTAMP: timestamp, H_NONCE: nonce, H_SIGNATURE: signature}


def _header(headers: Mapping[str, str], name: str) -> str:
    getlist = getattr(headers, "getlist", None) or getattr(headers, "get_list", None)
    values = (
        list(getlist(name)) if getlist is not None else [v for k, v in headers.items() if k.lower() == name.lower()]
    )
    if len(values) != 1:
        raise CallbackRejected(RejectReason.MALFORMED, f"header {name} must appear exactly once")
    return values[0]


@dataclass(frozen=True)
class Signed:
    app_id: str
    key_id: str
    timestamp: int
    nonce: str


def verify_headers(
    headers: Mapping[str, str],
    body: bytes,
    *,
    purpose: str,
    keys: KeyRing,
    app_id: str,
    now: float,
    max_age: int,
    max_ahead: int,
    nonce: str | None = None,
) -> Signed:
    """Check a signed message: headers well-formed, the signature under a key of the ring, our app id, the timestamp
    inside the past-only window [now - max_age, now + max_ahead], and (for a response) our request's nonce echoed."""
    values = {name: _header(headers, name) for name in HEADERS}
    if not TOKEN.fullmatch(values[H_APP]) or not TOKEN.fullmatch(values[H_KEY_ID]):
        raise CallbackRejected(RejectReason.MALFORMED, f"{H_APP} or {H_KEY_ID} malformed")
    if not _TIMESTAMP.fullmatch(values[H_TIMESTAMP]):
        raise CallbackRejected(RejectReason.MALFORMED, f"{H_TIMESTAMP} must be Unix seconds")
    if not NONCE.fullmatch(values[H_NONCE]):
        raise CallbackRejected(RejectReason.MALFORMED, f"{H_NONCE} must be 16 to 64 of A-Z a-z 0-9 _ -")
    if len(body) > MAX_BODY:
        raise CallbackRejected(RejectReason.MALFORMED, "body too large")
    message = signed_message(purpose, values[H_APP], values[H_TIMESTAMP], values[H_NONCE], body)
    keys.verify(values[H_KEY_ID], message, values[H_SIGNATURE])
    # After the signature, so that only the vendor can learn which of our values it got wrong.
    if not secrets.compare_digest(values[H_APP], app_id):
        raise CallbackRejected(RejectReason.MISMATCH, f"{H_APP} is not ours")
    timestamp = int(values[H_TIMESTAMP])
    if timestamp > now + max_ahead or timestamp < now - max_age:
        raise CallbackRejected(RejectReason.STALE, f"{H_TIMESTAMP} outside the window")
    if nonce is not None and not secrets.compare_digest(values[H_NONCE], nonce):
        raise CallbackRejected(RejectReason.MISMATCH, "the response's nonce is not our request's")
    return Signed(values[H_APP], values[H_KEY_ID], timestamp, values[H_NONCE])


# --- JSON bodies -------------------------------------------------------------------------------------------------


def dumps(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def loads(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise CallbackRejected(RejectReason.MALFORMED, "body is not JSON") from None
    if not isinstance(doc, dict):
        raise CallbackRejected(RejectReason.MALFORMED, "body is not a JSON object")
    return doc


def _no_constant(_name: str) -> Any:
    raise ValueError("NaN and Infinity are not JSON")


def text(doc: Mapping[str, Any], name: str, pattern: re.Pattern[str] = TOKEN) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise CallbackRejected(RejectReason.MALFORMED, f"{name} missing or malformed")
    return value


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: object, name: str) -> datetime:
    if not isinstance(value, str) or not _TIME.fullmatch(value):
        raise CallbackRejected(RejectReason.MALFORMED, f"{name} must be YYYY-MM-DDTHH:MM:SSZ")
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise CallbackRejected(RejectReason.MALFORMED, f"{name} is not a real time") from None


def score_of(value: object) -> float:
    """The comparison score: a JSON number from 0 to 100 (not a boolean, not a string)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CallbackRejected(RejectReason.MALFORMED, "score must be a number")
    score = float(value)
    if not math.isfinite(score) or not MIN_SCORE <= score <= MAX_SCORE:
        raise CallbackRejected(RejectReason.MALFORMED, "score must be from 0 to 100")
    return score


@dataclass(frozen=True)
class CallbackBody:
    session_id: str
    biz_ref: str
    live: bool
    score: float
    event_time: datetime


def parse_callback(body: bytes) -> CallbackBody:
    """The verdict in a callback's body (signature checked before). Unknown fields are ignored: vendors add some."""
    doc = loads(body)
    live = doc.get("live")
    if not isinstance(live, bool):
        raise CallbackRejected(RejectReason.MALFORMED, "live must be true or false")
    return CallbackBody(
        session_id=text(doc, "session_id"),
        biz_ref=text(doc, "biz_ref", BIZ_REF),
        live=live,
        score=score_of(doc.get("score")),
        event_time=parse_time(doc.get("event_time"), "event_time"),
    )


def callback_body(session_id: str, biz_ref: str, *, live: bool, score: float, event_time: datetime) -> bytes:
    return dumps(
        {
            "session_id": session_id,
            "biz_ref": biz_ref,
            "live": live,
            "score": score,
            "event_time": format_time(event_time),
        }
    )


def session_request(
    app_id: str, *, biz_ref: str, reference_id: str, callback_url: str, return_url: str | None, expires_in: int
) -> bytes:
    return dumps(
        {
            "app_id": app_id,
            "biz_ref": biz_ref,
            "reference_id": reference_id,
            "callback_url": callback_url,
            "return_url": return_url,
            "expires_in": expires_in,
        }
    )


def acknowledgement(*, retry: bool) -> tuple[int, bytes]:
    """What the vendor reads: 200 {"code":"OK"} stops its retries; 503 {"code":"RETRY"} asks for one later."""
    if retry:
        return 503, dumps({"code": "RETRY", "message": "not recorded; deliver it again later"})
    return 200, dumps({"code": "OK"})
