"""Order and refund queries (flush only; the caller's unit of work commits)."""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from payments.orders.domain import OrderSpec
from payments.orders.models import PaymentOrder, PaymentRefund
from payments.orders.states import State


def new_order_no() -> str:
    # 24 random hex digits after a fixed prefix: within every channel's out_trade_no alphabet and length (32).
    return "SO" + secrets.token_hex(12)


def add_order(
    db: Session,
    spec: OrderSpec,
    *,
    order_no: str | None = None,
    idempotency_key: str | None = None,
    idempotency_body: str | None = None,
) -> PaymentOrder:
    """Insert a validated spec (payments.orders.domain.validate) as a created order. With an idempotency key digest
    taken by another order the flush raises IntegrityError (the unique index)."""
    order = PaymentOrder(
        order_no=order_no or new_order_no(),
        payer_kind=spec.payer_kind,
        payer=spec.payer,
        insured_ssn=spec.insured_ssn,
        insurance_type=spec.insurance_type,
        periods=list(spec.periods),
        amount_fen=spec.amount_fen,
        region=spec.region,
        channel=spec.channel,
        state=State.CREATED,
        refund_reserved_fen=0,
        refunded_fen=0,
        idempotency_key=idempotency_key,
        idempotency_body=idempotency_body,
    )
    db.add(order)
    db.flush()
    return order


def order_by_no(db: Session, order_no: str, *, for_update: bool = False) -> PaymentOrder | None:
    query = select(PaymentOrder).where(PaymentOrder.order_no == order_no)
    if for_update:
        # The row lock serialises every change of one order (callbacks, queries, refunds) until commit.
        # Read after the lock, even when the session loaded the order before: what it holds may be stale by now.
        query = query.with_for_update().execution_options(populate_existing=True)
    return db.scalar(query)


def order_by_idempotency_key(db: Session, key_digest: str) -> PaymentOrder | None:
    return db.scalar(select(PaymentOrder).where(PaymentOrder.idempotency_key == key_digest))


def refund_by_no(db: Session, refund_no: str, *, for_update: bool = False) -> PaymentRefund | None:
    query = select(PaymentRefund).where(PaymentRefund.refund_no == refund_no)
    if for_update:
        query = query.with_for_update(of=PaymentRefund)
    return db.scalar(query)
