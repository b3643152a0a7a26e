"""Registry tables."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import Date, ForeignKey, SmallInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from authsvc.database import Base, UTCDateTime, utcnow


class CardStatus(StrEnum):
    ACTIVE = "active"
    REPORTED_LOST = "reported_lost"
    FROZEN = "frozen"
    CANCELLED = "cancelled"


class TerminalStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


class Cardholder(Base):
    __tablename__ = "cardholders"

    id: Mapped[int] = mapped_column(primary_key=True)
    # The token subject: random and stable, so that tokens never carry the social security number.
    subject: Mapped[str] = mapped_column(String(32), unique=True)
    ssn: Mapped[str] = mapped_column(String(18), unique=True)
    name: Mapped[str] = mapped_column(String(64))
    sex: Mapped[str] = mapped_column(String(1))
    birth_date: Mapped[date] = mapped_column(Date)
    region_code: Mapped[str] = mapped_column(String(6))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The reference photo's id in the liveness vendor's gallery (authsvc/liveness/); None: no face check possible.
    photo_ref: Mapped[str | None] = mapped_column(String(64), default=None)

    cards: Mapped[list[Card]] = relationship(back_populates="holder")


class Card(Base):
    __tablename__ = "cards"

    id: Mapped[int] = mapped_column(primary_key=True)
    card_number: Mapped[str] = mapped_column(String(9), unique=True)
    identification_code: Mapped[str] = mapped_column(String(32), unique=True)
    cardholder_id: Mapped[int] = mapped_column(ForeignKey("cardholders.id"), index=True)
    generation: Mapped[int] = mapped_column(SmallInteger)
    status: Mapped[str] = mapped_column(String(16), default=CardStatus.ACTIVE)
    issued_on: Mapped[date] = mapped_column(Date)
    expires_on: Mapped[date] = mapped_column(Date)
    # 2nd generation: the master key the card key was diversified from. 3rd: the certificate's SHA-256.
    key_ref: Mapped[str | None] = mapped_column(String(64))
    certificate_sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    holder: Mapped[Cardholder] = relationship(back_populates="cards", lazy="joined")


class Terminal(Base):
    __tablename__ = "terminals"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    region_code: Mapped[str] = mapped_column(String(6))
    public_key_pem: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=TerminalStatus.ACTIVE)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
