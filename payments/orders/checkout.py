"""Starting an order's payment at its channel: the one place where our side asks a channel to take money.

Three steps, and no transaction is held open across the network call:

1. read the order (it must be `created` or `pending`; `pending` asks the channel again, which answers for the same
   out_trade_no with the same payment, so a retry after a lost response is safe);
2. ask the channel (`adapter.create_payment`);
3. record it: `submit` (created → pending). A channel that charges at once (the card's financial account) is then
   queried, and a charge it confirms is marked paid in the same unit of work.

A crash between 2 and 3 leaves the order `created` while the channel holds a payment for it: the recovery sweep
(payments/recovery/) queries such orders, so a charge the channel confirms is never left unpaid.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from authsvc.database import unit_of_work
from payments.channels import card_adapter
from payments.channels.base import ChannelAdapter, PaymentOrderRef, PaymentStart, TradeStatus
from payments.orders import accounting
from payments.orders.domain import InsuranceType
from payments.orders.models import PaymentOrder
from payments.orders.states import State

log = logging.getLogger("sscard.payments")

# The assurance a caller's login must have reached to start a payment on a channel, where the channel needs more
# than the `payments` scope: the card's financial account is the cardholder's own money, so a card + PIN login.
REQUIRED_ACR = {card_adapter.NAME: card_adapter.REQUIRED_ACR}
# Paid only through the bank's batch file (payments/withholding/), never started by a caller.
BATCH_ONLY = frozenset({"withholding"})
STARTABLE = (State.CREATED, State.PENDING)

_TYPE_NAMES = {
    InsuranceType.PENSION: "养老保险",
    InsuranceType.UNEMPLOYMENT: "失业保险",
    InsuranceType.WORK_INJURY: "工伤保险",
}


class NotStartable(Exception):
    """The order cannot be paid now (its state, or a channel paid only by batch); nothing was asked or written."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Started:
    order: PaymentOrder
    start: PaymentStart


def description(order: PaymentOrder) -> str:
    """What the payer sees in the channel's app: the insurance and the periods, never the insured person."""
    periods = order.periods[0] if len(order.periods) == 1 else f"{order.periods[0]}~{order.periods[-1]}"
    return f"社会保险费 {_TYPE_NAMES.get(InsuranceType(order.insurance_type), order.insurance_type)} {periods}"


def order_ref(order: PaymentOrder, *, notify_url: str, expires_at: datetime, payer_ref: str | None) -> PaymentOrderRef:
    return PaymentOrderRef(
        order_no=order.order_no,
        amount_fen=order.amount_fen,
        description=description(order),
        expires_at=expires_at,
        notify_url=notify_url,
        payer_ref=payer_ref,
    )


def check_startable(order: PaymentOrder) -> None:
    if order.channel in BATCH_ONLY:
        raise NotStartable("paid_by_batch", f"{order.channel} orders are paid by the bank's batch, not started here")
    if order.state not in STARTABLE:
        raise NotStartable("order_not_payable", f"the order is {order.state}")


def expiry(order: PaymentOrder, ttl: int | timedelta) -> datetime:
    """When an unpaid order ends: what the channel is told at checkout, and when the recovery sweep closes it."""
    return order.created_at + (ttl if isinstance(ttl, timedelta) else timedelta(seconds=ttl))


def start(adapter: ChannelAdapter, ref: PaymentOrderRef, sessions: sessionmaker[Session]) -> Started:
    """Ask the channel (ChannelUnavailable / ChannelDeclined propagate with nothing written), then record the answer
    in a unit of work of its own. The order returned is detached, as committed."""
    answer = adapter.create_payment(ref)
    if answer.order_no != ref.order_no:
        raise ValueError("the adapter answered for another order")
    # A charged-at-once channel: its own signed query is the confirmation (the callback may come too; the ledger
    # key `order:<no>:paid` makes the second one a no-op).
    trade = adapter.query_payment(ref.order_no) if answer.method == "charged" else None
    with unit_of_work(sessions) as db:
        outcome = accounting.submit(db, ref.order_no)
        if trade is not None and trade.status is TradeStatus.PAID:
            if trade.amount_fen == ref.amount_fen:
                outcome = accounting.mark_paid(db, ref.order_no, amount_fen=trade.amount_fen)
            else:  # never paid on another amount: the callback inbox or the sweep holds it for review
                log.warning("order %s: the channel charged another amount than the order's", ref.order_no)
        order = outcome.order
    log.info("order %s started at %s (%s)", ref.order_no, adapter.name, answer.method)
    return Started(order, answer)
