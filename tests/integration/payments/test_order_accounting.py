"""Orders and their ledger entries: paid, partial and full refunds, refused refunds, conflicts, on both backends."""

from __future__ import annotations

import pytest

from authsvc.database import unit_of_work
from authsvc.runtime import Runtime
from payments.ledger.check import check
from payments.ledger.service import balances, entry_by_key
from payments.orders import accounting, repository
from payments.orders.accounting import AccountingError
from payments.orders.domain import InsuranceType, OrderSpec, PayerKind, Tier, TierTable, validate
from payments.orders.states import Reason, State

TIERS = TierTable({(InsuranceType.PENSION, "110000", 2025): Tier(monthly=False, choices=frozenset({30000, 100000}))})
SPEC = OrderSpec(
    PayerKind.CITIZEN,
    "subject-1",
    "110105199003072813",
    InsuranceType.PENSION,
    ("2025",),
    100000,
    "110000",
    "wechatpay",
)
CLEARING, FUND, REFUNDS = "clearing:wechatpay", "fund:pension:110000", "refunds:wechatpay"


def new_order(runtime: Runtime) -> str:
    with unit_of_work(runtime.sessions) as db:
        return repository.add_order(db, validate(SPEC, TIERS)).order_no


def paid_order(runtime: Runtime) -> str:
    order_no = new_order(runtime)
    with unit_of_work(runtime.sessions) as db:
        assert accounting.submit(db, order_no).changed
        assert accounting.mark_paid(db, order_no, amount_fen=100000).changed
    return order_no


def state_and_balances(runtime: Runtime, order_no: str) -> tuple[str, dict[str, int]]:
    with unit_of_work(runtime.sessions) as db:
        order = repository.order_by_no(db, order_no)
        assert order is not None and check(db).ok
        return order.state, balances(db)


def test_paid_posts_clearing_to_fund_once(runtime: Runtime) -> None:
    order_no = paid_order(runtime)
    assert state_and_balances(runtime, order_no) == ("paid", {CLEARING: 100000, FUND: 100000})
    with unit_of_work(runtime.sessions) as db:
        repeat = accounting.mark_paid(db, order_no, amount_fen=100000)  # a duplicate callback
        assert not repeat.changed and repeat.refused is not None and repeat.refused.reason is Reason.DUPLICATE
        entry = entry_by_key(db, f"order:{order_no}:paid")
        assert entry is not None and entry.order_ref == order_no
    assert state_and_balances(runtime, order_no) == ("paid", {CLEARING: 100000, FUND: 100000})


def test_a_late_failure_never_undoes_paid(runtime: Runtime) -> None:
    order_no = paid_order(runtime)
    with unit_of_work(runtime.sessions) as db:
        late = accounting.fail(db, order_no)
        assert not late.changed and late.refused is not None and late.refused.reason is Reason.CONFLICT
        assert accounting.close(db, order_no).refused.reason is Reason.CONFLICT  # type: ignore[union-attr]
    assert state_and_balances(runtime, order_no)[0] == "paid"


def test_a_charge_of_another_amount_is_refused(runtime: Runtime) -> None:
    order_no = new_order(runtime)
    with pytest.raises(AccountingError, match="charged 99999 fen"), unit_of_work(runtime.sessions) as db:
        accounting.mark_paid(db, order_no, amount_fen=99999)
    assert state_and_balances(runtime, order_no) == ("created", {})


def test_failed_and_closed_orders_post_nothing(runtime: Runtime) -> None:
    failed, closed = new_order(runtime), new_order(runtime)
    with unit_of_work(runtime.sessions) as db:
        assert accounting.fail(db, failed).changed and accounting.close(db, closed).changed
        assert accounting.mark_paid(db, closed, amount_fen=100000).refused.reason is Reason.CONFLICT  # type: ignore[union-attr]
    assert state_and_balances(runtime, failed) == ("failed", {})
    assert state_and_balances(runtime, closed) == ("closed", {})


