"""What makes a card login genuine: the rules, separate from where the inputs come from.

The checks, in order (docs/kiosk-api.md): the card data decodes; the cryptogram proves the card answered this
challenge, at this kiosk, over exactly these files (and says whether the PIN was verified); the card is the one the
registry holds, and its holder data is the registry's (real-name); the card is in date and active.
The cryptogram is checked before the registry status so that a card's status is told only to its bearer.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import date

from authsvc.registry import ssn as ssn_rules
from authsvc.registry.models import Card, CardStatus
from card import cryptogram
from card.records import CardIdentification, HolderData, RecordError

STATUS_REASON = {
    CardStatus.REPORTED_LOST: ("card_lost", "the card has been reported lost"),
    CardStatus.FROZEN: ("card_frozen", "the card is frozen"),
    CardStatus.CANCELLED: ("card_cancelled", "the card has been cancelled"),
}


class Refused(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class CardEvidence:
    ef05: bytes
    ef06: bytes
    response: bytes
    certificate: bytes | None


@dataclass(frozen=True)
class ReadCard:
    identification: CardIdentification
    holder: HolderData
    flags: int
    cryptogram: bytes

    @property
    def pin_verified(self) -> bool:
        return bool(self.flags & cryptogram.FLAG_PIN_VERIFIED)


def decode(evidence: CardEvidence) -> ReadCard:
    try:
        identification = CardIdentification.decode(evidence.ef05)
        holder = HolderData.decode(evidence.ef06)
    except RecordError as exc:
        raise Refused("card_data_invalid", f"card data: {exc}") from None
    if len(evidence.response) < 2:
        raise Refused("card_data_invalid", "internal authenticate response is too short")
    return ReadCard(identification, holder, evidence.response[0], evidence.response[1:])


def message(evidence: CardEvidence, read: ReadCard, *, challenge: bytes, context: bytes) -> bytes:
    """What the card signed, with the context the service itself computed (a kiosk's id, the login page's origin),
    never one the caller names."""
    return cryptogram.auth_message(
        challenge=challenge,
        context=context,
        digest=cryptogram.files_digest(evidence.ef05, evidence.ef06),
        flags=read.flags,
    )


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def check_registry(card: Card, read: ReadCard, *, today: date) -> None:
    ident, holder = read.identification, read.holder
    if ident.generation != card.generation or not _same(ident.identification_code, card.identification_code):
        raise Refused("card_unknown", "the card does not match the registry's record of it")
    try:
        ssn = ssn_rules.normalize(holder.ssn)
    except ssn_rules.InvalidSSN as exc:
        raise Refused("card_data_invalid", f"social security number on the card: {exc}") from None
    registered = card.holder
    if not (
        _same(ssn, registered.ssn)
        and _same(holder.name, registered.name)
        and holder.sex == registered.sex
        and holder.birth_date == registered.birth_date
    ):
        raise Refused("holder_mismatch", "the holder data on the card does not match the registry (real-name)")
    if card.expires_on < today or ident.expires_on < today:
        raise Refused("card_expired", "the card has expired")
    if card.status != CardStatus.ACTIVE:
        reason, detail = STATUS_REASON.get(CardStatus(card.status), ("card_unknown", "the card is not usable"))
        raise Refused(reason, detail)
