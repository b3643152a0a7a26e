"""The recovery sweep: ask the channel about orders whose callback has not come, and act on what it confirms.

For each created or pending order whose check is due (`next_check_at`), in three steps with no transaction held
across the network:

1. claim a batch (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so sweepers in several processes share the work; SQLite has
   a single writer) and push each claimed order's check a lease ahead, so a sweeper that dies is replaced later;
2. ask the order's channel (`query_payment`, and `close_payment` past the expiry);
3. apply the answer in a unit of work per order, through payments/orders/accounting.py (the order row lock and the
   ledger key `order:<no>:paid` make a callback arriving at the same time change nothing more).

What the channel says decides, never our guess:

| channel says | before expiry | after expiry |
|---|---|---|
| paid, the order's amount | paid | paid |
| paid, another amount | held in suspense (the inbox's hold), no more checks | same |
| failed / closed | failed / closed | failed / closed |
| unpaid, paying, not found | asked again later (back-off) | closed at the channel first, then here (*) |
| no answer, a decline, no adapter | asked again later: nothing concluded | same |

(*) the channel's close says closed or not found → closed; already paid → asked again and paid (or held). Orders of
a batch channel (withholding: paid by the bank's next debit file, which may be a day away) have no expiry here: they
are asked about, never closed by the sweep.

A charge the channel confirms is recorded through the callbacks inbox (`payments/callbacks/inbox.py`) as an event of
its own (`query:<channel trade no>:<state>`), so it is paid, held or reported exactly as a callback would be and
review finds every charge in one table. Requested refunds are asked about too (`query_refund`, applied by
payments/refunds/service.apply_status); one that never had an answer is sent again (`service.send`).

Logs name order and refund numbers only, never the insured person.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from authsvc.database import unit_of_work, utcnow
from authsvc.runtime import Runtime
from keys.channel_keys import ChannelKeyring
from payments.callbacks import inbox
from payments.callbacks.models import CallbackOutcome
from payments.channels.base import (
    ChannelAdapter,
    ChannelDeclined,
    ChannelEvent,
    ChannelTrade,
    ChannelUnavailable,
    CloseResult,
    Kind,
    TradeStatus,
)
from payments.channels.registry import Channels
from payments.channels.setup import build_channels
from payments.orders import accounting, checkout
from payments.orders.models import PaymentOrder, PaymentRefund
from payments.orders.states import State
from payments.recovery import schedule
from payments.refunds import service as refunds

log = logging.getLogger("sscard.payments.recovery")

WAITING = (State.CREATED, State.PENDING)
# A refund is asked about once its channel has had this long to answer the request itself.
REFUND_FIRST_CHECK = timedelta(minutes=1)
REFUND_REQUESTED = "requested"  # payments/orders/accounting.py REQUESTED


class Decision(StrEnum):
    PAID = "paid"  # the channel confirmed the charge: the order is paid now
    HELD = "held"  # a charge we do not apply (another amount): in suspense for review, no more checks
    FAILED = "failed"
    CLOSED = "closed"
    SETTLED = "settled"  # the order had moved on meanwhile (a callback came first): nothing to do
    WAITING = "waiting"  # not paid yet, not expired: asked again later
    CLOSE_REFUSED = "close_refused"  # expired, but the channel would not close it yet (the payer is paying)
    UNAVAILABLE = "unavailable"  # no usable answer from the channel: nothing concluded, asked again later
    DECLINED = "declined"  # the channel declined the query or the close: asked again later
    NO_CHANNEL = "no_channel"  # the order's channel is not configured here: asked again later
    ERROR = "error"  # an unexpected failure (logged): the claim's lease brings the order back


class RefundDecision(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PROCESSING = "processing"
    SETTLED = "settled"  # already settled meanwhile (its notification came first)
    MISMATCH = "mismatch"  # the channel reports another amount: nothing applied, for review
    CONFLICT = "conflict"  # contradicts what we hold (failed after succeeded): nothing applied, for review
    RESENT = "resent"  # no answer was ever recorded: sent again (the channel deduplicates), its answer applied
    UNAVAILABLE = "unavailable"
    DECLINED = "declined"
    NO_CHANNEL = "no_channel"
    ERROR = "error"  # an unexpected failure (logged): asked again next pass


# What payments/refunds/service.apply_status did, other than applying the channel's outcome.
_REFUND_DECISIONS = {
    refunds.Applied.DUPLICATE: RefundDecision.SETTLED,
    refunds.Applied.IGNORED: RefundDecision.PROCESSING,
    refunds.Applied.HELD_AMOUNT_MISMATCH: RefundDecision.MISMATCH,
    refunds.Applied.CONFLICT: RefundDecision.CONFLICT,
}


@dataclass
class SweepReport:
    orders: Counter[str] = field(default_factory=Counter)
    refunds: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        # Every decision listed, zeros included, so that a monitor can read a fixed shape.
        return {
            "orders_checked": sum(self.orders.values()),
            "orders": {d.value: self.orders[d] for d in Decision},
            "refunds_checked": sum(self.refunds.values()),
            "refunds": {d.value: self.refunds[d] for d in RefundDecision},
        }


@dataclass(frozen=True)
class _Claimed:
    order_no: str
    channel: str
    amount_fen: int
    attempts: int
    expires_at: datetime | None  # None: a batch channel's order, never closed by the sweep


class _Unusable(Exception):
    """The adapter answered something we cannot act on (another order, a charge without amount): treated like no
    answer at all."""


def sweep(
    sessions: sessionmaker[Session],
    channels: Channels,
    *,
    now: datetime,
    order_ttl: timedelta,
    batch: int = 100,
    resend_refund: Callable[[str], None] | None = None,
) -> SweepReport:
    """One pass: at most `batch` due orders and `batch` requested refunds. `order_ttl` is how long an order may stay
    unpaid (SSCARD_PAYMENT_ORDER_TTL, the expiry the channel was given at checkout). `resend_refund(refund_no)`
    sends a requested refund that never had an answer again (run() passes payments/refunds/service.send)."""
    report = SweepReport()
    for claimed in claim_due(sessions, now=now, order_ttl=order_ttl, batch=batch):
        try:
            report.orders[recover_order(sessions, channels, claimed, now=now)] += 1
        except Exception:  # an adapter's bug, the database gone: one order's trouble must not stop the pass
            log.exception("order %s: the sweep failed; its claim expires and it is asked about again", claimed.order_no)
            report.orders[Decision.ERROR] += 1
    for refund in _requested_refunds(sessions, now=now, batch=batch):
        try:
            report.refunds[recover_refund(sessions, channels, refund, resend_refund)] += 1
        except Exception:
            log.exception("refund %s: the sweep failed; it is asked about again next pass", refund.refund_no)
            report.refunds[RefundDecision.ERROR] += 1
    return report


def claim_due(sessions: sessionmaker[Session], *, now: datetime, order_ttl: timedelta, batch: int) -> list[_Claimed]:
    """Take up to `batch` due orders and move their checks a lease ahead, in one short transaction."""
    query = (
        select(PaymentOrder)
        .where(PaymentOrder.state.in_(list(WAITING)), PaymentOrder.next_check_at <= now)
        .order_by(PaymentOrder.next_check_at)
        .limit(batch)
        # Another sweeper's claimed rows are skipped, not waited for; SQLite renders no FOR UPDATE (single writer).
        .with_for_update(skip_locked=True)
    )
    claimed = []
    with unit_of_work(sessions) as db:
        for order in db.execute(query).scalars().all():
            # Conditional on the due time read: on SQLite, where the rows were not locked, a sweeper that claimed the
            # order in between has moved it, and this one leaves it alone.
            taken = db.execute(
                update(PaymentOrder)
                .where(PaymentOrder.id == order.id, PaymentOrder.next_check_at == order.next_check_at)
                .values(next_check_at=now + schedule.LEASE)
                .execution_options(synchronize_session=False)
            )
            if taken.rowcount == 1:  # type: ignore[attr-defined]
                expires_at = None if order.channel in checkout.BATCH_ONLY else checkout.expiry(order, order_ttl)
                claimed.append(
                    _Claimed(order.order_no, order.channel, order.amount_fen, order.check_attempts, expires_at)
                )
    return claimed


def recover_order(sessions: sessionmaker[Session], channels: Channels, claimed: _Claimed, *, now: datetime) -> Decision:
    adapter = channels.get(claimed.channel)
    if adapter is None:
        log.error("order %s: channel %s is not configured; asking again later", claimed.order_no, claimed.channel)
        return _again(sessions, claimed, now, Decision.NO_CHANNEL)
    try:
        trade = _query(adapter, claimed.order_no)
        if trade.status is TradeStatus.PAID:
            return _charged(sessions, claimed, trade, now)
        if trade.status in (TradeStatus.FAILED, TradeStatus.CLOSED):
            return _ended(sessions, claimed, trade.status)
        if claimed.expires_at is None or now < claimed.expires_at:
            return _again(sessions, claimed, now, Decision.WAITING)
        # Expired. Close at the channel first: only once it says no charge can follow may we close our side.
        closed = adapter.close_payment(claimed.order_no)
        if closed in (CloseResult.CLOSED, CloseResult.NOT_FOUND):
            log.info("order %s expired unpaid; closed at %s (%s)", claimed.order_no, claimed.channel, closed)
            return _ended(sessions, claimed, TradeStatus.CLOSED)
        if closed is CloseResult.ALREADY_PAID:
            # The payer paid just before the close: the channel's query says what was charged.
            trade = _query(adapter, claimed.order_no)
            if trade.status is TradeStatus.PAID:
                return _charged(sessions, claimed, trade, now)
        log.warning("order %s expired; %s would not close it (%s)", claimed.order_no, claimed.channel, closed)
        return _again(sessions, claimed, now, Decision.CLOSE_REFUSED)
    except (ChannelUnavailable, _Unusable) as exc:
        log.warning(
            "order %s: no usable answer from %s (%s); asking again later", claimed.order_no, claimed.channel, exc
        )
        return _again(sessions, claimed, now, Decision.UNAVAILABLE)
    except ChannelDeclined as exc:
        log.warning("order %s: %s declined (%s); asking again later", claimed.order_no, claimed.channel, exc.code)
        return _again(sessions, claimed, now, Decision.DECLINED)


def _query(adapter: ChannelAdapter, order_no: str) -> ChannelTrade:
    trade = adapter.query_payment(order_no)
    if trade.order_no != order_no:
        raise _Unusable("the answer is about another order")
    if trade.status is TradeStatus.PAID and (
        not isinstance(trade.amount_fen, int) or trade.amount_fen <= 0 or not trade.channel_trade_no
    ):
        raise _Unusable("a charge without its amount or trade number")
    return trade


def _charged(sessions: sessionmaker[Session], claimed: _Claimed, trade: ChannelTrade, now: datetime) -> Decision:
    """Record the charge through the callbacks inbox: paid if it is the order's amount, held in suspense if not."""
    assert trade.amount_fen is not None and trade.channel_trade_no is not None
    state = (trade.raw_state or trade.status.value)[:32]
    event = ChannelEvent(
        channel=claimed.channel,
        event_id=f"query:{trade.channel_trade_no}:{state}"[:128],
        order_no=claimed.order_no,
        channel_trade_no=trade.channel_trade_no[:64],
        channel_state=state,
        kind=Kind.PAID,
        amount_fen=trade.amount_fen,
        currency=trade.currency,
        payload={
            "source": "query",
            "status": trade.status.value,
            "raw_state": trade.raw_state,
            "amount_fen": trade.amount_fen,
            "currency": trade.currency,
            "paid_at": trade.paid_at.isoformat() if trade.paid_at else None,
        },
    )
    with unit_of_work(sessions) as db:
        # The inbox holds a charge in suspense once, whichever of its callback and this query reports it first.
        outcome = inbox.receive(db, event).outcome
        order = db.scalar(select(PaymentOrder).where(PaymentOrder.order_no == claimed.order_no))
        assert order is not None
        # Paid, or a charge we did not apply (another amount, the order closed meanwhile) that review decides about:
        # asking the channel again would only repeat it.
        order.next_check_at = None
        if outcome is CallbackOutcome.APPLIED:
            decision = Decision.PAID
        elif outcome is CallbackOutcome.DUPLICATE:
            decision = Decision.SETTLED
        else:
            decision = Decision.HELD
    level = logging.INFO if decision is not Decision.HELD else logging.WARNING
    log.log(level, "order %s: %s confirms a charge (%s): %s", claimed.order_no, claimed.channel, state, decision)
    return decision


