"""The order state machine (pure): states only move forward.

    created ──submit──▶ pending ──pay──▶ paid ──refund_partial──▶ partially_refunded ──refund_full──▶ refunded
       │                   │  └──fail──▶ failed                 └──────────refund_full──────────────▶ refunded
       └──pay / fail / close (also from pending)──▶ paid / failed / closed

`pay` is accepted from `created` as well as `pending`: the channel's word that it took the money wins (a crash
between the channel's answer and our `pending` write must not leave a charge unpaid). Nothing leaves `failed`,
`closed` or `refunded`, and nothing takes `paid` back: a late "failed" after "paid" is refused and reported,
never applied. Refusals say why, so the caller can tell a harmless repeat (acknowledge) from a conflict (review).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    CREATED = "created"
    PENDING = "pending"
    PAID = "paid"
    FAILED = "failed"
    CLOSED = "closed"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"


class Event(StrEnum):
    SUBMIT = "submit"  # sent to the channel
    PAY = "pay"  # the channel confirms the charge
    FAIL = "fail"  # the channel reports the payment failed
    CLOSE = "close"  # unpaid order closed (at the channel first)
    REFUND_PARTIAL = "refund_partial"  # a refund confirmed, leaving part of the payment
    REFUND_FULL = "refund_full"  # a refund confirmed that returns the rest of the payment


class Reason(StrEnum):
    DUPLICATE = "duplicate"  # already there: a repeated callback or retry; acknowledge, change nothing
    CONFLICT = "conflict"  # contradicts a later state (late "failed" after "paid", a charge on a closed order): review
    INVALID = "invalid"  # not possible from this state (refund before payment): a bug or a forged call


@dataclass(frozen=True)
class Refused:
    state: State
    event: Event
    reason: Reason

    def __str__(self) -> str:
        return f"{self.event} refused in state {self.state}: {self.reason}"


TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.CREATED, Event.SUBMIT): State.PENDING,
    (State.CREATED, Event.PAY): State.PAID,
    (State.CREATED, Event.FAIL): State.FAILED,
    (State.CREATED, Event.CLOSE): State.CLOSED,
    (State.PENDING, Event.PAY): State.PAID,
    (State.PENDING, Event.FAIL): State.FAILED,
    (State.PENDING, Event.CLOSE): State.CLOSED,
    (State.PAID, Event.REFUND_PARTIAL): State.PARTIALLY_REFUNDED,
    (State.PAID, Event.REFUND_FULL): State.REFUNDED,
    (State.PARTIALLY_REFUNDED, Event.REFUND_PARTIAL): State.PARTIALLY_REFUNDED,
    (State.PARTIALLY_REFUNDED, Event.REFUND_FULL): State.REFUNDED,
}

# Harmless repeats: the order is already where the event would take it, or past it with no money in question (a
# retried submit after the callback came, a "failed" for an order closed meanwhile). Acknowledge, change nothing.
_UNPAID_ENDS = (State.FAILED, State.CLOSED)
_DUPLICATES = (
    {(state, Event.SUBMIT) for state in State if state is not State.CREATED}
    | {(state, event) for state in _UNPAID_ENDS for event in (Event.FAIL, Event.CLOSE)}
    | {(state, Event.PAY) for state in (State.PAID, State.PARTIALLY_REFUNDED, State.REFUNDED)}
    | {(State.REFUNDED, Event.REFUND_FULL)}
)

# A payment event that contradicts money already taken, or money taken on an order that had ended unpaid: these
# need a person (or reconciliation) to look, and the money, if any, waits in suspense.
_CONFLICTS = {
    (state, event)
    for state in (State.PAID, State.PARTIALLY_REFUNDED, State.REFUNDED)
    for event in (Event.FAIL, Event.CLOSE)
} | {(state, Event.PAY) for state in _UNPAID_ENDS}

PAID_STATES = frozenset({State.PAID, State.PARTIALLY_REFUNDED, State.REFUNDED})


def transition(state: State, event: Event) -> State | Refused:
    """The next state, or why the event does not apply. Never raises for any (state, event) pair."""
    state, event = State(state), Event(event)
    target = TRANSITIONS.get((state, event))
    if target is not None:
        return target
    if (state, event) in _DUPLICATES:
        return Refused(state, event, Reason.DUPLICATE)
    if (state, event) in _CONFLICTS:
        return Refused(state, event, Reason.CONFLICT)
    return Refused(state, event, Reason.INVALID)
