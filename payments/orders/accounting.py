"""Order state changes together with their ledger entries, in the caller's unit of work.

Each function locks the order row, asks the state machine, changes the order and posts the entry; the caller's
unit of work commits them together or not at all. What each change posts (docs/payments.md):

| change | key | debit | credit |
|---|---|---|---|
| paid | `order:<no>:paid` | `clearing:<channel>` | `fund:<type>:<region>` |
| refund requested | `refund:<no>:requested` | `fund:<type>:<region>` | `refunds:<channel>` |
| refund succeeded | `refund:<no>:succeeded` | `refunds:<channel>` | `clearing:<channel>` |
| refund failed | `refund:<no>:failed` | `refunds:<channel>` | `fund:<type>:<region>` (the request reversed) |

submit, fail and close post nothing: no money moved.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.orm import Session

from authsvc.database import utcnow
from payments.ledger import accounts
from payments.ledger.service import credit, debit, post
from payments.money import MoneyError, check_fen
from payments.orders import repository
from payments.orders.models import PaymentOrder, PaymentRefund
from payments.orders.states import Event, Reason, Refused, State, transition

log = logging.getLogger("sscard.payments")
_HELD = "payments.locked_orders"  # Session.info: (the transaction, {order_no: order locked in it})


class AccountingError(ValueError):
    """A change refused; nothing was written."""


class RefundRefused(AccountingError):
    """A refund request refused, with a stable machine-readable `reason` for the API (payments/refunds/)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# Refund states (PaymentRefund.state). Only `requested` refunds are sent to the channel.
AWAITING_APPROVAL = "awaiting_approval"
REQUESTED = "requested"
SUCCEEDED = "succeeded"
FAILED = "failed"
REJECTED = "rejected"


@dataclass(frozen=True)
class Outcome:
    """What happened to the order: `changed` false with `refused` set for a repeat or a conflict."""

    order: PaymentOrder
    changed: bool
    refused: Refused | None = None


def find_locked(db: Session, order_no: str) -> PaymentOrder | None:
    """The order row, locked until commit (None if there is no such order): every change of an order goes through
    here, so concurrent changes of one order (a callback and the recovery sweep, two refunds) are serialised and
    each reads what the other wrote. Locked once per transaction: a second call in it costs no round trip."""
    transaction = db.get_transaction()
    held = db.info.get(_HELD)
    if held is None or held[0] is not transaction:
        held = db.info[_HELD] = (transaction, {})
    if order_no in held[1]:
        return held[1][order_no]
    if db.get_bind().dialect.name == "sqlite":
        # pysqlite runs SELECTs before a transaction's first write outside any transaction, and FOR UPDATE means
        # nothing there: a no-op write takes the single writer's lock now, so a concurrent change of this order
        # waits for our commit and the reads below are current.
        db.execute(
            update(PaymentOrder)
            .where(PaymentOrder.order_no == order_no)
            .values(order_no=PaymentOrder.order_no)
            .execution_options(synchronize_session=False)
        )
    order = repository.order_by_no(db, order_no, for_update=True)
    if order is not None:
        held[1][order_no] = order
    return order


def _locked(db: Session, order_no: str) -> PaymentOrder:
    order = find_locked(db, order_no)
    if order is None:
        raise AccountingError(f"no order {order_no!r}")
    return order


def _fund(order: PaymentOrder) -> str:
    return accounts.fund(order.insurance_type, order.region)


def _apply(order: PaymentOrder, event: Event) -> Refused | None:
    result = transition(State(order.state), event)
    if isinstance(result, Refused):
        # A conflict (a late "failed" after "paid") is reported, never applied; a repeat is only noted.
        level = logging.INFO if result.reason is Reason.DUPLICATE else logging.WARNING
        log.log(level, "order %s: %s", order.order_no, result)
        return result
    order.state = result
    order.updated_at = utcnow()
    return None


def submit(db: Session, order_no: str) -> Outcome:
    order = _locked(db, order_no)
    refused = _apply(order, Event.SUBMIT)
    return Outcome(order, refused is None, refused)


def mark_paid(db: Session, order_no: str, *, amount_fen: int) -> Outcome:
    """The channel confirmed the charge of `amount_fen`. An amount other than the order's is refused (it is held for
    review by the caller, never paid); a repeat is acknowledged without a second entry."""
    order = _locked(db, order_no)
    if amount_fen != order.amount_fen or isinstance(amount_fen, bool):
        raise AccountingError(
            f"order {order_no}: the channel charged {amount_fen!r} fen, the order is for {order.amount_fen} fen"
        )
    refused = _apply(order, Event.PAY)
    if refused is not None:
        return Outcome(order, False, refused)
    order.paid_at = order.updated_at
    post(
        db,
        f"order:{order.order_no}:paid",
        "paid",
        [debit(accounts.clearing(order.channel), order.amount_fen), credit(_fund(order), order.amount_fen)],
        order_ref=order.order_no,
    )
    return Outcome(order, True)


def fail(db: Session, order_no: str) -> Outcome:
    order = _locked(db, order_no)
    refused = _apply(order, Event.FAIL)
    return Outcome(order, refused is None, refused)


def close(db: Session, order_no: str) -> Outcome:
    order = _locked(db, order_no)
    refused = _apply(order, Event.CLOSE)
    return Outcome(order, refused is None, refused)


