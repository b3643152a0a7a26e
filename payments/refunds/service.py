"""Refund use cases: request (reserved at once, sent at once or after a second operator's approval), approve,
reject, send to the order's channel after the commit, and apply what the channel says (its answer, a refund
notification through the callbacks inbox, or the recovery sweeper's query).

Database functions flush only; the caller's unit of work commits. `send` is the exception: it runs after the
request's commit, asks the channel outside any transaction (a slow channel must not hold the order's row lock) and
applies the answer in a unit of work of its own.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from authsvc.database import unit_of_work, utcnow
from authsvc.runtime import Runtime
from payments.channels.base import ChannelDeclined, ChannelUnavailable, RefundOutcome, RefundRequest, RefundStatus
from payments.channels.registry import Channels
from payments.orders import accounting, repository
from payments.orders.accounting import AccountingError, RefundRefused
from payments.orders.domain import PayerKind
from payments.orders.models import PaymentOrder, PaymentRefund
from payments.refunds import domain
from payments.refunds.domain import Action, Operator, RefundSpec, Verdict

log = logging.getLogger("sscard.payments.refunds")

MAX_LIST = 100
CALLBACKS_PATH = "/v1/payments/callbacks/"


class Refusal(Exception):
    """A request refused with an HTTP status and a machine-readable reason; nothing was written."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.reason, self.detail = status, reason, detail


def new_refund_no() -> str:
    # Random, within every channel's refund-number alphabet and length (WeChat out_refund_no 64, Alipay 64, ours 40).
    return "RF" + secrets.token_hex(12)


def create(
    db: Session,
    spec: RefundSpec,
    operator: Operator,
    *,
    threshold_fen: int,
    idempotency_key: str | None = None,
    idempotency_body: str | None = None,
) -> PaymentRefund:
    """Reserve a refund for `operator` (flush; IntegrityError if the key digest belongs to another refund)."""
    # Locked before the policy reads what is already reserved, so two requests cannot both slip under the threshold.
    if repository.order_by_no(db, spec.order_no) is None:
        raise Refusal(404, "order_unknown", "no such order")
    order = accounting.lock_order(db, spec.order_no)
    awaiting = domain.needs_approval(
        spec.amount_fen, order.refund_reserved_fen, threshold_fen, own_order=_payer(order) == operator.subject
    )
    try:
        refund = accounting.request_refund(
            db, order.order_no, new_refund_no(), spec.amount_fen, awaiting_approval=awaiting
        )
    except RefundRefused as exc:
        status = 409 if exc.reason == "order_not_refundable" else 422
        raise Refusal(status, exc.reason, str(exc)) from None
    refund.reason = spec.reason
    refund.requested_client, refund.requested_subject = operator.client_id, operator.subject
    refund.idempotency_key, refund.idempotency_body = idempotency_key, idempotency_body
    db.flush()
    return refund


def _payer(order: PaymentOrder) -> str | None:
    """The subject of the cardholder who paid (payments/orders/service.py: a citizen's orders carry the token's
    subject as payer); None for an employer's order (payer = a back end's client id, never an operator)."""
    return order.payer if order.payer_kind in (PayerKind.CITIZEN, PayerKind.AGENT) else None


def by_idempotency_key(db: Session, key_digest: str) -> PaymentRefund | None:
    return db.scalar(select(PaymentRefund).where(PaymentRefund.idempotency_key == key_digest))


def get(db: Session, refund_no: str) -> PaymentRefund | None:
    return repository.refund_by_no(db, refund_no)


def find(
    db: Session, *, order_no: str | None = None, state: str | None = None, limit: int = MAX_LIST
) -> list[PaymentRefund]:
    query = select(PaymentRefund).order_by(PaymentRefund.id.desc()).limit(limit)
    if order_no is not None:
        query = query.join(PaymentOrder).where(PaymentOrder.order_no == order_no)
    if state is not None:
        query = query.where(PaymentRefund.state == state)
    return list(db.scalars(query))


