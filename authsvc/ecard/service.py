"""E-card use cases: enrolment (challenge, proof of possession, limits), listing, revocation by the holder, and
revocation of every e-card of a physical card reported lost or cancelled.

Each function takes the caller's session and only flushes; the request's unit of work is the commit point, so an
e-card, its audit event and (for a lost card) the card's new status commit together. Refusals are raised as
EcardRefused after their audit event is added; routes return them, so that event still commits.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from authsvc.audit import service as audit
from authsvc.database import lock, utcnow
from authsvc.ecard import repository
from authsvc.ecard.models import Ecard, EcardStatus
from authsvc.registry.masking import mask_card_number
from authsvc.registry.models import Card, CardStatus
from authsvc.runtime import Runtime
from card import ecard_protocol as protocol
from card.request_signing import b64url

CHALLENGE_BYTES = 32
ENROL_EVENT = "ecard_enrolled"
REVOKE_EVENT = "ecard_revoked"
HOLDER_REVOKED = "holder_revoked"
# A physical card's new status → the reason its e-cards are revoked with.
CARD_REASONS = {CardStatus.REPORTED_LOST: "card_reported_lost", CardStatus.CANCELLED: "card_cancelled"}


class EcardRefused(Exception):
    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail


def _challenge_key(challenge: str) -> str:
    # Hashed: the store never holds a value that could be presented as it is.
    return "ecard:enrol:" + hashlib.sha256(challenge.encode()).hexdigest()[:40]


def new_enrolment_challenge(runtime: Runtime, subject: str) -> tuple[str, int]:
    """A single-use challenge bound to the person (their public subject); it and its lifetime in seconds."""
    challenge = b64url(secrets.token_bytes(CHALLENGE_BYTES))
    ttl = runtime.settings.challenge_ttl
    runtime.store.put(_challenge_key(challenge), subject.encode(), ttl)
    return challenge, ttl


def _device_name(value: str) -> str:
    name = value.strip()
    if not 1 <= len(name) <= 64 or not name.isprintable():
        raise EcardRefused(400, "invalid_device_name", "device_name must be 1-64 printable characters")
    return name


@dataclass(frozen=True)
class Enrolment:
    subject: str
    public_key: Any
    device_name: str
    challenge: str
    signature: str


def _refuse(db: Session, subject: str, status: int, reason: str, detail: str, **extra: Any) -> EcardRefused:
    audit.record(db, event=ENROL_EVENT, outcome="failure", reason=reason, subject=subject, detail=extra or None)
    return EcardRefused(status, reason, detail)


def enrol(runtime: Runtime, db: Session, request: Enrolment) -> Ecard:
    """Enrol a device key for the person. The challenge is spent by any attempt, whatever its outcome."""
    bound = runtime.store.take(_challenge_key(request.challenge))
    if bound is None or not hmac.compare_digest(bound, request.subject.encode()):
        # Unknown, expired, used, or issued to somebody else: all the same to the caller.
        raise _refuse(db, request.subject, 400, "challenge_invalid", "the enrolment challenge is unknown or spent")
    name = _device_name(request.device_name)
    try:
        key, jwk = protocol.parse_public_jwk(request.public_key)
    except protocol.JwkError as exc:
        raise _refuse(db, request.subject, 400, "invalid_public_key", str(exc)) from None
    jkt = protocol.thumbprint(jwk)
    message = protocol.enrol_message(issuer=runtime.settings.issuer, challenge=request.challenge, key_thumbprint=jkt)
    if not protocol.verify(key, message, request.signature):
        raise _refuse(db, request.subject, 400, "signature_invalid", "the signature does not prove the device key")
    holder = repository.holder_by_subject(db, request.subject)
    if holder is None:
        raise _refuse(db, request.subject, 403, "cardholder_unknown", "no cardholder stands behind this sign-in")
    lock(db, f"cardholder:{holder.id}")  # two concurrent enrolments must not both pass the limit
    today = date.today()
    card = next((c for c in holder.cards if c.status == CardStatus.ACTIVE and c.expires_on >= today), None)
    if card is None:
        raise _refuse(db, request.subject, 409, "no_active_card", "an e-card needs an active physical card")
    if repository.by_jkt(db, jkt) is not None:
        raise _refuse(db, request.subject, 409, "key_enrolled", "this device key is enrolled already", jkt=jkt)
    limit = runtime.settings.ecard_max_active
    if repository.active_count(db, holder.id) >= limit:
        raise _refuse(db, request.subject, 409, "too_many_ecards", f"at most {limit} active e-cards; revoke one first")
    row = Ecard(
        public_id=secrets.token_urlsafe(16),
        cardholder_id=holder.id,
        card_id=card.id,
        public_jwk=jwk,
        jkt=jkt,
        device_name=name,
        status=EcardStatus.ACTIVE,
    )
    try:
        with db.begin_nested():  # the same key enrolled concurrently by another person: the unique jkt decides
            repository.add(db, row)
    except IntegrityError:
        raise _refuse(
            db, request.subject, 409, "key_enrolled", "this device key is enrolled already", jkt=jkt
        ) from None
    audit.record(
        db,
        event=ENROL_EVENT,
        outcome="success",
        subject=holder.subject,
        card_number=card.card_number,
        detail={"ecard_id": row.public_id, "jkt": jkt},
    )
    return row


def of_person(db: Session, subject: str) -> list[Ecard]:
    holder = repository.holder_by_subject(db, subject)
    return [] if holder is None else repository.of_holder(db, holder.id)


def _revoke(db: Session, row: Ecard, reason: str) -> None:
    row.status = EcardStatus.REVOKED
    row.revoked_reason = reason
    row.revoked_at = utcnow()
    db.flush()
    audit.record(
        db,
        event=REVOKE_EVENT,
        outcome="success",
        reason=reason,
        subject=row.holder.subject,
        card_number=row.card.card_number,
        detail={"ecard_id": row.public_id},
    )


def revoke_own(db: Session, subject: str, public_id: str) -> Ecard:
    """The holder revokes one of their e-cards. Anybody else's, or none, is the same 404: ids reveal nothing."""
    row = repository.by_public_id(db, public_id)
    if row is None or not hmac.compare_digest(row.holder.subject.encode(), subject.encode()):
        raise EcardRefused(404, "ecard_unknown", "no such e-card of yours")
    if row.active:
        _revoke(db, row, HOLDER_REVOKED)
    return row


def revoke_for_card(db: Session, card: Card) -> int:
    """Called when `card` changes status (authsvc/registry/service.set_card_status): reported lost or cancelled,
    every e-card enrolled with it is revoked in the same transaction. Returns how many."""
    reason = CARD_REASONS.get(CardStatus(card.status))
    if reason is None:
        return 0
    rows = repository.active_of_card(db, card.id)
    for row in rows:
        _revoke(db, row, reason)
    return len(rows)


def describe(row: Ecard) -> dict[str, Any]:
    """What the holder sees of an e-card (never the whole card number)."""
    return {
        "id": row.public_id,
        "device_name": row.device_name,
        "status": row.status,
        "revoked_reason": row.revoked_reason,
        "jkt": row.jkt,
        "card": mask_card_number(row.card.card_number),
        "created_at": row.created_at.isoformat(),
        "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None,
        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
    }
