from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from authsvc.database import Base, UTCDateTime, utcnow


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    event: Mapped[str] = mapped_column(String(48))
    outcome: Mapped[str] = mapped_column(String(16))  # success | failure
    reason: Mapped[str | None] = mapped_column(String(48))
    terminal_id: Mapped[str | None] = mapped_column(String(64), index=True)
    # Masked identifiers only: the audit trail is read by more people than the registry is.
    card: Mapped[str | None] = mapped_column(String(16))
    subject: Mapped[str | None] = mapped_column(String(32), index=True)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)
