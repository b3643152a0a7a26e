"""Resolving a run's discrepancies, one item per unit of work, the channel asked outside any transaction.

* A channel-only payment whose order we hold unpaid, of the statement's amount: query the channel; if it confirms
  PAID with that amount, mark the order paid through payments/orders/accounting.py (`order:<no>:paid`, the callback's
  own key, so a callback arriving later posts nothing more): `backfilled`.
* A channel-only payment the callbacks inbox already held (unknown order, another amount, a charge on a closed order):
  its `callback:<id>:suspense` entry already moved the money from clearing to suspense: `held_by_callback`, nothing
  posted again.
* An ours-only payment: query the channel; PAID with our amount is a day-boundary case (the channel booked it on
  another day): `matched_late`, nothing to post. An ours-only refund the same way, with the channel's refund query.
* Everything else is `parked`: one balanced entry between `clearing:<channel>` and `suspense:<channel>` that brings
  clearing to what the channel's statement says, keyed `recon:<channel>:<day>:<kind>:<reference>`, so a re-run, or a
  corrected file of the same day, never parks the same reference twice.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from sqlalchemy import false, select, update
from sqlalchemy.orm import Session, sessionmaker

from authsvc.database import unit_of_work, utcnow
from payments.callbacks.models import CallbackOutcome, PaymentCallback
from payments.channels.base import (
    ChannelDeclined,
    ChannelTrade,
    ChannelUnavailable,
    RefundOutcome,
    RefundStatus,
    TradeStatus,
)
from payments.ledger import accounts
from payments.ledger.service import MAX_KEY, KeyReused, credit, debit, entry_by_key, post
from payments.orders import accounting, repository
from payments.orders.accounting import AccountingError
from payments.orders.states import Reason, State
from payments.reconciliation.models import Category, ReconItem, ReconRun, Resolution

log = logging.getLogger("sscard.payments.reconciliation")


@dataclass(frozen=True)
class Queries:
    """The channel's answers reconciliation may ask for (None: not configured, the item is parked)."""

    payment: Callable[[str], ChannelTrade] | None = None  # order_no
    refund: Callable[[str, str], RefundStatus] | None = None  # order_no, refund_no


Answer = ChannelTrade | RefundStatus
HELD = (CallbackOutcome.HELD_AMOUNT_MISMATCH.value, CallbackOutcome.UNKNOWN_ORDER.value, CallbackOutcome.CONFLICT.value)
UNPAID = (State.CREATED.value, State.PENDING.value)
PAID = (State.PAID.value, State.PARTIALLY_REFUNDED.value, State.REFUNDED.value)
PAGE = 500


def clearing_delta(item: ReconItem) -> int:
    """How far `clearing:<channel>` must move (a debit when positive) to agree with the channel's statement."""
    stated, ours = item.statement_fen or 0, item.ours_fen or 0
    moved = {
        Category.CHANNEL_ONLY.value: stated,
        Category.OURS_ONLY.value: -ours,
        Category.AMOUNT_MISMATCH.value: stated - ours,
    }[item.category]
    return moved if item.kind == "payment" else -moved  # a refund takes money back out of clearing


def ledger_key(item: ReconItem, channel: str, day: date) -> str:
    ref = (item.channel_trade_no or item.order_no or "") if item.kind == "payment" else (item.refund_no or "")
    if item.occurrence > 1:
        ref = f"{ref}#{item.occurrence}"
    key = f"recon:{channel}:{day.isoformat()}:{item.kind}:{ref}"
    if len(key) > MAX_KEY:  # long channel references: a digest keeps the key unique and within the column
        key = f"recon:{channel}:{day.isoformat()}:{item.kind}:{hashlib.sha256(ref.encode()).hexdigest()[:40]}"
    return key


def resolve(sessions: sessionmaker[Session], run_id: int, channel: str, day: date, queries: Queries) -> None:
    """Resolve every open item of the run (resumes where an interrupted run stopped)."""
    last = 0
    while True:
        with unit_of_work(sessions) as db:
            page = db.scalars(
                select(ReconItem.id)
                .where(ReconItem.run_id == run_id, ReconItem.resolution == Resolution.OPEN.value, ReconItem.id > last)
                .order_by(ReconItem.id)
                .limit(PAGE)
            ).all()
        if not page:
            return
        for item_id in page:
            _resolve_one(sessions, item_id, channel, day, queries)
        last = page[-1]