def _ended(sessions: sessionmaker[Session], claimed: _Claimed, status: TradeStatus) -> Decision:
    change = accounting.fail if status is TradeStatus.FAILED else accounting.close
    with unit_of_work(sessions) as db:
        outcome = change(db, claimed.order_no)
        outcome.order.next_check_at = None
    if not outcome.changed:
        log.info(
            "order %s: %s says %s, but the order is %s already",
            claimed.order_no,
            claimed.channel,
            status,
            outcome.order.state,
        )
        return Decision.SETTLED
    log.info("order %s: %s says %s; the order is %s", claimed.order_no, claimed.channel, status, outcome.order.state)
    return Decision.FAILED if status is TradeStatus.FAILED else Decision.CLOSED


def _again(sessions: sessionmaker[Session], claimed: _Claimed, now: datetime, decision: Decision) -> Decision:
    """Nothing concluded: check again after the back-off (only while the order still waits)."""
    due = schedule.next_check(now, claimed.attempts, claimed.expires_at)
    with unit_of_work(sessions) as db:
        db.execute(
            update(PaymentOrder)
            .where(PaymentOrder.order_no == claimed.order_no, PaymentOrder.state.in_(list(WAITING)))
            .values(next_check_at=due, check_attempts=PaymentOrder.check_attempts + 1)
        )
    return decision


