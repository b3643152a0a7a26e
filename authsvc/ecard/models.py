"""The e-cards table: one row per enrolled device key."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from authsvc.database import Base, UTCDateTime, utcnow
from authsvc.registry.models import Card, Cardholder


class EcardStatus(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"


class Ecard(Base):
    __tablename__ = "ecards"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    # What the app and the API name the e-card by: random, so it says nothing about the person or the count.
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    cardholder_id: Mapped[int] = mapped_column(ForeignKey("cardholders.id"), index=True)
    # The holder's active physical card at enrolment: reporting it lost or cancelling it revokes this e-card.
    card_id: Mapped[int] = mapped_column(ForeignKey("cards.id"), index=True)
    # The device's P-256 public key as a JWK (kty, crv, x, y only) and its RFC 7638 thumbprint: a key is
    # enrolled once, ever (a revoked key does not come back).
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    jkt: Mapped[str] = mapped_column(String(43), unique=True)
    device_name: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=EcardStatus.ACTIVE)
    revoked_reason: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    holder: Mapped[Cardholder] = relationship(lazy="joined", innerjoin=True)
    card: Mapped[Card] = relationship(lazy="joined", innerjoin=True)

    @property
    def active(self) -> bool:
        return self.status == EcardStatus.ACTIVE