def _resolve_one(sessions: sessionmaker[Session], item_id: int, channel: str, day: date, queries: Queries) -> None:
    with unit_of_work(sessions) as db:
        item = _open_item(db, item_id)
        if item is None or not _needs_query(db, item, channel, day):
            return
        kind, order_no, refund_no = item.kind, item.order_no or "", item.refund_no or ""
    answer: Answer | None = None
    note = None
    try:
        if kind == "payment" and queries.payment is not None:
            answer = queries.payment(order_no)
        elif kind == "refund" and queries.refund is not None:
            answer = queries.refund(order_no, refund_no)
        else:
            note = "no channel query configured"
    except (ChannelUnavailable, ChannelDeclined) as exc:
        note = f"channel query failed: {type(exc).__name__}"
        log.warning("reconciliation %s %s: query of %s failed: %s", channel, day, order_no, exc)
    with unit_of_work(sessions) as db:
        item = _open_item(db, item_id)
        if item is not None:
            _apply_query(db, item, channel, day, answer, note)


def hold_writer(db: Session) -> None:
    """SQLite: take the database's write lock first (waiting out the busy timeout), so that a read-then-write unit of
    work never fails on upgrading its read lock while another writer commits. PostgreSQL locks rows instead."""
    if db.get_bind().dialect.name == "sqlite":
        db.execute(update(ReconRun).where(false()).values(status=ReconRun.status))


def _open_item(db: Session, item_id: int) -> ReconItem | None:
    hold_writer(db)
    item = db.get(ReconItem, item_id, with_for_update=True)
    return item if item is not None and item.resolution == Resolution.OPEN.value else None


def _needs_query(db: Session, item: ReconItem, channel: str, day: date) -> bool:
    """Settle the item now if no query can help (True: ask the channel first)."""
    if item.kind == "refund" and item.category == Category.OURS_ONLY.value and item.occurrence == 1:
        return True  # a refund the channel finished just after midnight is on the next day's statement
    if item.kind == "payment" and item.occurrence == 1:
        if item.category == Category.OURS_ONLY.value:
            return True
        if item.category == Category.CHANNEL_ONLY.value:
            if _held_by_callback(db, item, channel):
                return False
            order = repository.order_by_no(db, item.order_no or "")
            if (
                order is not None
                and order.channel == channel
                and order.state in UNPAID
                and order.amount_fen == item.statement_fen
            ):
                return True
    _park(db, item, channel, day)
    return False


def _apply_query(
    db: Session, item: ReconItem, channel: str, day: date, answer: Answer | None, note: str | None
) -> None:
    order_no = item.order_no or ""
    if isinstance(answer, RefundStatus) or item.kind == "refund":
        if (
            isinstance(answer, RefundStatus)
            and answer.outcome is RefundOutcome.SUCCEEDED
            and answer.amount_fen == item.ours_fen
        ):
            _settle(item, Resolution.MATCHED_LATE, note="the channel confirms the refund: on another day's statement")
        else:
            _park(db, item, channel, day, note or _said(answer))
        return
    trade = answer
    confirmed = trade is not None and trade.status is TradeStatus.PAID
    if item.category == Category.OURS_ONLY.value:
        if confirmed and trade is not None and trade.amount_fen == item.ours_fen:
            _settle(item, Resolution.MATCHED_LATE, note="the channel confirms it paid: on another day's statement")
        else:
            _park(db, item, channel, day, note or _said(trade))
        return
    # channel-only, order unpaid when looked at: the inbox may have held a callback meanwhile
    if _held_by_callback(db, item, channel):
        return
    if not confirmed or trade is None or trade.amount_fen != item.statement_fen:
        _park(db, item, channel, day, note or _said(trade))
        return
    try:
        outcome = accounting.mark_paid(db, order_no, amount_fen=trade.amount_fen)
    except AccountingError as exc:
        _park(db, item, channel, day, str(exc)[:200])
        return
    if outcome.changed:
        _settle(item, Resolution.BACKFILLED, key=f"order:{order_no}:paid", note="confirmed by the channel's query")
    elif outcome.refused is not None and outcome.refused.reason is Reason.DUPLICATE:
        _settle(item, Resolution.MATCHED_LATE, key=f"order:{order_no}:paid", note="paid by a callback meanwhile")
    else:
        _park(db, item, channel, day, f"the order is {outcome.order.state}")


def _said(answer: Answer | None) -> str:
    if answer is None:
        return "the channel did not answer"
    if isinstance(answer, RefundStatus):
        return f"the channel reports the refund {answer.outcome} ({answer.raw_state or '-'}), {answer.amount_fen} fen"
    return f"the channel reports {answer.status} ({answer.raw_state or '-'}), {answer.amount_fen} fen"


def _held_by_callback(db: Session, item: ReconItem, channel: str) -> bool:
    key = _held_key(db, item, channel)
    if key is not None:
        _settle(item, Resolution.HELD_BY_CALLBACK, key=key, note="already in suspense by the callbacks inbox")
    return key is not None


