"""Recording a verified channel event and applying it to its order, in the caller's unit of work.

The inbox row is inserted first, before anything is read: its unique (channel, event_id) is the deduplication. A
concurrent delivery of the same event waits on that insert (the PostgreSQL unique index, SQLite's single writer)
until the first transaction commits, then fails on it and is answered as a duplicate; since the insert is the
transaction's first statement, nothing else has to be undone. The order row lock taken by
payments/orders/accounting.py serialises different events of one order, and the ledger key `order:<no>:paid` makes
a second posting impossible even so.

Every fen a channel says it took is in the ledger after its callback: in the fund when the order is paid, otherwise
(another amount, an unknown order, a charge on a closed order) moved from `clearing:<channel>` to
`suspense:<channel>` for review, never to the fund.

Refund notifications (RefundEvent) go through the same inbox and are applied by payments/refunds/service.py under the
same order row lock: succeeded or failed settle the refund, processing is ignored, a notice for a refund we do not
have is kept (`unknown_refund`), a contradiction (failed after succeeded) is a `conflict` and another amount is held
(`held_amount_mismatch`), neither applied. No money is posted for those: the refund's own entries already hold it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import String, cast, literal, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from payments.callbacks.models import CallbackOutcome, PaymentCallback
from payments.channels.base import ChannelEvent, Kind, RefundEvent
from payments.ledger import accounts
from payments.ledger.models import LedgerEntry
from payments.ledger.service import credit, debit, post
from payments.orders import accounting
from payments.orders.states import Reason
from payments.refunds import service as refunds

log = logging.getLogger("sscard.payments.callbacks")

ORDER_CURRENCY = "CNY"  # every contribution order is in fen of CNY


@dataclass(frozen=True)
class Received:
    outcome: CallbackOutcome
    redelivery: bool  # the same event id was recorded before: nothing was done this time


def _row(event: ChannelEvent | RefundEvent) -> PaymentCallback:
    if isinstance(event, RefundEvent):
        return PaymentCallback(
            channel=event.channel,
            event_id=event.event_id,
            order_ref=event.order_no[:64],
            refund_ref=event.refund_no[:64],
            channel_trade_no=event.channel_refund_no[:64],
            channel_state=f"refund:{event.outcome}",
            amount_fen=event.amount_fen,
            currency=ORDER_CURRENCY,  # refunds go back in the order's currency
            outcome="received",
            payload=event.payload,
        )
    return PaymentCallback(
        channel=event.channel,
        event_id=event.event_id,
        order_ref=event.order_no,
        channel_trade_no=event.channel_trade_no,
        channel_state=event.channel_state,
        amount_fen=event.amount_fen,
        currency=event.currency,
        outcome="received",  # replaced below, before the commit
        payload=event.payload,
    )


def receive(db: Session, event: ChannelEvent | RefundEvent) -> Received:
    row = _row(event)
    db.add(row)
    try:
        db.flush()
    except IntegrityError:
        db.rollback()
        first = db.scalar(
            select(PaymentCallback).where(
                PaymentCallback.channel == event.channel, PaymentCallback.event_id == event.event_id
            )
        )
        if first is None:  # some other constraint: not a redelivery, let the caller fail (the channel retries)
            raise
        log.info("%s event %s for order %s delivered again", event.channel, event.event_id, event.order_no)
        return Received(CallbackOutcome(first.outcome), redelivery=True)
    outcome, note = _apply_refund(db, event) if isinstance(event, RefundEvent) else _apply(db, row, event)
    row.outcome, row.note = outcome, note
    db.flush()
    level = logging.INFO if outcome in (CallbackOutcome.APPLIED, CallbackOutcome.DUPLICATE) else logging.WARNING
    log.log(level, "%s event %s for order %s: %s", event.channel, event.event_id, event.order_no, outcome)
    return Received(outcome, redelivery=False)


def _apply(db: Session, row: PaymentCallback, event: ChannelEvent) -> tuple[CallbackOutcome, str | None]:
    order = accounting.find_locked(db, event.order_no)
    if order is None:
        _hold(db, row, event, "callback_unknown_order")
        return CallbackOutcome.UNKNOWN_ORDER, None
    if order.channel != event.channel:
        _hold(db, row, event, "callback_conflict")
        return CallbackOutcome.CONFLICT, f"the order is for channel {order.channel}"
    if event.kind is Kind.PAID:
        if event.amount_fen != order.amount_fen or event.currency != ORDER_CURRENCY:
            _hold(db, row, event, "callback_held")
            return (
                CallbackOutcome.HELD_AMOUNT_MISMATCH,
                f"charged {event.amount_fen} {event.currency}, the order is {order.amount_fen} {ORDER_CURRENCY}",
            )
        result = accounting.mark_paid(db, order.order_no, amount_fen=event.amount_fen)
    elif event.kind is Kind.FAILED:
        result = accounting.fail(db, order.order_no)
    elif event.kind is Kind.CLOSED:
        result = accounting.close(db, order.order_no)
    else:
        return CallbackOutcome.IGNORED, None
    if result.changed:
        return CallbackOutcome.APPLIED, None
    assert result.refused is not None
    if result.refused.reason is Reason.DUPLICATE:
        return CallbackOutcome.DUPLICATE, None
    if event.kind is Kind.PAID:  # a charge on a failed or closed order: the money is real, keep it in suspense
        _hold(db, row, event, "callback_conflict")
    return CallbackOutcome.CONFLICT, f"{result.refused.event} refused in state {result.refused.state}"


def _apply_refund(db: Session, event: RefundEvent) -> tuple[CallbackOutcome, str | None]:
    result = refunds.apply_outcome(
        db,
        refund_no=event.refund_no,
        channel=event.channel,
        order_no=event.order_no,
        outcome=event.outcome,
        amount_fen=event.amount_fen,
        channel_refund_no=event.channel_refund_no,
        amount_is_total=event.amount_is_total,
    )
    return CallbackOutcome(result.applied.value), result.note


def _hold(db: Session, row: PaymentCallback, event: ChannelEvent, kind: str) -> None:
    """A charge we do not apply still left the payer's account: clearing owes it, suspense holds it for review."""
    if event.kind is not Kind.PAID:
        return
    if _held_before(db, row, event):
        return
    amount = event.amount_fen
    post(
        db,
        f"callback:{row.id}:suspense",
        kind,
        [debit(accounts.clearing(event.channel), amount), credit(accounts.suspense(event.channel), amount)],
        order_ref=event.order_no,
    )


def _held_before(db: Session, row: PaymentCallback, event: ChannelEvent) -> bool:
    """The same charge (its trade number) already held in suspense through another row: its callback and the
    recovery sweep's query (payments/recovery/) both report it, and the money must sit in suspense once. The order
    row lock taken before serialises the two."""
    hold_key = literal("callback:") + cast(PaymentCallback.id, String) + literal(":suspense")
    earlier = (
        select(PaymentCallback.id)
        .join(LedgerEntry, LedgerEntry.key == hold_key)
        .where(
            PaymentCallback.channel == event.channel,
            PaymentCallback.channel_trade_no == event.channel_trade_no,
            PaymentCallback.id != row.id,
        )
    )
    return db.scalar(earlier.limit(1)) is not None
