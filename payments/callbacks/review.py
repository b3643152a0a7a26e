"""What the callbacks inbox holds for people to look at: charges held for another amount, callbacks for orders or
refunds we do not know, and events that contradicted an order's state. Read-only; resolving one is a reversing or
moving ledger entry made by an operator, never an edit of the inbox."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from payments.callbacks.models import CallbackOutcome, PaymentCallback

NEEDS_REVIEW = (
    CallbackOutcome.HELD_AMOUNT_MISMATCH,
    CallbackOutcome.UNKNOWN_ORDER,
    CallbackOutcome.UNKNOWN_REFUND,
    CallbackOutcome.CONFLICT,
)


def pending_review(db: Session, *, channel: str | None = None, limit: int = 100) -> dict[str, Any]:
    """Counts per channel and outcome, and the newest rows (no payloads: they can carry payer identifiers)."""
    where = [PaymentCallback.outcome.in_([str(o) for o in NEEDS_REVIEW])]
    if channel is not None:
        where.append(PaymentCallback.channel == channel)
    counts = db.execute(
        select(PaymentCallback.channel, PaymentCallback.outcome, func.count(), func.sum(PaymentCallback.amount_fen))
        .where(*where)
        .group_by(PaymentCallback.channel, PaymentCallback.outcome)
        .order_by(PaymentCallback.channel, PaymentCallback.outcome)
    ).all()
    rows = db.scalars(select(PaymentCallback).where(*where).order_by(PaymentCallback.id.desc()).limit(limit)).all()
    return {
        "totals": [
            {"channel": c, "outcome": o, "callbacks": n, "amount_fen": int(amount or 0)} for c, o, n, amount in counts
        ],
        "callbacks": [
            {
                "id": row.id,
                "channel": row.channel,
                "event_id": row.event_id,
                "order_ref": row.order_ref,
                "channel_trade_no": row.channel_trade_no,
                "channel_state": row.channel_state,
                "amount_fen": row.amount_fen,
                "currency": row.currency,
                "outcome": row.outcome,
                "note": row.note,
                "received_at": row.received_at.isoformat(),
            }
            for row in rows
        ],
    }
