"""The refund policy without a database: request bodies, the approval threshold, and who may decide what."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments.money import MAX_FEN
from payments.refunds.domain import (
    Action,
    Operator,
    RefundInvalid,
    RefundSpec,
    Verdict,
    decide,
    needs_approval,
    parse_reason,
    parse_request,
)

ALICE = Operator("console-1", "alice")
ALICE_ELSEWHERE = Operator("console-2", "alice")  # the same person at another console
BOB = Operator("console-1", "bob")
GOOD = {"order_no": "SO0123456789abcdef01234567", "amount_fen": 30000, "reason": "paid twice"}


def test_a_good_request() -> None:
    assert parse_request(GOOD) == RefundSpec(GOOD["order_no"], 30000, "paid twice")
    assert parse_request({**GOOD, "reason": "  paid twice  "}).reason == "paid twice"
    assert parse_request({**GOOD, "amount_fen": MAX_FEN}).amount_fen == MAX_FEN


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount_fen": 0}, "amount_fen"),
        ({"amount_fen": -1}, "amount_fen"),
        ({"amount_fen": 300.0}, "amount_fen"),
        ({"amount_fen": 1.5}, "amount_fen"),
        ({"amount_fen": "30000"}, "amount_fen"),
        ({"amount_fen": "300.00"}, "amount_fen"),
        ({"amount_fen": True}, "amount_fen"),
        ({"amount_fen": None}, "amount_fen"),
        ({"amount_fen": MAX_FEN + 1}, "amount_fen"),
        ({"order_no": ""}, "order_no"),
        ({"order_no": 12}, "order_no"),
        ({"order_no": "S" * 33}, "order_no"),
        ({"reason": ""}, "reason"),
        ({"reason": "   "}, "reason"),
        ({"reason": "x" * 201}, "reason"),
        ({"reason": "line\nbreak"}, "reason"),
        ({"extra": 1}, "unknown fields"),
    ],
)
def test_bad_requests_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(RefundInvalid, match=field):
        parse_request({**GOOD, **change})


def test_missing_fields_and_other_shapes() -> None:
    for name in GOOD:
        with pytest.raises(RefundInvalid, match=name):
            parse_request({k: v for k, v in GOOD.items() if k != name})
    for doc in ([], "x", None, 3):
        with pytest.raises(RefundInvalid):
            parse_request(doc)


def test_reasons_of_decisions() -> None:
    assert parse_reason({"reason": "checked the receipt"}) == "checked the receipt"
    for doc in ({}, {"reason": ""}, {"reason": 1}, {"reason": "ok", "amount_fen": 1}, [], None):
        with pytest.raises(RefundInvalid):
            parse_reason(doc)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(st.sampled_from(["order_no", "amount_fen", "reason", "other"]), json_values) | json_values)
def test_fuzzed_bodies_parse_or_refuse_cleanly(doc: Any) -> None:
    try:
        spec = parse_request(doc)
    except RefundInvalid:
        return
    assert isinstance(spec.amount_fen, int) and not isinstance(spec.amount_fen, bool) and spec.amount_fen > 0
    assert spec.order_no and spec.reason and len(spec.reason) <= 200


def test_threshold_counts_the_orders_earlier_refunds() -> None:
    assert not needs_approval(500_000, 0, 500_000)  # up to the threshold: one operator
    assert needs_approval(500_001, 0, 500_000)
    # Splitting does not help: the second half of a large refund needs approval.
    assert not needs_approval(300_000, 0, 500_000)
    assert needs_approval(300_000, 300_000, 500_000)
    assert needs_approval(1, 0, 0)  # threshold 0: every refund is approved by a second operator
    assert needs_approval(1, 0, 500_000, own_order=True)  # money back to the requester: always four eyes


@given(st.integers(1, MAX_FEN), st.integers(0, MAX_FEN), st.integers(0, MAX_FEN))
def test_threshold_is_monotonic(amount: int, reserved: int, threshold: int) -> None:
    if not needs_approval(amount, reserved, threshold):
        assert amount + reserved <= threshold
        assert not needs_approval(amount, 0, threshold)
    else:
        assert needs_approval(amount, reserved + 1, threshold)


def verdict(
    action: Action, operator: Operator, decision: str | None = None, required: bool = True, payer: str | None = None
) -> Verdict:
    return decide(
        action=action, approval_required=required, decision=decision, requester=ALICE, operator=operator, payer=payer
    )


def test_four_eyes() -> None:
    assert verdict(Action.APPROVE, BOB) is Verdict.APPLY
    assert verdict(Action.APPROVE, ALICE) is Verdict.SELF_APPROVAL
    assert verdict(Action.APPROVE, ALICE_ELSEWHERE) is Verdict.SELF_APPROVAL  # a person, not a console
    assert verdict(Action.APPROVE, ALICE, "approved") is Verdict.SELF_APPROVAL  # even after another approved
    assert verdict(Action.REJECT, ALICE) is Verdict.APPLY  # the requester may withdraw: no money goes out
    assert verdict(Action.REJECT, BOB) is Verdict.APPLY


def test_the_payer_cannot_approve() -> None:
    assert verdict(Action.APPROVE, BOB, payer="bob") is Verdict.PAYER_APPROVAL
    assert verdict(Action.APPROVE, BOB, "approved", payer="bob") is Verdict.PAYER_APPROVAL
    assert verdict(Action.REJECT, BOB, payer="bob") is Verdict.APPLY
    assert verdict(Action.APPROVE, BOB, payer="carol") is Verdict.APPLY
    assert verdict(Action.APPROVE, ALICE, payer="alice") is Verdict.SELF_APPROVAL


def test_repeats_and_contradictions() -> None:
    assert verdict(Action.APPROVE, BOB, "approved") is Verdict.REPEAT
    assert verdict(Action.REJECT, BOB, "rejected") is Verdict.REPEAT
    assert verdict(Action.APPROVE, BOB, "rejected") is Verdict.DECIDED
    assert verdict(Action.REJECT, BOB, "approved") is Verdict.DECIDED
    for action in Action:
        assert verdict(action, BOB, required=False) is Verdict.NOT_PENDING
        assert verdict(action, ALICE, required=False) is Verdict.NOT_PENDING


@given(st.dictionaries(st.sampled_from(["reason", "other"]), json_values) | json_values)
def test_fuzzed_decision_bodies_parse_or_refuse_cleanly(doc: Any) -> None:
    try:
        reason = parse_reason(doc)
    except RefundInvalid:
        return
    assert reason and reason == reason.strip() and len(reason) <= 200 and reason.isprintable()