def test_partial_then_full_refund(runtime: Runtime) -> None:
    order_no = paid_order(runtime)
    with unit_of_work(runtime.sessions) as db:
        accounting.request_refund(db, order_no, "RF1", 30000)
    assert state_and_balances(runtime, order_no) == ("paid", {CLEARING: 100000, FUND: 70000, REFUNDS: 30000})
    with unit_of_work(runtime.sessions) as db:
        assert accounting.refund_succeeded(db, "RF1").changed
    assert state_and_balances(runtime, order_no) == ("partially_refunded", {CLEARING: 70000, FUND: 70000, REFUNDS: 0})
    with unit_of_work(runtime.sessions) as db:
        accounting.request_refund(db, order_no, "RF2", 70000)
        assert accounting.refund_succeeded(db, "RF2").changed
        assert not accounting.refund_succeeded(db, "RF2").changed  # a repeated confirmation
    assert state_and_balances(runtime, order_no) == ("refunded", {CLEARING: 0, FUND: 0, REFUNDS: 0})
    with unit_of_work(runtime.sessions) as db:
        order = repository.order_by_no(db, order_no)
        assert order is not None and order.refunded_fen == order.refund_reserved_fen == 100000


def test_a_refund_above_what_was_paid_is_refused(runtime: Runtime) -> None:
    order_no = paid_order(runtime)
    with pytest.raises(AccountingError, match="more than the 100000 fen left"), unit_of_work(runtime.sessions) as db:
        accounting.request_refund(db, order_no, "RF1", 100001)
    with unit_of_work(runtime.sessions) as db:
        accounting.request_refund(db, order_no, "RF2", 60000)  # in flight: counts against what is left
    with pytest.raises(AccountingError, match="more than the 40000 fen left"), unit_of_work(runtime.sessions) as db:
        accounting.request_refund(db, order_no, "RF3", 40001)
    assert state_and_balances(runtime, order_no) == ("paid", {CLEARING: 100000, FUND: 40000, REFUNDS: 60000})


def test_a_failed_refund_is_reversed_and_frees_the_amount(runtime: Runtime) -> None:
    order_no = paid_order(runtime)
    with unit_of_work(runtime.sessions) as db:
        accounting.request_refund(db, order_no, "RF1", 100000)
        accounting.refund_failed(db, "RF1")
    assert state_and_balances(runtime, order_no) == ("paid", {CLEARING: 100000, FUND: 100000, REFUNDS: 0})
    with pytest.raises(AccountingError, match="already failed"), unit_of_work(runtime.sessions) as db:
        accounting.refund_succeeded(db, "RF1")
    with unit_of_work(runtime.sessions) as db:
        accounting.request_refund(db, order_no, "RF2", 100000)
        accounting.refund_succeeded(db, "RF2")
    assert state_and_balances(runtime, order_no)[0] == "refunded"


@pytest.mark.parametrize(
    ("refund_no", "amount", "message"),
    [("RF1", 0, "more than zero"), ("RF1", 1.5, "integer"), ("", 100, "refund number"), ("RF1", -1, "negative")],
)
def test_bad_refund_requests(runtime: Runtime, refund_no: str, amount: int, message: str) -> None:
    order_no = paid_order(runtime)
    with pytest.raises(AccountingError, match=message), unit_of_work(runtime.sessions) as db:
        accounting.request_refund(db, order_no, refund_no, amount)


def test_refunds_of_unpaid_orders_and_reused_refund_numbers(runtime: Runtime) -> None:
    unpaid, paid = new_order(runtime), paid_order(runtime)
    with pytest.raises(AccountingError, match="only a paid order"), unit_of_work(runtime.sessions) as db:
        accounting.request_refund(db, unpaid, "RF1", 100)
    with unit_of_work(runtime.sessions) as db:
        first = accounting.request_refund(db, paid, "RF1", 100).id
        assert accounting.request_refund(db, paid, "RF1", 100).id == first  # a retried request
    with pytest.raises(AccountingError, match="another order or amount"), unit_of_work(runtime.sessions) as db:
        accounting.request_refund(db, paid, "RF1", 200)
    with pytest.raises(AccountingError, match="no order"), unit_of_work(runtime.sessions) as db:
        accounting.mark_paid(db, "SOnothing", amount_fen=1)


def test_order_repr_and_spec_repr_hide_the_ssn(runtime: Runtime) -> None:
    order_no = new_order(runtime)
    with unit_of_work(runtime.sessions) as db:
        order = repository.order_by_no(db, order_no)
        assert order is not None and order.insured_ssn == "110105199003072813"
        assert "110105199003072813" not in repr(order)
    assert "110105199003072813" not in repr(SPEC) and SPEC.masked_ssn == "110105********2813"
    assert State(order.state) is State.CREATED