def decide(db: Session, refund_no: str, operator: Operator, action: Action, note: str) -> tuple[PaymentRefund, bool]:
    """Approve or reject; the refund and whether it must now be sent (only the approval that made the change)."""
    if repository.refund_by_no(db, refund_no) is None:
        raise Refusal(404, "refund_unknown", "no such refund")
    refund, order = accounting.lock_refund(db, refund_no)  # concurrent decisions on one refund queue here
    verdict = domain.decide(
        action=action,
        approval_required=refund.approval_required,
        decision=refund.decision,
        requester=Operator(refund.requested_client or "", refund.requested_subject or ""),
        operator=operator,
        payer=_payer(order),
    )
    if verdict is Verdict.SELF_APPROVAL:
        raise Refusal(403, "self_approval_refused", "a refund needs another operator's approval than the requester's")
    if verdict is Verdict.PAYER_APPROVAL:
        raise Refusal(403, "payer_approval_refused", "the payer of the order cannot approve a refund of it")
    if verdict is Verdict.NOT_PENDING:
        raise Refusal(409, "approval_not_required", "this refund did not need an approval")
    if verdict is Verdict.DECIDED:
        raise Refusal(409, "refund_already_decided", f"this refund was {refund.decision} already")
    if verdict is Verdict.REPEAT:
        return refund, False
    if action is Action.APPROVE:
        accounting.refund_approved(db, refund_no)
        refund.decision = "approved"
    else:
        accounting.refund_rejected(db, refund_no)
        refund.decision = "rejected"
    refund.decided_client, refund.decided_subject = operator.client_id, operator.subject
    refund.decided_at, refund.decision_note = utcnow(), note
    db.flush()
    log.info("refund %s %s by %s/%s", refund_no, refund.decision, operator.client_id, operator.subject)
    return refund, action is Action.APPROVE


# --- the channel ------------------------------------------------------------------------------------------------


def channel_request(refund: PaymentRefund, issuer: str) -> RefundRequest:
    order = refund.order
    return RefundRequest(
        order_no=order.order_no,
        refund_no=refund.refund_no,
        amount_fen=refund.amount_fen,
        order_amount_fen=order.amount_fen,
        reason=refund.reason or "",
        notify_url=issuer + CALLBACKS_PATH + order.channel,
    )


def send(runtime: Runtime, channels: Channels, refund_no: str) -> None:
    """Ask the order's channel for a `requested` refund (after the commit that made it so) and apply the answer.
    Safe to repeat: the channels deduplicate on our refund number, so the recovery sweeper may call this for a
    refund left `requested` without an answer (sent_at unset). Never raises for the channel's sake: an unknown
    outcome leaves the refund requested for the notification or the sweeper."""
    with unit_of_work(runtime.sessions) as db:
        refund = repository.refund_by_no(db, refund_no)
        if refund is None or refund.state != accounting.REQUESTED:
            return
        request, channel = channel_request(refund, runtime.settings.issuer), refund.order.channel
    adapter = channels.get(channel)
    if adapter is None:
        log.error("refund %s: channel %s is not configured; left requested", refund_no, channel)
        return
    try:
        status = adapter.refund(request)
    except ChannelDeclined as exc:
        code = exc.code
        _record(runtime, refund_no, lambda db: declined(db, refund_no, code))
        return
    except ChannelUnavailable as exc:
        log.warning("refund %s: %s unavailable (%s); left requested", refund_no, channel, exc)
        return
    except Exception:  # an adapter's own bug: the outcome is as unknown as after a timeout
        log.exception("refund %s: %s failed; left requested", refund_no, channel)
        return
    if status.refund_no != refund_no:  # an adapter's bug too: never settle one refund with another's answer
        log.error("refund %s: %s answered for another refund; left requested", refund_no, channel)
        return
    _record(runtime, refund_no, lambda db: apply_status(db, refund_no, status))


def _record(runtime: Runtime, refund_no: str, change: Any) -> None:
    try:
        with unit_of_work(runtime.sessions) as db:
            change(db)
    except SQLAlchemyError:
        # The refund is committed and the channel has it: the notification or the sweeper applies the outcome.
        log.exception("refund %s: the channel's answer was not recorded", refund_no)


def declined(db: Session, refund_no: str, code: str) -> Applied:
    """The channel refused the refund outright (ChannelDeclined): failed, the reservation released."""
    refund, _ = accounting.lock_refund(db, refund_no)
    if refund.state != accounting.REQUESTED:
        # Settled meanwhile (a notification came first): the decline changes nothing, not even the refund's note.
        return Applied.CONFLICT if refund.state != accounting.FAILED else Applied.DUPLICATE
    refund.sent_at, refund.channel_note = utcnow(), f"declined: {code}"[:200]
    accounting.refund_failed(db, refund_no)
    log.warning("refund %s declined by the channel: %s", refund_no, code)
    return Applied.APPLIED


