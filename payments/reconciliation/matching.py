"""Matching the staged statement against our side with set-based SQL: a handful of statements per run whatever the
statement's size, never a lookup per line.

Our side for a channel and a day (China time, the channels' statement day):
* payments: orders of the channel paid (still paid, or refunded since) with `paid_at` in the day;
* refunds: refunds of the channel's orders the channel confirmed (`succeeded`) with `settled_at` in the day.

A payment line matches the order of its `order_no` (whatever day we recorded it: a payment just before midnight may
reach us the next day) when that order is ours for this channel, paid, of the same amount; a refund line matches our
refund of its `refund_no` the same way (requested or succeeded: the statement lists what the channel accepted). The
second line for one reference is never a match (the channel moved the money twice). What does not match becomes an
item of the run; matched lines are only counted.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    String,
    and_,
    case,
    cast,
    exists,
    func,
    insert,
    literal,
    null,
    or_,
    select,
)
from sqlalchemy.orm import Session

from payments.orders.models import PaymentOrder, PaymentRefund
from payments.orders.states import State
from payments.reconciliation.models import Category, ReconItem, Resolution
from payments.reconciliation.staging import stage

CHINA = timezone(timedelta(hours=8), "CST")  # the channels' statement day; China keeps no daylight saving
PAID_STATES = (State.PAID.value, State.PARTIALLY_REFUNDED.value, State.REFUNDED.value)
# A refund line matches a refund we sent and the channel has not refused: a statement lists refunds the channel
# accepted that day, which we may learn succeeded only later (a timing difference, not money to park).
ACCEPTED_REFUNDS = ("requested", "succeeded")
KINDS = ("payment", "refund")

orders = PaymentOrder.__table__
refunds = PaymentRefund.__table__
_ITEM_COLUMNS = [
    "run_id",
    "kind",
    "category",
    "line_no",
    "occurrence",
    "order_no",
    "channel_trade_no",
    "refund_no",
    "channel_refund_no",
    "statement_fen",
    "ours_fen",
    "resolution",
]


def day_window(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0), CHINA)
    return start, start + timedelta(days=1)


def _staged(kind: str, reference: str) -> Any:
    """The statement's lines of one kind, each with its occurrence among the lines of the same reference (1: the
    first; a second line for one reference is never a match)."""
    occurrence = func.row_number().over(partition_by=stage.c[reference], order_by=stage.c.line_no)
    return select(stage, occurrence.label("occurrence")).where(stage.c.kind == kind).subquery("l")


def _category(lines: Any, *, not_ours: ColumnElement[bool], ours_fen: Any) -> Any:
    """A line's category: channel-only when ours does not hold it (`not_ours`) or it repeats a reference, another
    amount than ours, else matched."""
    return case(
        (or_(not_ours, lines.c.occurrence > 1), Category.CHANNEL_ONLY.value),
        (ours_fen != lines.c.amount_fen, Category.AMOUNT_MISMATCH.value),
        else_=Category.MATCHED.value,
    )


_NULL_TYPES = {
    "line_no": BigInteger,
    "channel_trade_no": String,
    "refund_no": String,
    "channel_refund_no": String,
    "statement_fen": BigInteger,
}


def _item_columns(kind: str, category: Any, **columns: Any) -> list[Any]:
    """An item's columns, labelled as in _ITEM_COLUMNS (without run_id and resolution); one not given is NULL."""
    return [literal(kind).label("kind"), category.label("category")] + [
        (columns[name] if name in columns else cast(null(), _NULL_TYPES[name])).label(name)
        for name in _ITEM_COLUMNS[3:-1]
    ]


def _classified_payments(channel: str) -> Any:
    lines = _staged("payment", "order_no")
    not_ours = or_(orders.c.id.is_(None), orders.c.channel != channel, orders.c.state.not_in(PAID_STATES))
    columns = _item_columns(
        "payment",
        _category(lines, not_ours=not_ours, ours_fen=orders.c.amount_fen),
        line_no=lines.c.line_no,
        occurrence=lines.c.occurrence,
        order_no=lines.c.order_no,
        channel_trade_no=lines.c.trade_no,
        statement_fen=lines.c.amount_fen,
        ours_fen=orders.c.amount_fen,
    )
    return select(*columns).select_from(lines.outerjoin(orders, orders.c.order_no == lines.c.order_no)).subquery("cp")


