"""Alipay end to end, on both backends: the service's Alipay adapter talks to the Alipay sandbox over HTTP, and the
sandbox's signed notifications (retried until the answer is exactly `success`) are posted into the real application
(the generic callback route, the inbox, the order accounting, the refunds, the ledger). Whatever the faults, an
order is paid once and the ledger balances."""

from __future__ import annotations

import datetime
import io
from collections.abc import Mapping
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from authsvc.database import unit_of_work
from authsvc.runtime import Runtime
from payments.channels import registry
from payments.channels.alipay import CHINA_TIME
from payments.channels.alipay_adapter import AlipayAdapter, AlipayConfig
from payments.channels.base import LineKind, RefundOutcome, TradeStatus
from payments.ledger.service import balances
from payments.orders import accounting
from payments.refunds import service as refunds
from payments.refunds.service import Applied
from payments.sandbox.alipay import AlipaySandbox, GatewayFault, NotifyFault
from tests.integration.payments import support
from tests.integration.payments.support import AMOUNT, inbox, order_and_money, send_refund

NOW = 1_795_000_000
APP_ID = "2021000000000001"
PAID = {"clearing:alipay": AMOUNT, "fund:pension:110000": AMOUNT}
NOTIFY_URL = "http://testserver/v1/payments/callbacks/alipay"