# --- refunds ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Refund:
    refund_no: str
    order_no: str
    channel: str
    sent_at: datetime | None


def _requested_refunds(sessions: sessionmaker[Session], *, now: datetime, batch: int) -> list[_Refund]:
    query = (
        select(PaymentRefund.refund_no, PaymentOrder.order_no, PaymentOrder.channel, PaymentRefund.sent_at)
        .join(PaymentOrder, PaymentOrder.id == PaymentRefund.order_id)
        .where(PaymentRefund.state == REFUND_REQUESTED, PaymentRefund.created_at <= now - REFUND_FIRST_CHECK)
        .order_by(PaymentRefund.created_at)
        .limit(batch)
    )
    with unit_of_work(sessions) as db:
        return [_Refund(*row) for row in db.execute(query)]


def recover_refund(
    sessions: sessionmaker[Session],
    channels: Channels,
    refund: _Refund,
    resend: Callable[[str], None] | None = None,
) -> RefundDecision:
    refund_no, order_no, channel = refund.refund_no, refund.order_no, refund.channel
    adapter = channels.get(channel)
    if adapter is None:
        log.error("refund %s: channel %s is not configured", refund_no, channel)
        return RefundDecision.NO_CHANNEL
    if refund.sent_at is None and resend is not None:
        # No answer was ever recorded: perhaps never sent (a crash after the commit). The channel deduplicates on our
        # refund number, so sending again is safe and answers like a query (payments/refunds/service.send).
        resend(refund_no)
        return RefundDecision.RESENT
    try:
        status = adapter.query_refund(order_no, refund_no)
    except ChannelUnavailable as exc:
        log.warning("refund %s: no answer from %s (%s); asking again later", refund_no, channel, exc)
        return RefundDecision.UNAVAILABLE
    except ChannelDeclined as exc:
        log.warning("refund %s: %s declined the query (%s)", refund_no, channel, exc.code)
        return RefundDecision.DECLINED
    if status.refund_no != refund_no:
        log.warning("refund %s: %s answered about another refund", refund_no, channel)
        return RefundDecision.UNAVAILABLE
    with unit_of_work(sessions) as db:
        result = refunds.apply_status(db, refund_no, status)
    if result.applied is refunds.Applied.APPLIED:
        decision = RefundDecision(status.outcome.value)
    else:  # a duplicate, an unknown refund (gone meanwhile): settled either way
        decision = _REFUND_DECISIONS.get(result.applied, RefundDecision.SETTLED)
    level = logging.WARNING if decision in (RefundDecision.MISMATCH, RefundDecision.CONFLICT) else logging.INFO
    log.log(level, "refund %s of order %s: %s says %s: %s", refund_no, order_no, channel, status.outcome, decision)
    return decision


def run(runtime: Runtime, channels: Channels, *, batch: int = 100, now: datetime | None = None) -> SweepReport:
    """One pass with the runtime's database and SSCARD_PAYMENT_ORDER_TTL (the CLI and the in-service loop)."""
    return sweep(
        runtime.sessions,
        channels,
        now=now or utcnow(),
        order_ttl=timedelta(seconds=runtime.settings.payment_order_ttl),
        batch=batch,
        resend_refund=lambda refund_no: refunds.send(runtime, channels, refund_no),
    )


@contextmanager
def configured_channels(runtime: Runtime) -> Iterator[Channels]:
    """The channels the service installs at start (payments/channels/setup.py: SSCARD_PAYMENT_CHANNELS and their keys
    in keys/), for a sweep run from the command line; their HTTP clients are closed afterwards. A channel left out
    there (settings or keys missing) has its orders reported `no_channel` and kept: nothing is concluded without it."""
    keyring = ChannelKeyring(runtime.sessions, runtime.sealer, cache_seconds=runtime.settings.key_cache_seconds)
    built = build_channels(runtime.settings, keyring, sessions=runtime.sessions)
    try:
        yield built.channels
    finally:
        built.close()