def _classified_refunds(channel: str) -> Any:
    lines = _staged("refund", "refund_no")
    not_ours = or_(refunds.c.id.is_(None), orders.c.channel != channel, refunds.c.state.not_in(ACCEPTED_REFUNDS))
    columns = _item_columns(
        "refund",
        _category(lines, not_ours=not_ours, ours_fen=refunds.c.amount_fen),
        line_no=lines.c.line_no,
        occurrence=lines.c.occurrence,
        order_no=lines.c.order_no,
        channel_trade_no=lines.c.trade_no,
        refund_no=lines.c.refund_no,
        channel_refund_no=lines.c.channel_refund_no,
        statement_fen=lines.c.amount_fen,
        ours_fen=refunds.c.amount_fen,
    )
    joined = lines.outerjoin(refunds, refunds.c.refund_no == lines.c.refund_no).outerjoin(
        orders, orders.c.id == refunds.c.order_id
    )
    return select(*columns).select_from(joined).subquery("cr")


def _ours_only_payments(channel: str, day: date) -> Any:
    start, end = day_window(day)
    on_statement = exists().where(and_(stage.c.kind == "payment", stage.c.order_no == orders.c.order_no))
    columns = _item_columns(
        "payment",
        literal(Category.OURS_ONLY.value),
        occurrence=literal(1),
        order_no=orders.c.order_no,
        ours_fen=orders.c.amount_fen,
    )
    return select(*columns).where(
        orders.c.channel == channel,
        orders.c.state.in_(PAID_STATES),
        _between(orders.c.paid_at, start, end),
        ~on_statement,
    )


def _ours_only_refunds(channel: str, day: date) -> Any:
    start, end = day_window(day)
    on_statement = exists().where(and_(stage.c.kind == "refund", stage.c.refund_no == refunds.c.refund_no))
    columns = _item_columns(
        "refund",
        literal(Category.OURS_ONLY.value),
        occurrence=literal(1),
        order_no=orders.c.order_no,
        refund_no=refunds.c.refund_no,
        ours_fen=refunds.c.amount_fen,
    )
    return (
        select(*columns)
        .select_from(refunds.join(orders, orders.c.id == refunds.c.order_id))
        .where(
            orders.c.channel == channel,
            refunds.c.state == "succeeded",
            _between(refunds.c.settled_at, start, end),
            ~on_statement,
        )
    )


def _between(column: Any, start: datetime, end: datetime) -> ColumnElement[bool]:
    # Bound through the column's own type (UTCDateTime), so SQLite compares its stored UTC text like for like.
    return and_(column >= start, column < end)


def match(db: Session, run_id: int, channel: str, day: date) -> dict[str, dict[str, dict[str, int]]]:
    """Write the run's items (every discrepancy) and return the counts and sums per kind and category.

    One join over the statement: only discrepancies are written, and the matched totals are what the whole
    statement holds less the discrepancies that came from its lines (a matched line's two amounts are equal)."""
    for source in (
        _classified_payments(channel),
        _classified_refunds(channel),
        _ours_only_payments(channel, day).subquery("op"),
        _ours_only_refunds(channel, day).subquery("or_"),
    ):
        items = select(
            literal(run_id), *(source.c[name] for name in _ITEM_COLUMNS[1:-1]), literal(Resolution.OPEN.value)
        ).where(source.c.category != Category.MATCHED.value)
        db.execute(insert(ReconItem).from_select(_ITEM_COLUMNS, items))
    totals = {kind: {c.value: {"count": 0, "statement_fen": 0, "ours_fen": 0} for c in Category} for kind in KINDS}
    discrepancies = select(
        ReconItem.kind,
        ReconItem.category,
        func.count(),
        func.coalesce(func.sum(ReconItem.statement_fen), 0),
        func.coalesce(func.sum(ReconItem.ours_fen), 0),
    ).where(ReconItem.run_id == run_id)
    for kind, category, count, statement_fen, ours_fen in db.execute(
        discrepancies.group_by(ReconItem.kind, ReconItem.category)
    ):
        totals[kind][category] = {"count": count, "statement_fen": int(statement_fen), "ours_fen": int(ours_fen)}
    whole = select(stage.c.kind, func.count(), func.coalesce(func.sum(stage.c.amount_fen), 0)).group_by(stage.c.kind)
    for kind, count, statement_fen in db.execute(whole):
        from_lines = [totals[kind][c.value] for c in (Category.CHANNEL_ONLY, Category.AMOUNT_MISMATCH)]
        matched_fen = int(statement_fen) - sum(t["statement_fen"] for t in from_lines)
        totals[kind][Category.MATCHED.value] = {
            "count": count - sum(t["count"] for t in from_lines),
            "statement_fen": matched_fen,
            "ours_fen": matched_fen,
        }
    return totals
