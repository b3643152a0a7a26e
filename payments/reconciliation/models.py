"""Reconciliation runs (one per channel, day and statement file) and their discrepancy items."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Date, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from authsvc.database import Base, UTCDateTime, utcnow

ID = BigInteger().with_variant(Integer, "sqlite")


class Category(StrEnum):
    MATCHED = "matched"
    CHANNEL_ONLY = "channel_only"  # 长款: the channel moved money we did not record
    OURS_ONLY = "ours_only"  # 短款: we recorded it, the channel's statement does not have it
    AMOUNT_MISMATCH = "amount_mismatch"


class Resolution(StrEnum):
    OPEN = "open"  # not looked at yet (a run interrupted before resolving resumes here)
    BACKFILLED = "backfilled"  # the channel confirmed the charge: the order was marked paid now
    MATCHED_LATE = "matched_late"  # the channel confirmed what we recorded (a day-boundary case); nothing to post
    HELD_BY_CALLBACK = "held_by_callback"  # the callbacks inbox already moved this money to suspense
    PARKED = "parked"  # moved to or from suspense by a reconciliation entry, for review


class RunStatus(StrEnum):
    MATCHED = "matched"  # imported and matched; items not all resolved yet
    RESOLVED = "resolved"


class ReconRun(Base):
    __tablename__ = "recon_runs"
    # The same file for the same day is the same run: importing it again returns this row.
    __table_args__ = (UniqueConstraint("channel", "day", "digest"),)

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    channel: Mapped[str] = mapped_column(String(32))
    day: Mapped[date] = mapped_column(Date, index=True)
    digest: Mapped[str] = mapped_column(String(64))  # SHA-256 of the statement's bytes
    lines: Mapped[int] = mapped_column(BigInteger)  # money lines in the statement
    status: Mapped[str] = mapped_column(String(16))
    # {"payment"|"refund": {category: {"count", "statement_fen", "ours_fen"}}}, every category present.
    totals: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def __repr__(self) -> str:
        return f"ReconRun({self.id} {self.channel} {self.day} {self.status})"


class ReconItem(Base):
    """One discrepancy (never a matched line: a million matched lines are counted in the run, not listed)."""

    __tablename__ = "recon_items"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("recon_runs.id"), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # payment, refund
    category: Mapped[str] = mapped_column(String(16))
    line_no: Mapped[int | None] = mapped_column(BigInteger)  # None for ours-only
    occurrence: Mapped[int] = mapped_column(Integer)  # 2 and up: the reference came again in the same statement
    order_no: Mapped[str | None] = mapped_column(String(64), index=True)
    channel_trade_no: Mapped[str | None] = mapped_column(String(64))
    refund_no: Mapped[str | None] = mapped_column(String(64))
    channel_refund_no: Mapped[str | None] = mapped_column(String(64))
    statement_fen: Mapped[int | None] = mapped_column(BigInteger)
    ours_fen: Mapped[int | None] = mapped_column(BigInteger)
    resolution: Mapped[str] = mapped_column(String(20), index=True)
    ledger_key: Mapped[str | None] = mapped_column(String(128))
    note: Mapped[str | None] = mapped_column(String(200))
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def __repr__(self) -> str:
        return f"ReconItem({self.id} {self.kind} {self.category} {self.order_no} {self.resolution})"
