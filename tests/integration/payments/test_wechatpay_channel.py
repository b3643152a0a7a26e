"""WeChat Pay end to end, on both backends: the service's adapter talks to the sandbox over HTTP, and the sandbox's
signed, encrypted notifications are posted into the real application (the generic callback route, the inbox, the
order accounting, the ledger). Whatever the sandbox's faults, an order is paid once and the ledger balances."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from authsvc.runtime import Runtime
from payments.channels import registry
from payments.channels.base import TradeStatus
from payments.channels.wechatpay_adapter import WechatPayAdapter
from payments.sandbox.wechatpay import WechatPaySandbox
from tests.integration.payments import support
from tests.integration.payments.support import (
    AMOUNT,
    inbox,
    order_and_money,
    refund_state,
    send_refund,
)

NOW = 1_795_000_000
PAID = {"clearing:wechatpay": AMOUNT, "fund:pension:110000": AMOUNT}


@pytest.fixture(scope="module")
def merchant_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def sandbox(client: TestClient, merchant_key: rsa.RSAPrivateKey) -> WechatPaySandbox:
    return support.wechatpay_sandbox(client, merchant_key, now=NOW)


@pytest.fixture
def adapter(client: TestClient, sandbox: WechatPaySandbox) -> WechatPayAdapter:
    return support.wechatpay_adapter(client, sandbox, now=NOW)


def new_order(runtime: Runtime, adapter: WechatPayAdapter) -> str:
    return support.started_order(runtime, adapter, now=NOW)


def test_paid_once_through_the_sandbox(runtime: Runtime, adapter: WechatPayAdapter, sandbox: WechatPaySandbox) -> None:
    order_no = new_order(runtime, adapter)
    sandbox.pay(order_no)
    assert [(d.status, d.attempt) for d in sandbox.deliveries] == [(204, 1)]
    assert order_and_money(runtime, order_no) == ("paid", PAID)
    assert inbox(runtime) == [("SUCCESS", "applied")]
    assert adapter.query_payment(order_no).status is TradeStatus.PAID


def test_a_duplicate_notification_changes_nothing(
    runtime: Runtime, adapter: WechatPayAdapter, sandbox: WechatPaySandbox
) -> None:
    order_no = new_order(runtime, adapter)
    sandbox.pay(order_no, delivery="twice")
    assert [d.status for d in sandbox.deliveries] == [204, 204]
    assert order_and_money(runtime, order_no) == ("paid", PAID)
    assert inbox(runtime) == [("SUCCESS", "applied")]  # the second is a redelivery of the same event


def test_a_notification_retried_after_our_failure_pays_once(
    client: TestClient, runtime: Runtime, adapter: WechatPayAdapter, sandbox: WechatPaySandbox
) -> None:
    order_no = new_order(runtime, adapter)
    failures = iter([502, 503])
    deliver = sandbox.sender
    # A proxy in front of the service failing twice: WeChat Pay retries, each delivery signed afresh.
    sandbox.sender = lambda url, h, b: next(failures, None) or deliver(url, h, b)
    sandbox.pay(order_no)
    assert [d.status for d in sandbox.deliveries] == [502, 503, 204]
    assert order_and_money(runtime, order_no) == ("paid", PAID)


def test_a_service_without_the_channel_is_retried_until_it_has_it(
    client: TestClient, runtime: Runtime, adapter: WechatPayAdapter, sandbox: WechatPaySandbox
) -> None:
    order_no = new_order(runtime, adapter)
    registry.install(client.app, registry.Channels({}, clock=lambda: NOW))  # type: ignore[arg-type]
    sandbox.max_attempts = 2
    sandbox.pay(order_no)
    assert [d.status for d in sandbox.deliveries] == [503, 503]
    assert order_and_money(runtime, order_no) == ("pending", {})
    # WeChat Pay gave up; the order is found paid by query (the recovery sweep's job), nothing was half-applied.
    assert adapter.query_payment(order_no).status is TradeStatus.PAID


@pytest.mark.parametrize("delivery", ["bad_signature", "stale"])
def test_forged_and_stale_notifications_change_nothing(
    runtime: Runtime, adapter: WechatPayAdapter, sandbox: WechatPaySandbox, delivery: str
) -> None:
    order_no = new_order(runtime, adapter)
    sandbox.pay(order_no, delivery=delivery)
    assert [d.status for d in sandbox.deliveries] == [401]
    assert order_and_money(runtime, order_no) == ("pending", {})
    assert inbox(runtime) == []


def test_a_notification_never_sent_leaves_the_order_pending(
    runtime: Runtime, adapter: WechatPayAdapter, sandbox: WechatPaySandbox
) -> None:
    order_no = new_order(runtime, adapter)
    sandbox.pay(order_no, delivery="none")
    assert order_and_money(runtime, order_no) == ("pending", {})
    trade = adapter.query_payment(order_no)  # what a recovery sweep sees
    assert (trade.status, trade.amount_fen) == (TradeStatus.PAID, AMOUNT)


def test_a_failure_delivered_after_the_success_is_a_conflict(
    runtime: Runtime, adapter: WechatPayAdapter, sandbox: WechatPaySandbox
) -> None:
    order_no = new_order(runtime, adapter)
    sandbox.hold_callbacks = True
    sandbox.fail(order_no)  # the first attempt failed, the payer tried again and paid
    sandbox.pay(order_no)
    sandbox.hold_callbacks = False
    sandbox.release_callbacks(reverse=True)
    assert order_and_money(runtime, order_no) == ("paid", PAID)
    assert inbox(runtime) == [("SUCCESS", "applied"), ("PAYERROR", "conflict")]


def test_a_charge_of_another_amount_is_held_in_suspense(
    runtime: Runtime, adapter: WechatPayAdapter, sandbox: WechatPaySandbox
) -> None:
    order_no = new_order(runtime, adapter)
    sandbox.pay(order_no, amount_fen=AMOUNT - 1)
    assert order_and_money(runtime, order_no) == (
        "pending",
        {"clearing:wechatpay": AMOUNT - 1, "suspense:wechatpay": AMOUNT - 1},
    )
    assert inbox(runtime) == [("SUCCESS", "held_amount_mismatch")]


@pytest.mark.parametrize(("end", "settled"), [("SUCCESS", "succeeded"), ("ABNORMAL", "failed"), ("CLOSED", "failed")])
def test_a_refund_through_the_sandbox_and_its_notification(
    client: TestClient,
    runtime: Runtime,
    adapter: WechatPayAdapter,
    sandbox: WechatPaySandbox,
    end: str,
    settled: str,
) -> None:
    order_no = new_order(runtime, adapter)
    sandbox.pay(order_no)
    assert send_refund(runtime, client, order_no, "RF" + order_no[2:], 5000) == "requested"
    assert sandbox.refunds["RF" + order_no[2:]].amount_fen == 5000  # the channel has it, processing
    sandbox.settle_refund("RF" + order_no[2:], end)
    assert sandbox.deliveries[-1].status == 204
    assert refund_state(runtime, "RF" + order_no[2:]) == settled
    balances = order_and_money(runtime, order_no)[1]
    if end == "SUCCESS":
        assert balances == {"clearing:wechatpay": AMOUNT - 5000, "fund:pension:110000": AMOUNT - 5000}
    else:
        assert balances == PAID  # the refund reversed: the fund keeps the contribution
    assert inbox(runtime)[-1] == (f"refund:{settled}", "applied")


def test_a_refund_declined_by_the_channel_fails_and_releases(
    client: TestClient, runtime: Runtime, adapter: WechatPayAdapter, sandbox: WechatPaySandbox
) -> None:
    order_no = new_order(runtime, adapter)
    sandbox.pay(order_no)
    sandbox.balance_short = True
    assert send_refund(runtime, client, order_no, "RF" + order_no[2:], 5000) == "failed"
    assert order_and_money(runtime, order_no) == ("paid", PAID)


def test_a_refund_whose_answer_is_lost_stays_requested(
    client: TestClient, runtime: Runtime, adapter: WechatPayAdapter, sandbox: WechatPaySandbox
) -> None:
    order_no = new_order(runtime, adapter)
    sandbox.pay(order_no)
    sandbox.fail_next(1, "timeout")
    assert send_refund(runtime, client, order_no, "RF" + order_no[2:], 5000) == "requested"
    assert order_and_money(runtime, order_no)[0] == "paid"


def test_a_refund_notification_delivered_twice_settles_once(
    client: TestClient, runtime: Runtime, adapter: WechatPayAdapter, sandbox: WechatPaySandbox
) -> None:
    order_no = new_order(runtime, adapter)
    sandbox.pay(order_no)
    refund_no = "RF" + order_no[2:]
    send_refund(runtime, client, order_no, refund_no, AMOUNT)
    sandbox.settle_refund(refund_no, "SUCCESS", delivery="twice")
    assert [d.status for d in sandbox.deliveries[-2:]] == [204, 204]
    assert refund_state(runtime, refund_no) == "succeeded"
    assert order_and_money(runtime, order_no) == ("refunded", {})  # all of it went back to the payer
    assert [row for row in inbox(runtime) if row[0].startswith("refund:")] == [("refund:succeeded", "applied")]
