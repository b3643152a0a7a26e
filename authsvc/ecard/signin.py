"""Signing in with the e-card by QR code (cross-device): the browser's login page shows a QR code for its pending
login, the app scans it, shows the portal's name, and signs the login's challenge with its device key.

1. `qr`: only the browser bound to the login gets a QR URL, on this service's origin, carrying the login id and a
   fresh QR token. The token is short-lived, single use, and each new one voids the previous one (the page
   rotates it), so a QR code photographed or relayed elsewhere is soon worthless.
2. `scan`: the app presents the QR token (spent here) and receives the login's challenge with what it must show
   the citizen before signing: the portal's registered name, its client_id, the level asked, the service origin.
3. `approve`: the device key's signature over card/ecard_protocol.signin_message, binding the service origin, the
   login, the portal's client_id, the challenge (single use) and the e-card. A signature made for another login
   or another portal does not verify; nor does one for another service (the origin is ours, never the caller's).

Shared-store keys (single key each):
  ecard:qr:<login id>               SHA-256 of the login's current QR token (put: replaces; taken by the scan)
  pending:chal:<login id>:ecard     the login's challenge for the app (authsvc/login/pending.py)
Failed signatures count per e-card (authsvc/kiosk/throttle.py's per-card counter, under an e-card key).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy.orm import Session

from authsvc.audit import service as audit
from authsvc.database import utcnow
from authsvc.ecard import repository
from authsvc.ecard.models import Ecard
from authsvc.ecard.service import EcardRefused
from authsvc.kiosk.service import throttle_for
from authsvc.kiosk.throttle import Throttle, Throttled
from authsvc.login import face, methods, pending
from authsvc.registry.models import CardStatus
from authsvc.runtime import Runtime
from authsvc.tokens import assurance
from card import cryptogram
from card import ecard_protocol as protocol
from card.request_signing import b64url

METHOD = assurance.METHOD_ECARD
EVENT = "ecard_signin"
QR_PATH = "/ecard/scan"
CHALLENGE_BYTES = 32


def origin(runtime: Runtime) -> str:
    return cryptogram.web_origin(runtime.settings.issuer)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class QrCode:
    url: str
    expires_in: int


def qr(runtime: Runtime, login: pending.PendingLogin) -> QrCode:
    """A fresh QR URL for the bound browser; it voids the one shown before. Only while the e-card is among the
    methods this login still needs (the page shows the code then): at a level an e-card adds nothing to, none."""
    proven = pending.proven(runtime.store, login)
    if METHOD not in methods.offered(runtime, proven, login.request.acr):
        raise EcardRefused(409, "method_not_offered", "this sign-in does not need the e-card (any more)")
    token = secrets.token_urlsafe(24)
    ttl = max(1, min(runtime.settings.ecard_qr_ttl, login.seconds_left()))
    runtime.store.put(f"ecard:qr:{login.login_id}", _digest(token), ttl)
    return QrCode(f"{runtime.settings.issuer}{QR_PATH}?l={login.login_id}&t={token}", ttl)


def scan(runtime: Runtime, login_id: str, qr_token: str) -> dict[str, Any]:
    """Spend the QR token; the challenge and what the app shows before the citizen approves."""
    login = pending.get(runtime.store, login_id)
    key = f"ecard:qr:{login_id}"
    shown = runtime.store.get(key) if login is not None else None
    # A wrong token leaves the page's code alone (whoever guesses at a login id cannot void it); the right one is
    # then taken, so of two scans of the same code only one goes on.
    if (
        login is None
        or shown is None
        or not hmac.compare_digest(shown, _digest(qr_token))
        or not runtime.store.take(key)
    ):
        raise EcardRefused(404, "qr_invalid", "this QR code has expired or was used: scan the one on the page now")
    challenge = secrets.token_bytes(CHALLENGE_BYTES)
    ttl = runtime.settings.challenge_ttl
    pending.put_challenge(runtime.store, login, METHOD, challenge, ttl)
    return {
        "login_id": login_id,
        "challenge": b64url(challenge),
        "portal": login.request.client_name,
        "client_id": login.request.client_id,
        "acr": login.request.acr,
        "origin": origin(runtime),
        "expires_in": max(1, min(ttl, login.seconds_left())),
    }


def _throttle_key(row: Ecard) -> str:
    return "ecard:" + row.public_id


def _audit(db: Session, outcome: str, reason: str | None, login: pending.PendingLogin, row: Ecard | None) -> None:
    detail: dict[str, Any] = {"client_id": login.request.client_id}
    if row is not None:
        detail["ecard_id"] = row.public_id
    audit.record(
        db,
        event=EVENT,
        outcome=outcome,
        reason=reason,
        subject=row.holder.subject if row is not None else None,
        card_number=row.card.card_number if row is not None else None,
        detail=detail,
    )


def _verify(runtime: Runtime, login: pending.PendingLogin, row: Ecard, challenge: bytes, signature: str) -> bool:
    key, _ = protocol.parse_public_jwk(row.public_jwk)
    message = protocol.signin_message(
        origin=origin(runtime),
        login_id=login.login_id,
        client_id=login.request.client_id,
        challenge=b64url(challenge),
        ecard_id=row.public_id,
    )
    return protocol.verify(key, message, signature)


def _check(
    runtime: Runtime,
    login: pending.PendingLogin,
    row: Ecard | None,
    challenge: bytes | None,
    signature: str,
    throttle: Throttle,
) -> Ecard:
    if challenge is None:
        raise EcardRefused(409, "challenge_unknown", "no challenge is waiting for this login: scan the QR code again")
    if row is None:
        raise EcardRefused(422, "ecard_unknown", "no such e-card")
    if not _verify(runtime, login, row, challenge, signature):
        throttle.failure(terminal_id=None, card_number=_throttle_key(row))
        raise EcardRefused(422, "signature_invalid", "the signature is not this e-card's for this login and portal")
    # The status is told only to the key's holder (as the card's is): after the signature.
    if not row.active:
        raise EcardRefused(422, "ecard_revoked", "this e-card has been revoked")
    if row.card.status != CardStatus.ACTIVE:
        raise EcardRefused(422, "card_not_active", "the card this e-card was enrolled with is not active")
    if row.card.expires_on < date.today():  # as the card itself is refused (authsvc/kiosk/verification.py)
        raise EcardRefused(422, "card_expired", "the card this e-card was enrolled with has expired")
    return row


def approve(runtime: Runtime, db: Session, login_id: str, ecard_id: str, signature: str) -> dict[str, Any]:
    """Verify the app's signature and complete the login's e-card step. Raises EcardRefused or Throttled; either
    way the challenge is spent and the page learns why."""
    store = runtime.store
    throttle = throttle_for(runtime)
    login = pending.get(store, login_id)
    if login is None:
        raise EcardRefused(404, "login_unknown", "no such login is pending (expired or finished)")
    row = repository.by_public_id(db, ecard_id)
    try:
        challenge = pending.take_challenge(store, login_id, METHOD)
        if row is not None:  # a throttled e-card is refused before any cryptography
            throttle.check_card(_throttle_key(row))
        row = _check(runtime, login, row, challenge, signature, throttle)
        try:
            progress = pending.complete(store, login_id, subject=row.holder.subject, amr=[assurance.HWK], method=METHOD)
        except pending.CompletionRefused as exc:
            status = 404 if exc.reason == "login_unknown" else 409 if exc.reason == "login_completed" else 422
            raise EcardRefused(status, exc.reason, exc.detail) from None
    except EcardRefused as exc:
        _audit(db, "failure", exc.reason, login, row)
        pending.fail(store, login, exc.reason)
        raise
    except Throttled as exc:
        _audit(db, "failure", "throttled", login, row)
        pending.fail(store, login, "throttled", {"retry_after": exc.retry_after})
        raise
    row.last_used_at = utcnow()
    _audit(db, "success", None, login, row)
    if progress.done:
        return {"status": "done", "acr": progress.auth.acr, "amr": progress.auth.amr}
    answer: dict[str, Any] = {
        "status": "partial",
        "missing": methods.offered(runtime, progress.auth.amr, login.request.acr),
    }
    if assurance.METHOD_FACE in answer["missing"]:
        answer["face"] = _start_face(runtime, db, login)
    return answer


def _start_face(runtime: Runtime, db: Session, login: pending.PendingLogin) -> dict[str, Any]:
    """The level demands a live face as well: the app does the capture with the vendor (it is the device in the
    citizen's hand); the vendor's verdict completes the login through its callback. The e-card step stands even
    when the face check cannot start now: the page offers it again."""
    try:
        started = face.start(runtime, db, login)
    except face.FaceRefused as exc:
        return {"error": exc.reason, "detail": exc.detail}
    return {"capture_url": started.capture_url, "expires_in": started.expires_in}
