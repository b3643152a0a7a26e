"""Order and refund tables. An order's state changes only through payments/orders/accounting.py, which posts the
ledger entry of the change in the same unit of work."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import JSON, BigInteger, Boolean, CheckConstraint, ForeignKey, Index, Integer, String, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from authsvc.database import Base, UTCDateTime, utcnow

ID = BigInteger().with_variant(Integer, "sqlite")

# An order's first channel query (payments/recovery/), if no callback settled it by then.
FIRST_CHECK_AFTER = timedelta(minutes=1)


class PaymentOrder(Base):
    __tablename__ = "payment_orders"
    __table_args__ = (
        CheckConstraint("amount_fen > 0", name="amount_positive"),
        CheckConstraint("refund_reserved_fen >= refunded_fen AND refund_reserved_fen <= amount_fen", name="refunds"),
        # The sweep's scan: created and pending orders whose check is due, oldest due first.
        Index("ix_payment_orders_due", "state", "next_check_at"),
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    # Our order number (the channels' out_trade_no): random, never the database id, so it tells nothing away.
    order_no: Mapped[str] = mapped_column(String(32), unique=True)
    payer_kind: Mapped[str] = mapped_column(String(16))
    payer: Mapped[str] = mapped_column(String(64), index=True)
    # Stored as the registry stores it (authsvc/registry/models.py); logs and displays use masked_ssn.
    insured_ssn: Mapped[str] = mapped_column(String(18), index=True)
    insurance_type: Mapped[str] = mapped_column(String(16))
    periods: Mapped[list[str]] = mapped_column(JSON)
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    region: Mapped[str] = mapped_column(String(6))
    channel: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(24), index=True)
    # Refunds accepted (in flight or confirmed) and refunds the channel confirmed; never above the amount paid.
    refund_reserved_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    refunded_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The HMAC of the caller and its Idempotency-Key (payments/api/idempotency.py), and of the request body. Unique,
    # so the database itself refuses a second order under one key even when the shared store has lost track of it
    # (a worker died between the commit and keeping the response). NULL for orders created without a key.
    idempotency_key: Mapped[str | None] = mapped_column(String(64), index=True, unique=True)
    idempotency_body: Mapped[str | None] = mapped_column(String(64))
    # The recovery sweep (payments/recovery/) asks the channel about a created or pending order when next_check_at
    # comes, backing off by check_attempts, so a charge whose callback never came is found; past its expiry
    # (created_at + SSCARD_PAYMENT_ORDER_TTL, as the channel was told) it closes the order, at the channel first.
    # NULL: nothing more to ask (a charge held for review).
    next_check_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=lambda: utcnow() + FIRST_CHECK_AFTER)
    check_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    def __repr__(self) -> str:  # the default repr would print the SSN
        return f"PaymentOrder({self.order_no} {self.state} {self.amount_fen} fen)"


class PaymentRefund(Base):
    __tablename__ = "payment_refunds"
    __table_args__ = (CheckConstraint("amount_fen > 0", name="amount_positive"),)

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    refund_no: Mapped[str] = mapped_column(String(40), unique=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("payment_orders.id"), index=True)
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    # awaiting_approval (above the approval threshold, nothing sent yet), requested (sent or to be sent to the
    # channel), succeeded, failed (the channel said no), rejected (the second operator said no). payments/refunds/.
    state: Mapped[str] = mapped_column(String(20), index=True)  # the recovery sweeper looks for `requested`
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Who asked and why (the operator is the access token's client and subject), and the second operator's word.
    reason: Mapped[str | None] = mapped_column(String(200))
    requested_client: Mapped[str | None] = mapped_column(String(64))
    requested_subject: Mapped[str | None] = mapped_column(String(64))
    approval_required: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    decision: Mapped[str | None] = mapped_column(String(16))  # approved, rejected
    decided_client: Mapped[str | None] = mapped_column(String(64))
    decided_subject: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decision_note: Mapped[str | None] = mapped_column(String(200))
    # The channel's side: when we last had an answer from it, its refund number, its decline code.
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    channel_refund_no: Mapped[str | None] = mapped_column(String(64))
    channel_note: Mapped[str | None] = mapped_column(String(200))
    # HMACs of the operator's Idempotency-Key and request body (payments/api/idempotency.py), as on orders.
    idempotency_key: Mapped[str | None] = mapped_column(String(64), index=True, unique=True)
    idempotency_body: Mapped[str | None] = mapped_column(String(64))

    order: Mapped[PaymentOrder] = relationship(lazy="joined")
