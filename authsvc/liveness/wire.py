"""The generic liveness vendor's wire format (docs/liveness.md): signed JSON requests, responses and verdict
callbacks. Pure: bytes, headers and keys in, typed values out; no network, no database, the clock passed in.

Both sides sign with ECDSA P-256 / SHA-256 (DER, base64) over one layout, as Tencent Cloud FaceID, Alibaba Cloud's
实人认证 and the payment gateways do in their own spellings:

    <purpose>\\n<app id>\\n<timestamp>\\n<nonce>\\n<body bytes>

The purpose is `REQUEST <path>`, `RESPONSE <path>` or `CALLBACK`, so a signature made for one use never verifies for
another; the app id is our account at the vendor, so a verdict for another customer does not verify as ours.
`Liveness-Key-Id` names the signer's key: a `KeyRing` holds every key currently valid, so during a rotation the old
and the new key both verify. The recipe is keys/signed_messages.py (shared with the bank gateway); `SCHEME` spells it
the vendor's way. Whatever cannot be verified or understood raises CallbackRejected; messages name fields, never
their values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from authsvc.liveness.vendor import CallbackRejected, RejectReason
from keys.signed_messages import NONCE as NONCE
from keys.signed_messages import TOKEN, Reason, Scheme, format_time
from keys.signed_messages import KeyRing as KeyRing
from keys.signed_messages import SigningKey as SigningKey
from keys.signed_messages import request_purpose as request_purpose
from keys.signed_messages import response_purpose as response_purpose


def _rejection(reason: Reason, message: str) -> CallbackRejected:
    return CallbackRejected(RejectReason(reason), message)


# The default window is SSCARD_LIVENESS_CALLBACK_WINDOW's and _SKEW's; the adapter passes the configured one.
SCHEME = Scheme("Liveness", "App-Id", max_body=16 * 1024, max_age=300, max_ahead=5, refuse=_rejection)
HEADERS = H_APP, H_KEY_ID, H_TIMESTAMP, H_NONCE, H_SIGNATURE = SCHEME.headers
CALLBACK = "CALLBACK"
SESSIONS_PATH = "/v1/liveness/sessions"
# The recipe's steps, spelt the vendor's way (verify_headers: `account=` is our app id).
sign_headers, verify_headers, loads, dumps = SCHEME.sign_headers, SCHEME.verify_headers, SCHEME.loads, SCHEME.dumps
MIN_SCORE, MAX_SCORE = 0.0, 100.0

BIZ_REF = re.compile(r"[A-Za-z0-9_\-]{16,64}")
REFERENCE = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")


# --- JSON fields -------------------------------------------------------------------------------------------------


def text(doc: Mapping[str, Any], name: str, pattern: re.Pattern[str] = TOKEN) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise CallbackRejected(RejectReason.MALFORMED, f"{name} missing or malformed")
    return value


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
        event_time=SCHEME.parse_time(doc.get("event_time"), "event_time"),
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
