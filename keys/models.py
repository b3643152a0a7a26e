"""Stored key material: one table for every purpose, so rotation and audit work the same way for all."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from authsvc.database import Base, UTCDateTime, utcnow


class Purpose(StrEnum):
    SIGNING = "signing"  # ID and access tokens (ES256)
    ROOT_CA = "root_ca"  # national root of the card PKI
    ISSUER_CA = "issuer_ca"  # provincial card issuer CA, under the root
    CARD_MASTER = "card_master"  # 2nd-generation issuer master key (3DES or SM4)
    HMAC = "hmac"  # server-side keyed hashes (client secrets, refresh tokens, session cookies, DPoP nonces)


class KeyState(StrEnum):
    NEXT = "next"  # published, not yet used
    ACTIVE = "active"  # used for new signatures or issuance
    RETIRED = "retired"  # published (or kept for verification) until publish_until


class KeyRecord(Base):
    __tablename__ = "key_material"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16), index=True)
    algorithm: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(8))
    # Scope within the purpose: the province code for an issuer CA, the algorithm for a master key.
    label: Mapped[str] = mapped_column(String(32), default="")
    public_pem: Mapped[str | None] = mapped_column(Text)
    certificate_pem: Mapped[str | None] = mapped_column(Text)
    sealed_secret: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    publish_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
