"""Refund policy, pure: what a refund request must say, when a second operator must approve, and who may decide.

The four-eyes rule: a refund whose amount, together with what the order already has refunded or in flight, is above
the threshold waits for a second operator; counting the order's earlier refunds means splitting one large refund
into several small ones does not get around it. So does any refund an operator asks for on an order they paid
themselves, whatever the amount. The operator who asked can never approve their own refund, nor can the payer of the
order; the requester may withdraw it (a rejection moves no money out). Operators are people: two tokens of one subject
(the same person at two consoles) are one operator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from payments.money import MAX_FEN

MAX_REASON = 200
_FIELDS = frozenset({"order_no", "amount_fen", "reason"})


class RefundInvalid(ValueError):
    """A request body that is not a refund request; the message names the field, never echoes values."""


@dataclass(frozen=True)
class Operator:
    """Who is acting: the access token's client (the console) and subject (the person)."""

    client_id: str
    subject: str

    def same_person(self, other: Operator) -> bool:
        return self.subject == other.subject


@dataclass(frozen=True)
class RefundSpec:
    order_no: str
    amount_fen: int
    reason: str


def _text(doc: Mapping[str, Any], name: str, limit: int) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value.strip():
        raise RefundInvalid(f"{name} must be a non-empty string")
    if len(value) > limit or not value.isprintable():
        raise RefundInvalid(f"{name} must be at most {limit} printable characters")
    return value.strip()


def parse_reason(doc: Any) -> str:
    """The `reason` of an approval or rejection body (an object with only `reason`)."""
    if not isinstance(doc, Mapping) or set(doc) - {"reason"}:
        raise RefundInvalid("the body must be an object with only a reason")
    return _text(doc, "reason", MAX_REASON)


def parse_request(doc: Any) -> RefundSpec:
    """A refund request from the API body; RefundInvalid otherwise. Amounts are integer fen: 12.5 or "1250" is
    refused, as is zero or less (what is left on the order is accounting's check, under the order's lock)."""
    if not isinstance(doc, Mapping):
        raise RefundInvalid("the body must be a JSON object")
    unknown = set(doc) - _FIELDS
    if unknown:
        raise RefundInvalid(f"unknown fields: {', '.join(sorted(str(k)[:32] for k in unknown))}")
    order_no = _text(doc, "order_no", 32)
    amount = doc.get("amount_fen")
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise RefundInvalid("amount_fen must be an integer number of fen")
    if not 0 < amount <= MAX_FEN:
        raise RefundInvalid("amount_fen must be more than zero")
    return RefundSpec(order_no, amount, _text(doc, "reason", MAX_REASON))


def needs_approval(amount_fen: int, already_reserved_fen: int, threshold_fen: int, *, own_order: bool = False) -> bool:
    """Whether a second operator must approve: the order's refunds, this one included, above the threshold, or the
    requester is the order's payer (money back to oneself)."""
    return own_order or amount_fen + already_reserved_fen > threshold_fen


class Verdict(StrEnum):
    APPLY = "apply"  # make the change now
    REPEAT = "repeat"  # already so (a retried approval or rejection): answer with the refund, change nothing
    SELF_APPROVAL = "self_approval"  # the requester may not approve their own refund
    PAYER_APPROVAL = "payer_approval"  # nor may the person the money goes back to
    DECIDED = "decided"  # the other decision was taken already, or the refund needed none
    NOT_PENDING = "not_pending"  # nothing to decide (a refund below the threshold)


class Action(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


def decide(
    *,
    action: Action,
    approval_required: bool,
    decision: str | None,
    requester: Operator,
    operator: Operator,
    payer: str | None = None,
) -> Verdict:
    """May `operator` approve or reject a refund `requester` asked for, given what was decided so far? `payer` is
    the subject of the cardholder who paid the order (None for an employer's order)."""
    if not approval_required:
        return Verdict.NOT_PENDING
    taken = Action.APPROVE if decision == "approved" else Action.REJECT if decision == "rejected" else None
    # Checked before the repeat: the requester (or payer) is told no even once another operator approved.
    if action is Action.APPROVE and operator.same_person(requester):
        return Verdict.SELF_APPROVAL
    if action is Action.APPROVE and payer is not None and operator.subject == payer:
        return Verdict.PAYER_APPROVAL
    if taken is None:
        return Verdict.APPLY
    return Verdict.REPEAT if taken is action else Verdict.DECIDED