class Applied(StrEnum):
    """What a channel's word about a refund did (the values are the inbox's outcomes)."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"  # contradicts what we hold (failed after succeeded, another order or channel): review
    HELD_AMOUNT_MISMATCH = "held_amount_mismatch"  # another amount than ours: not applied, review
    UNKNOWN_REFUND = "unknown_refund"
    IGNORED = "ignored"  # still processing


@dataclass(frozen=True)
class Result:
    applied: Applied
    note: str | None = None


def apply_status(db: Session, refund_no: str, status: RefundStatus) -> Result:
    """Apply a channel's RefundStatus (its answer to `refund`, or `query_refund` by the recovery sweeper) to a
    refund, in the caller's unit of work: SUCCEEDED and FAILED settle it through the accounting, PROCESSING changes
    nothing. Repeats are duplicates; an answer contradicting what we hold is a conflict, never applied."""
    if status.refund_no != refund_no:
        raise ValueError("the status is for another refund")
    refund = repository.refund_by_no(db, refund_no)
    if refund is None:
        return Result(Applied.UNKNOWN_REFUND)
    result = apply_outcome(
        db,
        refund_no=refund_no,
        channel=refund.order.channel,
        order_no=None,
        outcome=status.outcome,
        amount_fen=status.amount_fen,
        channel_refund_no=status.channel_refund_no,
    )
    refund.sent_at = utcnow()
    return result


def apply_outcome(
    db: Session,
    *,
    refund_no: str,
    channel: str,
    order_no: str | None,
    outcome: RefundOutcome,
    amount_fen: int,
    channel_refund_no: str | None,
    amount_is_total: bool = False,
) -> Result:
    """The channel's word on one of our refunds (from a notification: `order_no` as the channel sent it).
    `amount_is_total`: the channel reports the total refunded on the order so far (Alipay), not this refund's."""
    if repository.refund_by_no(db, refund_no) is None:
        log.warning("%s says refund %s is %s, but there is no such refund", channel, refund_no, outcome)
        return Result(Applied.UNKNOWN_REFUND)
    refund, order = accounting.lock_refund(db, refund_no)
    if order.channel != channel or (order_no is not None and order_no != order.order_no):
        return _conflict(refund_no, "the refund belongs to another order or channel")
    if outcome is RefundOutcome.PROCESSING:
        return Result(Applied.IGNORED)
    if amount_is_total:
        # Consistent with ours: at least what the channel had refunded before plus this one, at most everything we
        # have reserved (other refunds of the order may be in flight, and notices may come in any order).
        floor = order.refunded_fen + (0 if refund.state == accounting.SUCCEEDED else refund.amount_fen)
        if not floor <= amount_fen <= order.refund_reserved_fen:
            log.warning("refund %s: %s reports %s fen refunded in all", refund_no, channel, amount_fen)
            return Result(
                Applied.HELD_AMOUNT_MISMATCH,
                f"reported {amount_fen} fen refunded in all, ours is {floor} to {order.refund_reserved_fen} fen",
            )
    elif amount_fen != refund.amount_fen:
        log.warning("refund %s: %s reports %s fen, ours is %s fen", refund_no, channel, amount_fen, refund.amount_fen)
        return Result(Applied.HELD_AMOUNT_MISMATCH, f"reported {amount_fen} fen, the refund is {refund.amount_fen} fen")
    try:
        if outcome is RefundOutcome.SUCCEEDED:
            changed = accounting.refund_succeeded(db, refund_no).changed
        elif refund.state == accounting.FAILED:
            changed = False
        else:
            accounting.refund_failed(db, refund_no)
            changed = True
    except AccountingError as exc:  # failed after succeeded, succeeded after failed or rejected, ...
        return _conflict(refund_no, f"{outcome} refused: {exc}")
    if channel_refund_no and refund.channel_refund_no is None:
        refund.channel_refund_no = channel_refund_no[:64]
    db.flush()
    return Result(Applied.APPLIED if changed else Applied.DUPLICATE)


def _conflict(refund_no: str, note: str) -> Result:
    log.warning("refund %s: %s", refund_no, note)
    return Result(Applied.CONFLICT, note[:200])


# --- the API's view ---------------------------------------------------------------------------------------------


def describe(refund: PaymentRefund) -> dict[str, Any]:
    """A refund as operators see it: amounts in fen, who asked and who decided, what the channel said."""

    def when(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "refund_no": refund.refund_no,
        "order_no": refund.order.order_no,
        "channel": refund.order.channel,
        "amount_fen": refund.amount_fen,
        "state": refund.state,
        "reason": refund.reason,
        "requested_by": {"client_id": refund.requested_client, "subject": refund.requested_subject},
        "requested_at": when(refund.created_at),
        "approval_required": refund.approval_required,
        "decision": refund.decision,
        "decided_by": (
            {"client_id": refund.decided_client, "subject": refund.decided_subject} if refund.decision else None
        ),
        "decided_at": when(refund.decided_at),
        "decision_note": refund.decision_note,
        "channel_refund_no": refund.channel_refund_no,
        "channel_note": refund.channel_note,
        "settled_at": when(refund.settled_at),
    }