def _held_key(db: Session, item: ReconItem, channel: str) -> str | None:
    """The suspense entry of a charge of this order and amount the inbox held, not claimed by another item of this
    run."""
    candidates = db.scalars(
        select(PaymentCallback.id)
        .where(
            PaymentCallback.channel == channel,
            PaymentCallback.order_ref == item.order_no,
            PaymentCallback.amount_fen == item.statement_fen,
            PaymentCallback.outcome.in_(HELD),
        )
        .order_by(PaymentCallback.id)
    ).all()
    for callback_id in candidates:
        key = f"callback:{callback_id}:suspense"
        if entry_by_key(db, key) is None:
            continue
        claimed = db.scalar(
            select(ReconItem.id)
            .where(ReconItem.run_id == item.run_id, ReconItem.ledger_key == key, ReconItem.id != item.id)
            .limit(1)
        )
        if claimed is None:
            return key
    return None


# --- charges parked before their callback came ------------------------------------------------------------------


def sweep(sessions: sessionmaker[Session], channel: str) -> int:
    """Undo the parking of channel-only charges the callbacks inbox has settled since (the callback came after the
    statement: it paid the order, or held the charge in suspense itself), so that no charge is counted twice.
    Returns how many were undone."""
    with unit_of_work(sessions) as db:
        candidates = db.scalars(
            select(ReconItem.id)
            .join(ReconRun, ReconRun.id == ReconItem.run_id)
            .where(
                ReconRun.channel == channel,
                ReconItem.kind == "payment",
                ReconItem.category == Category.CHANNEL_ONLY.value,
                ReconItem.occurrence == 1,
                ReconItem.resolution == Resolution.PARKED.value,
            )
            .order_by(ReconItem.id)
        ).all()
    undone = 0
    for item_id in candidates:
        with unit_of_work(sessions) as db:
            hold_writer(db)
            item = db.get(ReconItem, item_id, with_for_update=True)
            if item is not None and item.resolution == Resolution.PARKED.value:
                undone += _undo_if_settled(db, item, channel)
    return undone


def _undo_if_settled(db: Session, item: ReconItem, channel: str) -> int:
    parked = entry_by_key(db, item.ledger_key) if item.ledger_key else None
    if parked is None or (item.note or "").startswith("parked by an earlier run"):
        return 0
    order = repository.order_by_no(db, item.order_no or "", for_update=True)
    paid = (
        order is not None
        and order.channel == channel
        and order.state in PAID
        and order.amount_fen == item.statement_fen
        and entry_by_key(db, f"order:{order.order_no}:paid") is not None
    )
    held = None if paid else _held_key(db, item, channel)
    if not paid and held is None:
        return 0
    amount = item.statement_fen or 0
    key = f"{item.ledger_key}:undone"
    if len(key) > MAX_KEY:
        key = f"recon:undone:{hashlib.sha256((item.ledger_key or '').encode()).hexdigest()[:40]}"
    clearing, suspense = accounts.clearing(channel), accounts.suspense(channel)
    # The reverse of the parking entry (a channel-only charge parked as debit clearing, credit suspense).
    post(db, key, "recon_undone", [debit(suspense, amount), credit(clearing, amount)], order_ref=item.order_no)
    if paid:
        _settle(item, Resolution.MATCHED_LATE, key=key, note="paid by its callback after it was parked: undone")
    else:
        # The callback's entry is the item's key, as for an item held when it was resolved: no other item claims it.
        _settle(item, Resolution.HELD_BY_CALLBACK, key=held, note=f"held by its callback after it was parked: {key}")
    log.info("reconciliation %s: parking of %s undone (%s)", channel, item.order_no, item.resolution)
    return 1


def _park(db: Session, item: ReconItem, channel: str, day: date, note: str | None = None) -> None:
    delta = clearing_delta(item)
    key = ledger_key(item, channel, day)
    if delta == 0:  # cannot happen for a discrepancy; never post an empty movement
        _settle(item, Resolution.PARKED, note=note)
        return
    clearing, suspense = accounts.clearing(channel), accounts.suspense(channel)
    lines = (
        [debit(clearing, delta), credit(suspense, delta)]
        if delta > 0
        else [debit(suspense, -delta), credit(clearing, -delta)]
    )
    try:
        post(db, key, "recon_suspense", lines, order_ref=item.order_no)
    except KeyReused:
        # A corrected statement of the same day: the reference is parked already, with other figures. Parking it
        # again would count it twice; review compares the two runs' items.
        note = "parked by an earlier run of this day with other figures: review"
    log.warning("reconciliation %s %s: %s %s %s parked", channel, day, item.kind, item.category, item.order_no)
    _settle(item, Resolution.PARKED, key=key, note=note)


def _settle(item: ReconItem, resolution: Resolution, *, key: str | None = None, note: str | None = None) -> None:
    item.resolution = resolution.value
    item.ledger_key = key
    item.note = note[:200] if note else None
    item.resolved_at = utcnow()
