"""check-ledger proves that orders agree with the ledger, on both backends: each rule broken on purpose is reported
with the order's number (never the insured person) and makes the command exit 1. Entries cannot be changed or
deleted (the PostgreSQL trigger), so disagreements are made by editing orders and refunds or by posting entries
directly."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import update

from authsvc.cli import main
from authsvc.database import unit_of_work
from authsvc.runtime import Runtime
from payments.ledger import accounts
from payments.ledger.check import ORDER_RULES, SHOWN, check
from payments.ledger.service import credit, debit, post
from payments.orders import accounting, repository
from payments.orders.domain import InsuranceType, OrderSpec, PayerKind, Tier, TierTable, validate
from payments.orders.models import PaymentOrder, PaymentRefund

SSN = "110105199003072813"
AMOUNT = 12000
TIERS = TierTable({(InsuranceType.PENSION, "110000", 2025): Tier(monthly=False, choices=frozenset({AMOUNT}))})
CLEAN = dict.fromkeys(ORDER_RULES, 0)


def new_order(runtime: Runtime, *, paid: bool = False) -> str:
    spec = OrderSpec(PayerKind.CITIZEN, "s-1", SSN, InsuranceType.PENSION, ("2025",), AMOUNT, "110000", "wechatpay")
    with unit_of_work(runtime.sessions) as db:
        order_no = repository.add_order(db, validate(spec, TIERS)).order_no
        accounting.submit(db, order_no)
        if paid:
            accounting.mark_paid(db, order_no, amount_fen=AMOUNT)
    return order_no


def edit_order(runtime: Runtime, order_no: str, **values: object) -> None:
    with unit_of_work(runtime.sessions) as db:
        db.execute(update(PaymentOrder).where(PaymentOrder.order_no == order_no).values(**values))


def post_paid(runtime: Runtime, order_no: str, *, amount: int = AMOUNT, channel: str = "wechatpay") -> None:
    lines = [debit(accounts.clearing(channel), amount), credit(accounts.fund("pension", "110000"), amount)]
    with unit_of_work(runtime.sessions) as db:
        post(db, f"order:{order_no}:paid", "paid", lines, order_ref=order_no)


def disagreements(runtime: Runtime) -> tuple[dict[str, int], list[str]]:
    with unit_of_work(runtime.sessions) as db:
        report = check(db)
    assert report.ok == (report.order_disagreements == CLEAN)
    return report.order_disagreements, report.examples


def only(rule: str, count: int = 1) -> dict[str, int]:
    return {**CLEAN, rule: count}


def test_a_ledger_written_by_the_accounting_agrees(runtime: Runtime) -> None:
    new_order(runtime)  # pending
    partly, fully, failed, waiting, rejected = (new_order(runtime, paid=True) for _ in range(5))
    with unit_of_work(runtime.sessions) as db:
        accounting.request_refund(db, partly, "R-1", 2000)
        accounting.refund_succeeded(db, "R-1")
        accounting.request_refund(db, partly, "R-2", 1000)  # in flight
        accounting.request_refund(db, fully, "R-3", AMOUNT)
        accounting.refund_succeeded(db, "R-3")
        accounting.request_refund(db, failed, "R-4", 500)
        accounting.refund_failed(db, "R-4")
        accounting.request_refund(db, waiting, "R-5", 700, awaiting_approval=True)
        accounting.request_refund(db, rejected, "R-6", 800, awaiting_approval=True)
        accounting.refund_rejected(db, "R-6")
    with unit_of_work(runtime.sessions) as db:
        report = check(db)
    assert report.ok and report.orders == 6 and report.order_disagreements == CLEAN and report.examples == []


def test_a_paid_order_without_its_entry(runtime: Runtime) -> None:
    order_no = new_order(runtime)
    edit_order(runtime, order_no, state="paid")
    found, examples = disagreements(runtime)
    assert found == only("paid_without_entry")
    assert examples == [f"order {order_no} is paid without its paid entry"]


@pytest.mark.parametrize("state", ["created", "pending", "failed", "closed"])
def test_an_unpaid_order_with_a_paid_entry(runtime: Runtime, state: str) -> None:
    order_no = new_order(runtime)
    edit_order(runtime, order_no, state=state)
    post_paid(runtime, order_no)
    found, examples = disagreements(runtime)
    assert found == only("unpaid_with_paid_entry")
    assert examples == [f"order {order_no} is {state} but has a paid entry"]


@pytest.mark.parametrize("how", ["order_amount_edited", "entry_other_amount", "entry_other_channel"])
def test_a_paid_entry_that_is_not_the_orders(runtime: Runtime, how: str) -> None:
    if how == "order_amount_edited":
        order_no = new_order(runtime, paid=True)
        edit_order(runtime, order_no, amount_fen=AMOUNT + 100)
    else:
        order_no = new_order(runtime)
        if how == "entry_other_amount":
            post_paid(runtime, order_no, amount=AMOUNT - 1)
        else:
            post_paid(runtime, order_no, channel="alipay")
        edit_order(runtime, order_no, state="paid")
    found, examples = disagreements(runtime)
    assert found == only("paid_entry_mismatch")
    assert examples == [f"order {order_no} has a paid entry that is not its amount from clearing to its fund"]


def test_a_paid_entry_for_no_order(runtime: Runtime) -> None:
    new_order(runtime, paid=True)
    post_paid(runtime, "SO000000000000000000000000")
    found, examples = disagreements(runtime)
    assert found == only("paid_entry_without_order")
    assert examples == ["order SO000000000000000000000000 has a paid entry but no order"]


def refunded_order(runtime: Runtime) -> str:
    order_no = new_order(runtime, paid=True)
    with unit_of_work(runtime.sessions) as db:
        accounting.request_refund(db, order_no, "R-1", 3000)
        accounting.refund_succeeded(db, "R-1")
        accounting.request_refund(db, order_no, "R-2", 1000)
    return order_no


def test_refunded_fen_that_its_entries_do_not_show(runtime: Runtime) -> None:
    order_no = refunded_order(runtime)
    edit_order(runtime, order_no, refunded_fen=2000)
    found, examples = disagreements(runtime)
    assert found == only("refunded_mismatch")
    assert examples == [
        f"order {order_no} has refunded_fen 2000 but 3000 in refund_succeeded entries and 3000 in succeeded refunds"
    ]


def test_a_reservation_that_its_entries_do_not_show(runtime: Runtime) -> None:
    order_no = refunded_order(runtime)
    edit_order(runtime, order_no, refund_reserved_fen=3000)  # as if the request in flight had been forgotten
    found, examples = disagreements(runtime)
    assert found == only("reserved_mismatch")
    assert examples == [
        f"order {order_no} has refund_reserved_fen 3000 but 4000 reserved by its refund entries and 4000 by its "
        "open or succeeded refunds"
    ]


def test_a_refund_whose_state_its_entries_contradict(runtime: Runtime) -> None:
    order_no = refunded_order(runtime)
    with unit_of_work(runtime.sessions) as db:  # "failed" without the reversing entry or the released reservation
        db.execute(update(PaymentRefund).where(PaymentRefund.refund_no == "R-2").values(state="failed"))
    found, examples = disagreements(runtime)
    assert found == only("reserved_mismatch")
    assert examples == [
        f"order {order_no} has refund_reserved_fen 4000 but 4000 reserved by its refund entries and 3000 by its "
        "open or succeeded refunds"
    ]


def test_a_refund_entry_posted_without_the_order_changing(runtime: Runtime) -> None:
    order_no = refunded_order(runtime)
    lines = [debit(accounts.refunds("wechatpay"), 500), credit(accounts.clearing("wechatpay"), 500)]
    with unit_of_work(runtime.sessions) as db:
        post(db, "refund:R-X:succeeded", "refund_succeeded", lines, order_ref=order_no)
    found, _ = disagreements(runtime)
    assert found == only("refunded_mismatch")


def test_many_disagreements_are_counted_exactly_and_shown_in_part(runtime: Runtime) -> None:
    numbers = [new_order(runtime) for _ in range(SHOWN + 5)]
    for number in numbers:
        edit_order(runtime, number, state="paid")
    found, examples = disagreements(runtime)
    assert found == only("paid_without_entry", SHOWN + 5)
    assert len(examples) == SHOWN and all(e.split()[1] in numbers for e in examples)


def test_the_command_exits_1_naming_orders_never_people(cli_env: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    good = new_order(cli_env, paid=True)
    assert main(["payments", "check-ledger"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["orders"] == 1 and report["order_disagreements"] == CLEAN

    bad = new_order(cli_env)
    edit_order(cli_env, bad, state="refunded", refund_reserved_fen=AMOUNT, refunded_fen=AMOUNT)
    assert main(["payments", "check-ledger"]) == 1
    out = capsys.readouterr().out
    report = json.loads(out)
    assert not report["ok"] and report["orders"] == 2
    assert report["order_disagreements"]["paid_without_entry"] == 1
    assert report["order_disagreements"]["refunded_mismatch"] == 1
    assert report["order_disagreements"]["reserved_mismatch"] == 1
    assert all(bad in example for example in report["examples"]) and good not in out
    assert SSN not in out and SSN[:10] not in out