@pytest.fixture(scope="module")
def app_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def alipay_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class IntoTheService:
    """The sandbox's sender: posts each notification into the application; `down` attempts answer 503 first."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.down = 0

    def __call__(self, url: str, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
        if self.down:
            self.down -= 1
            return 503, b""
        response = self.client.post(urlsplit(url).path, content=body, headers=dict(headers))
        return response.status_code, response.content


@pytest.fixture
def sender(client: TestClient) -> IntoTheService:
    return IntoTheService(client)


@pytest.fixture
def sandbox(app_key: rsa.RSAPrivateKey, alipay_key: rsa.RSAPrivateKey, sender: IntoTheService) -> AlipaySandbox:
    return AlipaySandbox(
        app_id=APP_ID,
        app_public_key=app_key.public_key(),
        alipay_private_key=alipay_key,
        sender=sender,
        clock=lambda: NOW,
    )


@pytest.fixture
def adapter(client: TestClient, sandbox: AlipaySandbox, app_key: rsa.RSAPrivateKey) -> AlipayAdapter:
    adapter = AlipayAdapter(
        AlipayConfig(app_id=APP_ID, public_key=sandbox.public_key),
        app_private_key=app_key,
        gateway_url="http://testserver/gateway.do",
        notify_url=NOTIFY_URL,
        http=TestClient(sandbox.app),
        clock=lambda: NOW,
    )
    registry.install(client.app, registry.Channels({"alipay": adapter}, clock=lambda: NOW))  # type: ignore[arg-type, dict-item]
    return adapter


def new_order(runtime: Runtime, adapter: AlipayAdapter) -> str:
    return support.started_order(runtime, adapter, now=NOW, notify_url=NOTIFY_URL)


def test_paid_once_through_the_sandbox(runtime: Runtime, adapter: AlipayAdapter, sandbox: AlipaySandbox) -> None:
    order_no = new_order(runtime, adapter)
    (delivery,) = sandbox.pay(order_no)
    assert delivery.attempts == [(200, b"success")]
    assert order_and_money(runtime, order_no) == ("paid", PAID)
    assert inbox(runtime) == [("TRADE_SUCCESS", "applied")]
    assert adapter.query_payment(order_no).status is TradeStatus.PAID


def test_a_notification_delivered_twice_pays_once(
    runtime: Runtime, adapter: AlipayAdapter, sandbox: AlipaySandbox
) -> None:
    order_no = new_order(runtime, adapter)
    deliveries = sandbox.pay(order_no, NotifyFault.TWICE)
    assert [d.attempts for d in deliveries] == [[(200, b"success")]] * 2  # the repeat is acknowledged too
    assert order_and_money(runtime, order_no) == ("paid", PAID)
    assert inbox(runtime) == [("TRADE_SUCCESS", "applied")]  # one row: the same notify_id


def test_trade_finished_later_is_a_duplicate(runtime: Runtime, adapter: AlipayAdapter, sandbox: AlipaySandbox) -> None:
    order_no = new_order(runtime, adapter)
    sandbox.pay(order_no)
    (delivery,) = sandbox.finish(order_no)
    assert delivery.acknowledged
    assert order_and_money(runtime, order_no) == ("paid", PAID)
    assert inbox(runtime) == [("TRADE_SUCCESS", "applied"), ("TRADE_FINISHED", "duplicate")]


def test_retried_until_the_service_answers(
    runtime: Runtime, adapter: AlipayAdapter, sandbox: AlipaySandbox, sender: IntoTheService
) -> None:
    order_no = new_order(runtime, adapter)
    sender.down = 3
    (delivery,) = sandbox.pay(order_no)
    assert [status for status, _ in delivery.attempts] == [503, 503, 503, 200] and delivery.acknowledged
    assert order_and_money(runtime, order_no) == ("paid", PAID)
    assert inbox(runtime) == [("TRADE_SUCCESS", "applied")]


@pytest.mark.parametrize("fault", [NotifyFault.WRONG_SIGNATURE, NotifyFault.STALE])
def test_refused_notifications_change_nothing_and_the_query_knows(
    runtime: Runtime, adapter: AlipayAdapter, sandbox: AlipaySandbox, fault: NotifyFault
) -> None:
    order_no = new_order(runtime, adapter)
    (delivery,) = sandbox.pay(order_no, fault)
    assert delivery.attempts == [(200, b"fail")] * sandbox.max_attempts  # Alipay gives up after its last retry
    assert order_and_money(runtime, order_no) == ("pending", {})
    assert inbox(runtime) == []
    assert adapter.query_payment(order_no).status is TradeStatus.PAID  # what recovery acts on


def test_never_notified_the_query_knows(runtime: Runtime, adapter: AlipayAdapter, sandbox: AlipaySandbox) -> None:
    order_no = new_order(runtime, adapter)
    assert sandbox.pay(order_no, NotifyFault.NEVER) == []
    assert order_and_money(runtime, order_no) == ("pending", {})
    trade = adapter.query_payment(order_no)
    assert (trade.status, trade.amount_fen) == (TradeStatus.PAID, AMOUNT)


def test_another_amount_is_held(runtime: Runtime, adapter: AlipayAdapter, sandbox: AlipaySandbox) -> None:
    order_no = new_order(runtime, adapter)
    (delivery,) = sandbox.pay(order_no, NotifyFault.OTHER_AMOUNT, amount_fen=AMOUNT - 1)
    assert delivery.acknowledged
    assert order_and_money(runtime, order_no) == (
        "pending",
        {"clearing:alipay": AMOUNT - 1, "suspense:alipay": AMOUNT - 1},
    )
    assert inbox(runtime) == [("TRADE_SUCCESS", "held_amount_mismatch")]


def test_trade_closed_after_success_is_a_conflict(
    runtime: Runtime, adapter: AlipayAdapter, sandbox: AlipaySandbox
) -> None:
    order_no = new_order(runtime, adapter)
    sandbox.pay(order_no, NotifyFault.CLOSED_AFTER)
    assert order_and_money(runtime, order_no) == ("paid", PAID)
    assert inbox(runtime) == [("TRADE_SUCCESS", "applied"), ("TRADE_CLOSED", "conflict")]


def test_closed_by_alipay_unpaid_closes_the_order(
    runtime: Runtime, adapter: AlipayAdapter, sandbox: AlipaySandbox
) -> None:
    order_no = new_order(runtime, adapter)
    sandbox.scan(order_no)
    (delivery,) = sandbox.close(order_no)
    assert delivery.acknowledged
    assert order_and_money(runtime, order_no) == ("closed", {})
    assert adapter.close_payment(order_no).value == "closed"


# --- refunds: sent through the adapter, settled by the answer and the notification ------------------------------


def test_refunds_through_the_sandbox(
    client: TestClient, runtime: Runtime, adapter: AlipayAdapter, sandbox: AlipaySandbox
) -> None:
    order_no = new_order(runtime, adapter)
    sandbox.pay(order_no)
    assert send_refund(runtime, client, order_no, "RA" + order_no[2:], 5000) == "succeeded"
    assert order_and_money(runtime, order_no)[1] == {
        "clearing:alipay": AMOUNT - 5000,
        "fund:pension:110000": AMOUNT - 5000,
    }
    # Alipay's refund notice (sent before the synchronous answer arrived) settled it; the answer was a duplicate.
    assert inbox(runtime)[-1] == ("refund:succeeded", "applied")
    assert sandbox.deliveries[-1].acknowledged

    assert send_refund(runtime, client, order_no, "RB" + order_no[2:], AMOUNT - 5000) == "succeeded"
    assert order_and_money(runtime, order_no) == ("refunded", {})
    # The second notice says refund_fee 120.00, the trade's total refunded so far (not this refund's 70.00): it
    # agrees with ours (50.00 refunded before plus 70.00) and settles the refund.
    assert inbox(runtime)[-1] == ("refund:succeeded", "applied")
    assert sandbox.trades[order_no].status == "TRADE_CLOSED"
    assert adapter.query_payment(order_no).status is TradeStatus.PAID  # paid, then refunded


def test_a_refund_declined_by_alipay_fails_and_releases(
    client: TestClient, runtime: Runtime, adapter: AlipayAdapter, sandbox: AlipaySandbox
) -> None:
    order_no = new_order(runtime, adapter)
    sandbox.pay(order_no)
    sandbox.finish(order_no)  # past the refund period: ACQ.TRADE_HAS_FINISHED
    assert send_refund(runtime, client, order_no, "RA" + order_no[2:], 5000) == "failed"
    assert order_and_money(runtime, order_no) == ("paid", PAID)


def test_a_refund_whose_answer_is_lost_is_settled_by_the_notice(
    client: TestClient, runtime: Runtime, adapter: AlipayAdapter, sandbox: AlipaySandbox
) -> None:
    order_no = new_order(runtime, adapter)
    sandbox.pay(order_no)
    sandbox.fail_next(1, GatewayFault.LOST_RESPONSE)
    assert send_refund(runtime, client, order_no, "RA" + order_no[2:], 5000) == "succeeded"
    assert sandbox.trades[order_no].refunded_fen == 5000


def test_a_second_refund_whose_answer_is_lost_is_settled_when_sent_again(
    client: TestClient, runtime: Runtime, adapter: AlipayAdapter, sandbox: AlipaySandbox
) -> None:
    order_no = new_order(runtime, adapter)
    sandbox.pay(order_no)
    assert send_refund(runtime, client, order_no, "RA" + order_no[2:], 2000) == "succeeded"
    sandbox.fail_next(1, GatewayFault.LOST_RESPONSE)
    # No answer came back, but the notice's refund_fee (50.00, the total so far) agrees with ours: settled by it.
    assert send_refund(runtime, client, order_no, "RB" + order_no[2:], 3000) == "succeeded"
    assert inbox(runtime)[-1] == ("refund:succeeded", "applied")
    # Sending it again (what the recovery sweep would do) changes nothing: Alipay deduplicates the request number.
    refunds.send(runtime, registry.current(client.app), "RB" + order_no[2:])  # type: ignore[arg-type]
    assert order_and_money(runtime, order_no)[1] == {
        "clearing:alipay": AMOUNT - 5000,
        "fund:pension:110000": AMOUNT - 5000,
    }
    assert sandbox.trades[order_no].refunded_fen == 5000


def test_a_refund_notice_whose_total_disagrees_is_held(
    client: TestClient, runtime: Runtime, adapter: AlipayAdapter, sandbox: AlipaySandbox
) -> None:
    """refund_fee is the trade's total: one above everything we reserved, or below what was refunded before plus
    this refund, does not describe our refunds and is held for review."""
    order_no = new_order(runtime, adapter)
    sandbox.pay(order_no)
    assert send_refund(runtime, client, order_no, "RA" + order_no[2:], 2000) == "succeeded"
    with unit_of_work(runtime.sessions) as db:
        accounting.request_refund(db, order_no, "RB" + order_no[2:], 3000)
    for total in (4999, 5001):
        result = _notice(runtime, order_no, "RB" + order_no[2:], total)
        assert result.applied is Applied.HELD_AMOUNT_MISMATCH, total
    assert _notice(runtime, order_no, "RB" + order_no[2:], 5000).applied is Applied.APPLIED


def test_a_refund_that_never_reached_alipay_stays_requested(
    client: TestClient, runtime: Runtime, adapter: AlipayAdapter, sandbox: AlipaySandbox
) -> None:
    order_no = new_order(runtime, adapter)
    sandbox.pay(order_no)
    sandbox.fail_next(1, GatewayFault.TIMEOUT)
    assert send_refund(runtime, client, order_no, "RA" + order_no[2:], 5000) == "requested"
    assert sandbox.trades[order_no].refunded_fen == 0
    refunds.send(runtime, registry.current(client.app), "RA" + order_no[2:])  # type: ignore[arg-type]
    assert order_and_money(runtime, order_no)[1] == {
        "clearing:alipay": AMOUNT - 5000,
        "fund:pension:110000": AMOUNT - 5000,
    }


def test_a_refund_made_at_alipays_console_is_not_ours(
    runtime: Runtime, adapter: AlipayAdapter, sandbox: AlipaySandbox
) -> None:
    order_no = new_order(runtime, adapter)
    sandbox.pay(order_no)
    assert sandbox.refund(order_no, "CONSOLE-1", 3000).acknowledged  # recorded for review, nothing applied
    assert order_and_money(runtime, order_no) == ("paid", PAID)
    assert inbox(runtime)[-1][1] == "unknown_refund"


def test_the_days_bill_lists_what_the_ledger_holds(
    client: TestClient, runtime: Runtime, adapter: AlipayAdapter, sandbox: AlipaySandbox
) -> None:
    first, second = new_order(runtime, adapter), new_order(runtime, adapter)
    sandbox.pay(first)
    sandbox.pay(second)
    send_refund(runtime, client, first, "RA" + first[2:], 5000)
    sandbox.clock = lambda: NOW + 86400  # type: ignore[method-assign]
    adapter._clock = lambda: NOW + 86400  # the bill of a day exists from the next day on
    day = datetime.datetime.fromtimestamp(NOW, CHINA_TIME).date()
    lines = list(adapter.parse_statement(io.BytesIO(adapter.fetch_statement(day))))
    paid = sum(x.amount_fen for x in lines if x.kind is LineKind.PAYMENT)
    refunded = sum(x.amount_fen for x in lines if x.kind is LineKind.REFUND)
    with unit_of_work(runtime.sessions) as db:
        assert balances(db)["clearing:alipay"] == paid - refunded == 2 * AMOUNT - 5000
    assert {x.order_no for x in lines} == {first, second}


def _notice(runtime: Runtime, order_no: str, refund_no: str, total_fen: int) -> refunds.Result:
    """What the inbox does with an Alipay refund notice whose refund_fee is `total_fen` (the adapter's RefundEvent)."""
    with unit_of_work(runtime.sessions) as db:
        return refunds.apply_outcome(
            db,
            refund_no=refund_no,
            channel="alipay",
            order_no=order_no,
            outcome=RefundOutcome.SUCCEEDED,
            amount_fen=total_fen,
            channel_refund_no=None,
            amount_is_total=True,
        )
