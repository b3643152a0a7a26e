"""Proving a card: the one implementation behind every card login (kiosk, browser through `sscard helper`).

The caller supplies the challenge it handed out and the context it computed itself; this module decodes the card
data, checks the card's throttle, authenticates the cryptogram (and for a 3rd-generation card its certificate), then
the registry (real-name, dates, status) and the PIN flag. The order is the one docs/kiosk-api.md states: the card
proves itself before its registry status is told.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import date

from sqlalchemy.orm import Session

from authsvc.kiosk import verification
from authsvc.kiosk.throttle import Throttle
from authsvc.kiosk.verification import CardEvidence, ReadCard, Refused
from authsvc.registry import repository
from authsvc.registry.models import Card
from authsvc.runtime import Runtime
from card import cryptogram
from keys.card_pki import CertificateInvalid


@dataclass
class Attempt:
    """What an attempt revealed so far, for the caller's audit and throttling even when it is refused."""

    card_number: str | None = None  # as the card data claims it: audited (masked), not trusted
    proven: bool = False  # the cryptogram verified: only a proven card's failures count against the card


@dataclass(frozen=True)
class ProvenCard:
    card: Card
    read: ReadCard


def _verify_cryptogram(
    runtime: Runtime, session: Session, card: Card, evidence: CardEvidence, read: ReadCard, message: bytes
) -> None:
    if card.generation == 3:
        if not evidence.certificate:
            raise Refused("certificate_invalid", "a 3rd-generation card login needs the card certificate")
        try:
            verified = runtime.card_trust.verify(evidence.certificate)
        except CertificateInvalid as exc:
            raise Refused("certificate_invalid", str(exc)) from None
        fingerprint = hashlib.sha256(evidence.certificate).hexdigest()
        if not (card.certificate_sha256 and hmac.compare_digest(fingerprint, card.certificate_sha256)) or (
            verified.card_number != card.card_number or verified.identification_code != card.identification_code
        ):
            raise Refused("certificate_invalid", "the certificate is not the one issued for this card")
        if not cryptogram.verify_message(verified.public_key, message, read.cryptogram):
            raise Refused("cryptogram_invalid", "the card's signature does not verify")
    else:
        if not card.key_ref:
            raise Refused("card_unknown", "no key is registered for this card")
        algorithm, key = runtime.master_keys.card_key(
            session, kid=card.key_ref, identification_code=card.identification_code
        )
        if len(read.cryptogram) != cryptogram.MAC_LEN[algorithm] or not cryptogram.verify_symmetric_cryptogram(
            key, algorithm, message, read.cryptogram
        ):
            raise Refused("cryptogram_invalid", "the card's cryptogram does not verify")


def prove(
    runtime: Runtime,
    session: Session,
    evidence: CardEvidence,
    *,
    challenge: bytes,
    context: bytes,
    throttle: Throttle,
    attempt: Attempt,
) -> ProvenCard:
    """The card and its holder, or Refused / Throttled; `attempt` says how far it got either way."""
    read = verification.decode(evidence)
    attempt.card_number = read.identification.card_number
    throttle.check_card(attempt.card_number)
    card = repository.card_by_number(session, attempt.card_number)
    if card is None:
        # Nothing to authenticate the card against; "unknown" would tell any caller which numbers exist.
        raise Refused("cryptogram_invalid", "the card could not be authenticated")
    message = verification.message(evidence, read, challenge=challenge, context=context)
    _verify_cryptogram(runtime, session, card, evidence, read, message)
    attempt.proven = True
    verification.check_registry(card, read, today=date.today())
    if not read.pin_verified:
        raise Refused("pin_not_verified", "a card login needs the cardholder's PIN")
    return ProvenCard(card, read)
