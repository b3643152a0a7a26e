"""SSO session tables and the back-channel logout outbox."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from authsvc.database import Base, UTCDateTime, utcnow


class SsoSession(Base):
    __tablename__ = "sso_sessions"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    # In ID tokens and logout tokens; random, says nothing about the person.
    sid: Mapped[str] = mapped_column(String(43), unique=True)
    # keys.hmac_keys digest of the cookie's secret part: a database leak yields no usable cookie.
    cookie_digest: Mapped[str] = mapped_column(String(128))
    subject: Mapped[str] = mapped_column(String(32), index=True)  # the public subject
    acr: Mapped[str] = mapped_column(String(64))
    amr: Mapped[list[str]] = mapped_column(JSON, default=list)
    auth_time: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)  # for `authsvc purge`

    clients: Mapped[list[SsoSessionClient]] = relationship(back_populates="session", order_by="SsoSessionClient.id")


class SsoSessionClient(Base):
    """A portal the browser signed in to under the session: each gets a logout token when the session ends."""

    __tablename__ = "sso_session_clients"
    __table_args__ = (UniqueConstraint("session_id", "client_id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sso_sessions.id", ondelete="CASCADE"), index=True)
    client_id: Mapped[str] = mapped_column(String(64))
    first_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    session: Mapped[SsoSession] = relationship(back_populates="clients")


class DeliveryStatus:
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # gave up after settings.logout_max_attempts


class LogoutDelivery(Base):
    """Outbox of back-channel logout tokens, written in the transaction that ends the session. The token is signed
    at each attempt (its `exp` is short), from the claims kept here; `jti` stays the same so a portal can dedupe."""

    __tablename__ = "logout_deliveries"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64))
    uri: Mapped[str] = mapped_column(Text)
    claims: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    last_error: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
