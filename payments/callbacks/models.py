"""The inbox table: one row per verified channel event, written in the transaction that applies it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from authsvc.database import Base, UTCDateTime, utcnow

ID = BigInteger().with_variant(Integer, "sqlite")


class CallbackOutcome(StrEnum):
    APPLIED = "applied"  # the order changed (and its entry was posted)
    DUPLICATE = "duplicate"  # another event already brought the order there (e.g. Alipay TRADE_FINISHED after SUCCESS)
    HELD_AMOUNT_MISMATCH = "held_amount_mismatch"  # charged another amount or currency: not paid, held in suspense
    UNKNOWN_ORDER = "unknown_order"  # no such order of ours: kept for investigation
    CONFLICT = "conflict"  # contradicts the order's state (a late failure after paid): reported, never applied
    UNKNOWN_REFUND = "unknown_refund"  # a refund notice for no refund of ours: kept for investigation
    IGNORED = "ignored"  # a state that changes nothing (WAIT_BUYER_PAY, USERPAYING, ...)


class PaymentCallback(Base):
    __tablename__ = "payment_callbacks"
    # The unique event id is what deduplicates deliveries, concurrent ones included: the second insert waits for
    # the first transaction and then fails, and that delivery is answered as a duplicate.
    __table_args__ = (UniqueConstraint("channel", "event_id"),)

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    # WeChat Pay: transaction_id:trade_state; Alipay: notify_id.
    event_id: Mapped[str] = mapped_column(String(128))
    order_ref: Mapped[str] = mapped_column(String(64), index=True)  # out_trade_no as the channel sent it
    # Refund notifications only: our refund number as the channel sent it (channel_trade_no is its refund number).
    refund_ref: Mapped[str | None] = mapped_column(String(64), index=True)
    channel_trade_no: Mapped[str] = mapped_column(String(64))
    channel_state: Mapped[str] = mapped_column(String(32))
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    outcome: Mapped[str] = mapped_column(String(24), index=True)
    note: Mapped[str | None] = mapped_column(String(200))
    # The verified (and, for WeChat Pay, decrypted) content, without signatures or keys, for whoever investigates.
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)

    def __repr__(self) -> str:
        return f"PaymentCallback({self.channel} {self.event_id} {self.order_ref} {self.outcome})"
