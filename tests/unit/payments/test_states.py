"""The order state machine: every (state, event) pair, and that nothing ever moves backwards."""

from __future__ import annotations

import pytest

from payments.orders.states import PAID_STATES, Event, Reason, Refused, State, transition

S, E, R = State, Event, Reason
TABLE: dict[tuple[State, Event], State | Reason] = {
    (S.CREATED, E.SUBMIT): S.PENDING,
    (S.CREATED, E.PAY): S.PAID,
    (S.CREATED, E.FAIL): S.FAILED,
    (S.CREATED, E.CLOSE): S.CLOSED,
    (S.CREATED, E.REFUND_PARTIAL): R.INVALID,
    (S.CREATED, E.REFUND_FULL): R.INVALID,
    (S.PENDING, E.SUBMIT): R.DUPLICATE,
    (S.PENDING, E.PAY): S.PAID,
    (S.PENDING, E.FAIL): S.FAILED,
    (S.PENDING, E.CLOSE): S.CLOSED,
    (S.PENDING, E.REFUND_PARTIAL): R.INVALID,
    (S.PENDING, E.REFUND_FULL): R.INVALID,
    (S.PAID, E.SUBMIT): R.DUPLICATE,
    (S.PAID, E.PAY): R.DUPLICATE,
    (S.PAID, E.FAIL): R.CONFLICT,  # a late "failed" never undoes "paid"
    (S.PAID, E.CLOSE): R.CONFLICT,
    (S.PAID, E.REFUND_PARTIAL): S.PARTIALLY_REFUNDED,
    (S.PAID, E.REFUND_FULL): S.REFUNDED,
    (S.FAILED, E.SUBMIT): R.DUPLICATE,
    (S.FAILED, E.PAY): R.CONFLICT,  # money taken on an order we consider failed: review, suspense
    (S.FAILED, E.FAIL): R.DUPLICATE,
    (S.FAILED, E.CLOSE): R.DUPLICATE,
    (S.FAILED, E.REFUND_PARTIAL): R.INVALID,
    (S.FAILED, E.REFUND_FULL): R.INVALID,
    (S.CLOSED, E.SUBMIT): R.DUPLICATE,
    (S.CLOSED, E.PAY): R.CONFLICT,
    (S.CLOSED, E.FAIL): R.DUPLICATE,
    (S.CLOSED, E.CLOSE): R.DUPLICATE,
    (S.CLOSED, E.REFUND_PARTIAL): R.INVALID,
    (S.CLOSED, E.REFUND_FULL): R.INVALID,
    (S.PARTIALLY_REFUNDED, E.SUBMIT): R.DUPLICATE,
    (S.PARTIALLY_REFUNDED, E.PAY): R.DUPLICATE,
    (S.PARTIALLY_REFUNDED, E.FAIL): R.CONFLICT,
    (S.PARTIALLY_REFUNDED, E.CLOSE): R.CONFLICT,
    (S.PARTIALLY_REFUNDED, E.REFUND_PARTIAL): S.PARTIALLY_REFUNDED,
    (S.PARTIALLY_REFUNDED, E.REFUND_FULL): S.REFUNDED,
    (S.REFUNDED, E.SUBMIT): R.DUPLICATE,
    (S.REFUNDED, E.PAY): R.DUPLICATE,
    (S.REFUNDED, E.FAIL): R.CONFLICT,
    (S.REFUNDED, E.CLOSE): R.CONFLICT,
    (S.REFUNDED, E.REFUND_PARTIAL): R.INVALID,
    (S.REFUNDED, E.REFUND_FULL): R.DUPLICATE,
}

ORDER = [S.CREATED, S.PENDING, S.PAID, S.PARTIALLY_REFUNDED, S.REFUNDED]


def test_the_table_covers_every_pair() -> None:
    assert set(TABLE) == {(s, e) for s in State for e in Event}


@pytest.mark.parametrize(("state", "event"), list(TABLE))
def test_transition(state: State, event: Event) -> None:
    expected = TABLE[(state, event)]
    result = transition(state, event)
    if isinstance(expected, Reason):
        assert result == Refused(state, event, expected)
        assert str(event) in str(result) and str(state) in str(result)
    else:
        assert result == expected


def test_nothing_moves_backwards_or_leaves_an_end() -> None:
    for (state, event), expected in TABLE.items():
        result = transition(state, event)
        if isinstance(result, Refused):
            continue
        if state in (S.FAILED, S.CLOSED, S.REFUNDED):
            pytest.fail(f"{state} left by {event}")
        if state in PAID_STATES:
            assert result in PAID_STATES  # once paid, always counted as paid
        if result in ORDER and state in ORDER:
            assert ORDER.index(result) >= ORDER.index(state)
        assert result == expected


def test_unknown_values_are_rejected() -> None:
    with pytest.raises(ValueError):
        transition("lost", Event.PAY)  # type: ignore[arg-type]