def request_refund(
    db: Session, order_no: str, refund_no: str, amount_fen: int, *, awaiting_approval: bool = False
) -> PaymentRefund:
    """Accept a refund of `amount_fen` (before asking the channel): never above what was paid less what is already
    refunded or in flight. The same refund number again returns the refund already accepted. A refund
    `awaiting_approval` is reserved the same way (nobody else can spend that amount meanwhile) but is not to be sent
    until `refund_approved`; `refund_rejected` releases it. Refusals are RefundRefused with a reason."""
    try:
        check_fen(amount_fen)
    except MoneyError as exc:
        raise RefundRefused("refund_invalid", f"refund amount: {exc}") from None
    if not isinstance(refund_no, str) or not 0 < len(refund_no) <= 40 or not refund_no.isprintable():
        raise RefundRefused("refund_invalid", "a refund number is 1 to 40 printable characters")
    order = lock_order(db, order_no)
    existing = repository.refund_by_no(db, refund_no)
    if existing is not None:
        if existing.order_id != order.id or existing.amount_fen != amount_fen:
            raise RefundRefused("refund_number_reused", f"refund {refund_no!r} exists with another order or amount")
        return existing
    if order.state not in (State.PAID, State.PARTIALLY_REFUNDED):
        raise RefundRefused(
            "order_not_refundable", f"order {order_no} is {order.state}: only a paid order can be refunded"
        )
    left = order.amount_fen - order.refund_reserved_fen
    if amount_fen > left:
        raise RefundRefused(
            "refund_exceeds_remaining", f"a refund of {amount_fen} fen is more than the {left} fen left on the order"
        )
    state = AWAITING_APPROVAL if awaiting_approval else REQUESTED
    refund = PaymentRefund(
        refund_no=refund_no, order_id=order.id, amount_fen=amount_fen, state=state, approval_required=awaiting_approval
    )
    db.add(refund)
    order.refund_reserved_fen += amount_fen
    order.updated_at = utcnow()
    db.flush()
    post(
        db,
        f"refund:{refund_no}:requested",
        "refund_requested",
        [debit(_fund(order), amount_fen), credit(accounts.refunds(order.channel), amount_fen)],
        order_ref=order.order_no,
    )
    return refund


def refund_succeeded(db: Session, refund_no: str) -> Outcome:
    """The channel confirmed the refund: the order moves to partially_refunded or refunded."""
    refund, order = lock_refund(db, refund_no)
    if refund.state == SUCCEEDED:
        return Outcome(order, False, Refused(State(order.state), Event.REFUND_FULL, Reason.DUPLICATE))
    if refund.state != REQUESTED:
        raise AccountingError(f"refund {refund_no} already {refund.state}")
    full = order.refunded_fen + refund.amount_fen == order.amount_fen
    refused = _apply(order, Event.REFUND_FULL if full else Event.REFUND_PARTIAL)
    if refused is not None:  # cannot happen while the reservation rules hold; never post without the state change
        raise AccountingError(str(refused))
    refund.state, refund.settled_at = SUCCEEDED, order.updated_at
    order.refunded_fen += refund.amount_fen
    post(
        db,
        f"refund:{refund_no}:succeeded",
        "refund_succeeded",
        [
            debit(accounts.refunds(order.channel), refund.amount_fen),
            credit(accounts.clearing(order.channel), refund.amount_fen),
        ],
        order_ref=order.order_no,
    )
    return Outcome(order, True)


def refund_failed(db: Session, refund_no: str) -> Outcome:
    """The channel refused the refund: the reservation is released and the request's entry reversed."""
    refund, order = lock_refund(db, refund_no)
    if refund.state == FAILED:
        return Outcome(order, False)
    if refund.state != REQUESTED:
        raise AccountingError(f"refund {refund_no} already {refund.state}")
    _release(db, refund, order, FAILED)
    return Outcome(order, False)


def refund_approved(db: Session, refund_no: str) -> PaymentRefund:
    """The second operator approved: the refund may now be sent. No money moves (it was reserved when requested).
    Whether this operator may approve is payments/refunds/domain.py's decision, taken under `lock_refund`."""
    refund, _ = lock_refund(db, refund_no)
    if refund.state != AWAITING_APPROVAL:
        raise AccountingError(f"refund {refund_no} is {refund.state}, not awaiting approval")
    refund.state = REQUESTED
    return refund


def refund_rejected(db: Session, refund_no: str) -> PaymentRefund:
    """The second operator rejected (or the requester withdrew) a refund never sent: the reservation is released
    and the request's entry reversed, as for a refund the channel refused."""
    refund, order = lock_refund(db, refund_no)
    if refund.state != AWAITING_APPROVAL:
        raise AccountingError(f"refund {refund_no} is {refund.state}, not awaiting approval")
    _release(db, refund, order, REJECTED)
    return refund


def _release(db: Session, refund: PaymentRefund, order: PaymentOrder, state: str) -> None:
    refund.state, refund.settled_at = state, utcnow()
    order.refund_reserved_fen -= refund.amount_fen
    order.updated_at = refund.settled_at
    post(
        db,
        f"refund:{refund.refund_no}:{state}",
        f"refund_{state}",
        [debit(accounts.refunds(order.channel), refund.amount_fen), credit(_fund(order), refund.amount_fen)],
        order_ref=order.order_no,
    )


def lock_refund(db: Session, refund_no: str) -> tuple[PaymentRefund, PaymentOrder]:
    """The refund and its order, the order row locked until commit: read a refund's state through this before
    deciding anything about it."""
    refund = repository.refund_by_no(db, refund_no)
    if refund is None:
        raise AccountingError(f"no refund {refund_no!r}")
    order = lock_order(db, refund.order.order_no)
    db.refresh(refund)
    return refund, order


def lock_order(db: Session, order_no: str) -> PaymentOrder:
    """The order row, locked until commit and read after the lock: the lock for everything about the order, refunds
    included. Call it before reading what a refund decision depends on (what is left, the refund's state)."""
    return _locked(db, order_no)
