"""The durable record of every liveness session and the verdict it got (migration 0014)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Boolean, Float, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from authsvc.database import Base, UTCDateTime, utcnow


class SessionState(StrEnum):
    OPEN = "open"  # waiting for the vendor's verdict
    PASSED = "passed"  # a live face matching the photo, in time: the login got `face`
    FAILED = "failed"  # not live, or a score below the threshold, in time
    EXPIRED = "expired"  # no verdict within the session's time (a verdict after that is recorded as late)
    SUPERSEDED = "superseded"  # the citizen started another face check for the same login


class LivenessSession(Base):
    __tablename__ = "liveness_sessions"
    __table_args__ = (UniqueConstraint("vendor", "vendor_session_id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    biz_ref: Mapped[str] = mapped_column(String(64), unique=True)  # our opaque id, echoed by the vendor
    vendor: Mapped[str] = mapped_column(String(32))
    vendor_session_id: Mapped[str] = mapped_column(String(64))
    login_id: Mapped[str] = mapped_column(String(64), index=True)
    subject: Mapped[str] = mapped_column(String(32))
    # The cardholder's photo in the vendor's gallery: not a secret, but it names a person's photo, so logs mask it.
    reference_id: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default=SessionState.OPEN)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)  # indexed for `authsvc purge`
    # The verdict, once one arrived (also a late one, with `late` set): the same verdict again changes nothing, a
    # different one is refused.
    verdict_digest: Mapped[str | None] = mapped_column(String(64))
    live: Mapped[bool | None] = mapped_column(Boolean)
    score: Mapped[float | None] = mapped_column(Float)
    verdict_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # the vendor's event time
    received_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    late: Mapped[bool] = mapped_column(Boolean, default=False)
