"""The bank channel over HTTP against the bank sandbox: every adapter call, its declines and its faults (5xx,
timeouts, unsigned or wrongly signed answers, another amount), and the bank's callbacks through the service's
generic callback route on both backends (paid once, replayed, forged, stale, another amount held, dropped and
recovered by query, delivered out of order, refunds)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from authsvc.database import unit_of_work
from authsvc.runtime import Runtime
from payments.channels import bank
from payments.channels.bank_adapter import BankAdapter, BankConfig
from payments.channels.base import (
    ChannelDeclined,
    ChannelUnavailable,
    CloseResult,
    LineKind,
    PaymentOrderRef,
    RefundOutcome,
    RefundRequest,
    TradeStatus,
)
from payments.channels.card_adapter import CardAccountAdapter
from payments.channels.registry import Channels, install
from payments.orders import accounting, repository
from payments.sandbox.bank import BankSandbox
from payments.withholding.adapter import WithholdingAdapter
from tests.fixtures.service import free_port
from tests.integration.payments.support import AMOUNT, inbox, ledger, new_order

MERCHANT = "M100001"
NOW = 1_795_000_000  # 2026-11-18T11:06:40Z: the clock of the service and of the sandbox in these tests
EXPIRES = datetime(2026, 11, 18, 13, 0, tzinfo=UTC)
OUR_KEY = bank.SigningKey.generate("sscard-1")


@dataclass
class Bank:
    sandbox: BankSandbox
    config: BankConfig
    adapter: BankAdapter
    card: CardAccountAdapter
    withholding: WithholdingAdapter
    clock: list[float]

    def order_ref(self, order_no: str, channel: str = "bank", *, payer_ref: str | None = None) -> PaymentOrderRef:
        notify = f"http://testserver/v1/payments/callbacks/{channel}"
        return PaymentOrderRef(order_no, AMOUNT, "社会保险费 养老保险 2025", EXPIRES, notify, payer_ref)


def make_bank(sessions: object = None) -> Bank:
    clock = [float(NOW)]
    sandbox = BankSandbox(MERCHANT, bank.KeyRing.of((OUR_KEY.key_id, OUR_KEY.public_pem())), clock=lambda: clock[0])
    bank_keys = bank.KeyRing.of((sandbox.bank_key.key_id, sandbox.bank_key.public_pem()))
    config = BankConfig(MERCHANT, OUR_KEY, bank_keys, clock=lambda: clock[0])
    gateway = TestClient(sandbox.app, base_url="https://bank.test")
    return Bank(
        sandbox,
        config,
        BankAdapter(config, gateway),
        CardAccountAdapter(config, gateway),
        WithholdingAdapter(config, gateway, sessions),  # type: ignore[arg-type]
        clock,
    )


@pytest.fixture
def gateway() -> Bank:
    """The sandbox and our adapters, without the service (no database needed): callbacks go nowhere."""
    env = make_bank()
    env.sandbox.sender = lambda url, headers, body: 200
    return env


@pytest.fixture
def service(client: TestClient, runtime: Runtime) -> Bank:
    return serve_bank(client, runtime)


def serve_bank(client: TestClient, runtime: Runtime) -> Bank:
    """The sandbox calling back into the service, whose callback route has the bank's adapters installed."""
    env = make_bank(runtime.sessions)
    adapters = {"bank": env.adapter, "card": env.card, "withholding": env.withholding}
    install(client.app, Channels(adapters, clock=lambda: env.clock[0]))  # type: ignore[arg-type]

    def deliver(url: str, headers: dict[str, str], body: bytes) -> int:
        return client.post(urlsplit(url).path, content=body, headers=headers).status_code

    env.sandbox.sender = deliver
    return env


def order_state(runtime: Runtime, order_no: str) -> str:
    with unit_of_work(runtime.sessions) as db:
        order = repository.order_by_no(db, order_no)
        assert order is not None
        return order.state


# --- the adapter against the sandbox ----------------------------------------------------------------------------


def test_redirect_payment_query_and_close(gateway: Bank) -> None:
    start = gateway.adapter.create_payment(gateway.order_ref("P1"))
    assert start.method == "redirect" and start.data["url"].startswith("https://bank.example/pay/")
    unpaid = gateway.adapter.query_payment("P1")
    assert (unpaid.status, unpaid.amount_fen, unpaid.paid_at) == (TradeStatus.UNPAID, AMOUNT, None)
    balance = gateway.sandbox.accounts["payer"].balance_fen
    assert gateway.sandbox.pay("P1") == "PAID"
    assert gateway.sandbox.accounts["payer"].balance_fen == balance - AMOUNT
    paid = gateway.adapter.query_payment("P1")
    assert paid.status is TradeStatus.PAID and paid.amount_fen == AMOUNT
    assert paid.paid_at == datetime.fromtimestamp(NOW, UTC) and paid.channel_trade_no == unpaid.channel_trade_no
    assert gateway.adapter.close_payment("P1") is CloseResult.ALREADY_PAID
    assert gateway.adapter.close_payment("NEVER") is CloseResult.NOT_FOUND
    assert gateway.adapter.query_payment("NEVER").status is TradeStatus.NOT_FOUND


def test_closed_order_cannot_be_paid(gateway: Bank) -> None:
    gateway.adapter.create_payment(gateway.order_ref("P1"))
    assert gateway.adapter.close_payment("P1") is CloseResult.CLOSED
    assert gateway.adapter.close_payment("P1") is CloseResult.CLOSED  # closing again is the same answer
    assert gateway.sandbox.pay("P1") == "CLOSED"
    assert gateway.adapter.query_payment("P1").status is TradeStatus.CLOSED


def test_insufficient_funds_leave_the_payment_unpaid(gateway: Bank) -> None:
    gateway.sandbox.open_account("poor", AMOUNT - 1)
    gateway.adapter.create_payment(gateway.order_ref("P1"))
    assert gateway.sandbox.pay("P1", "poor") == "INSUFFICIENT_FUNDS"
    assert gateway.sandbox.accounts["poor"].balance_fen == AMOUNT - 1
    assert gateway.adapter.query_payment("P1").status is TradeStatus.UNPAID


def test_create_again_is_the_same_payment_and_other_terms_are_declined(gateway: Bank) -> None:
    first = gateway.adapter.create_payment(gateway.order_ref("P1"))
    assert gateway.adapter.create_payment(gateway.order_ref("P1")) == first
    other = PaymentOrderRef("P1", AMOUNT + 100, "x", EXPIRES, "http://testserver/cb")
    with pytest.raises(ChannelDeclined) as info:
        gateway.adapter.create_payment(other)
    assert info.value.code == "DUPLICATE_ORDER"


def test_refunds(gateway: Bank) -> None:
    gateway.adapter.create_payment(gateway.order_ref("P1"))
    with pytest.raises(ChannelDeclined) as unpaid:
        gateway.adapter.refund(RefundRequest("P1", "R1", 100, AMOUNT, "r", "http://testserver/cb"))
    assert unpaid.value.code == "ORDER_NOT_PAID"
    gateway.sandbox.pay("P1")
    status = gateway.adapter.refund(RefundRequest("P1", "R1", 100, AMOUNT, "r", "http://testserver/cb"))
    assert (status.outcome, status.amount_fen) == (RefundOutcome.PROCESSING, 100)
    again = gateway.adapter.refund(RefundRequest("P1", "R1", 100, AMOUNT, "r", "http://testserver/cb"))
    assert again == status  # a retried refund is the same refund
    with pytest.raises(ChannelDeclined) as exceeds:
        gateway.adapter.refund(RefundRequest("P1", "R2", AMOUNT - 99, AMOUNT, "r", "http://testserver/cb"))
    assert exceeds.value.code == "REFUND_EXCEEDS"
    with pytest.raises(ChannelDeclined) as unknown:
        gateway.adapter.query_refund("P1", "R9")
    assert unknown.value.code == "REFUND_NOT_FOUND"
    assert gateway.sandbox.settle_refunds() == ["R1"]
    assert gateway.adapter.query_refund("P1", "R1").outcome is RefundOutcome.SUCCEEDED
    gateway.adapter.refund(RefundRequest("P1", "R2", 200, AMOUNT, "r", "http://testserver/cb"))
    gateway.sandbox.settle_refunds(succeed=False)
    assert gateway.adapter.query_refund("P1", "R2").outcome is RefundOutcome.FAILED


@pytest.mark.parametrize(
    "fault",
    ["http_status", "timeout", "system_error", "unsigned", "wrong_key", "other_amount", "stale_answer"],
)
def test_unverifiable_or_failed_answers_are_unavailable(gateway: Bank, fault: str) -> None:
    faults = gateway.sandbox.faults
    if fault == "http_status":
        faults.http_status = 503
    elif fault == "stale_answer":
        gateway.sandbox.clock = lambda: NOW - 3600  # a replayed old answer: outside our past-only window
    else:
        setattr(faults, fault, True)
    with pytest.raises(ChannelUnavailable):
        gateway.adapter.create_payment(gateway.order_ref("P1"))


def test_answer_to_another_request_is_unavailable(gateway: Bank) -> None:
    """A captured signed answer replayed for our next request carries the old request's nonce."""
    gateway.adapter.create_payment(gateway.order_ref("P1"))
    captured: dict[str, object] = {}
    real_post = gateway.adapter.gateway.client.post

    def replaying(path: str, **kwargs: object) -> object:
        response = real_post(path, **kwargs)  # type: ignore[arg-type]
        if "answer" not in captured:
            captured["answer"] = response
        return captured["answer"]

    gateway.adapter.gateway.client.post = replaying  # type: ignore[method-assign]
    gateway.adapter.query_payment("P1")
    with pytest.raises(ChannelUnavailable):
        gateway.adapter.query_payment("P1")


def test_a_request_the_bank_cannot_verify_is_declined(gateway: Bank) -> None:
    stranger = BankConfig(
        MERCHANT, bank.SigningKey.generate("sscard-1"), gateway.config.bank_keys, clock=gateway.config.clock
    )
    adapter = BankAdapter(stranger, gateway.adapter.gateway.client)
    with pytest.raises(ChannelDeclined) as info:
        adapter.query_payment("P1")
    assert info.value.code == "REQUEST_REFUSED"


def test_statement_fetched_and_parsed(gateway: Bank) -> None:
    for order_no in ("P1", "P2"):
        gateway.adapter.create_payment(gateway.order_ref(order_no))
        gateway.sandbox.pay(order_no)
    gateway.adapter.refund(RefundRequest("P1", "R1", 100, AMOUNT, "r", "http://testserver/cb"))
    gateway.sandbox.settle_refunds()
    day = date(2026, 11, 18)
    with pytest.raises(ChannelDeclined) as early:
        gateway.adapter.fetch_statement(day)  # the day has not ended
    assert early.value.code == "STATEMENT_NOT_READY"
    gateway.clock[0] += 86400
    data = gateway.adapter.fetch_statement(day)
    lines = list(gateway.adapter.parse_statement(data.splitlines(keepends=True)))
    assert [(line.kind, line.order_no, line.amount_fen) for line in lines] == [
        (LineKind.PAYMENT, "P1", AMOUNT),
        (LineKind.PAYMENT, "P2", AMOUNT),
        (LineKind.REFUND, "P1", 100),
    ]
    assert gateway.adapter.render_statement(day, lines) == data


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("extra", [("P1", AMOUNT), ("NOSUCHORDER", 100)]),
        ("missing", []),
        ("wrong_amount", [("P1", AMOUNT + 1)]),
    ],
)
def test_statement_faults_are_well_formed_but_wrong(gateway: Bank, fault: str, expected: list) -> None:
    gateway.adapter.create_payment(gateway.order_ref("P1"))
    gateway.sandbox.pay("P1")
    gateway.clock[0] += 86400
    gateway.sandbox.faults.statement = fault
    data = gateway.adapter.fetch_statement(date(2026, 11, 18))
    lines = list(gateway.adapter.parse_statement(data.splitlines(keepends=True)))
    assert [(line.order_no, line.amount_fen) for line in lines] == expected


# --- callbacks into the service, both backends ------------------------------------------------------------------------


def test_paid_by_callback_once(service: Bank, client: TestClient, runtime: Runtime) -> None:
    order_no = new_order(runtime, "bank")
    service.adapter.create_payment(service.order_ref(order_no))
    service.sandbox.faults.callback = "twice"  # the same signed delivery twice: the second is a replayed nonce
    service.sandbox.pay(order_no)
    assert [status for _, status in service.sandbox.sent] == [200, 400]
    assert order_state(runtime, order_no) == "paid"
    assert ledger(runtime) == {"clearing:bank": AMOUNT, "fund:pension:110000": AMOUNT}
    assert inbox(runtime) == [("PAID", "applied")]


def test_a_redelivery_signed_afresh_is_a_duplicate(service: Bank, runtime: Runtime, client: TestClient) -> None:
    order_no = new_order(runtime, "bank")
    service.adapter.create_payment(service.order_ref(order_no))
    service.sandbox.pay(order_no)
    payment = service.sandbox.payments[order_no]
    headers, body = service.sandbox.signed_callback(service.sandbox._payment_body(payment))
    answer = client.post("/v1/payments/callbacks/bank", content=body, headers=headers)
    assert (answer.status_code, answer.json()) == (200, {"code": "OK"})
    assert ledger(runtime) == {"clearing:bank": AMOUNT, "fund:pension:110000": AMOUNT}
    assert len(inbox(runtime)) == 1


@pytest.mark.parametrize(("fault", "status", "reason"), [("bad_signature", 401, "signature"), ("stale", 400, "stale")])
def test_forged_or_stale_callbacks_change_nothing(
    service: Bank, runtime: Runtime, client: TestClient, fault: str, status: int, reason: str
) -> None:
    order_no = new_order(runtime, "bank")
    service.adapter.create_payment(service.order_ref(order_no))
    service.sandbox.faults.hold_callbacks = True
    service.sandbox.faults.callback = fault
    service.sandbox.pay(order_no)
    ((url, headers, body),) = service.sandbox.held
    answer = client.post(urlsplit(url).path, content=body, headers=headers)
    assert answer.status_code == status and answer.json() == {"code": "REFUSED", "reason": reason}
    assert order_state(runtime, order_no) == "pending" and ledger(runtime) == {} and inbox(runtime) == []


@pytest.mark.parametrize("body", [b"", b"not json", b'{"type":"payment"}'])
def test_unsigned_junk_is_refused(service: Bank, client: TestClient, runtime: Runtime, body: bytes) -> None:
    answer = client.post("/v1/payments/callbacks/bank", content=body)
    assert answer.status_code == 400 and answer.json() == {"code": "REFUSED", "reason": "malformed"}
    assert inbox(runtime) == []


def test_another_amount_is_held_not_paid(service: Bank, runtime: Runtime) -> None:
    order_no = new_order(runtime, "bank")
    service.adapter.create_payment(service.order_ref(order_no))
    service.sandbox.faults.callback = "other_amount"
    service.sandbox.pay(order_no)
    assert service.sandbox.sent[-1][1] == 200  # recorded, so acknowledged: review reads the inbox
    assert order_state(runtime, order_no) == "pending"
    assert inbox(runtime) == [("PAID", "held_amount_mismatch")]
    assert ledger(runtime) == {"clearing:bank": AMOUNT + 1, "suspense:bank": AMOUNT + 1}


def test_a_dropped_callback_is_found_by_query(service: Bank, runtime: Runtime) -> None:
    order_no = new_order(runtime, "bank")
    service.adapter.create_payment(service.order_ref(order_no))
    service.sandbox.faults.callback = "drop"
    service.sandbox.pay(order_no)
    assert service.sandbox.sent == [] and order_state(runtime, order_no) == "pending"
    trade = service.adapter.query_payment(order_no)
    assert (trade.status, trade.amount_fen) == (TradeStatus.PAID, AMOUNT)


def test_callbacks_out_of_order(service: Bank, runtime: Runtime) -> None:
    """A refund's notice held back and a payment's released after it: each applies to its own state."""
    first, second = new_order(runtime, "bank"), new_order(runtime, "bank")
    for order_no in (first, second):
        service.adapter.create_payment(service.order_ref(order_no))
    service.sandbox.faults.hold_callbacks = True
    service.sandbox.pay(first)
    service.sandbox.fail(second)
    assert service.sandbox.release_callbacks(reverse=True) == 2
    assert [status for _, status in service.sandbox.sent] == [200, 200]
    assert (order_state(runtime, first), order_state(runtime, second)) == ("paid", "failed")
    assert inbox(runtime) == [("FAILED", "applied"), ("PAID", "applied")]


def test_refund_notice_settles_the_refund(service: Bank, runtime: Runtime) -> None:
    order_no = new_order(runtime, "bank")
    service.adapter.create_payment(service.order_ref(order_no))
    service.sandbox.pay(order_no)
    with unit_of_work(runtime.sessions) as db:
        accounting.request_refund(db, order_no, "R1", 500)
    service.adapter.refund(
        RefundRequest(order_no, "R1", 500, AMOUNT, "r", "http://testserver/v1/payments/callbacks/bank")
    )
    assert service.sandbox.settle_refunds() == ["R1"]
    assert service.sandbox.sent[-1][1] == 200
    assert order_state(runtime, order_no) == "partially_refunded"
    assert ledger(runtime) == {"clearing:bank": AMOUNT - 500, "fund:pension:110000": AMOUNT - 500}
    assert inbox(runtime)[-1] == ("refund:succeeded", "applied")


def test_acknowledgement_bodies_are_exact(service: Bank, client: TestClient) -> None:
    assert json.loads(service.adapter.acknowledge().body) == {"code": "OK"}
    failed = service.adapter.acknowledge(failed=True)
    assert (failed.status, failed.body) == (500, b'{"code":"RETRY"}')


# --- over a real socket ----------------------------------------------------------------------------------------------


@pytest.fixture
def live_bank() -> Iterator[tuple[Bank, str]]:
    """The sandbox served by uvicorn on a free port, as `python -m payments.sandbox.bank` runs it."""
    env = make_bank()
    received: list[bytes] = []
    env.sandbox.sender = lambda url, headers, body: received.append(body) or 200
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(env.sandbox.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "sandbox did not start"
        time.sleep(0.02)
    yield env, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_over_a_real_socket(live_bank: tuple[Bank, str]) -> None:
    env, url = live_bank
    with httpx.Client(base_url=url, timeout=5) as client:
        adapter = BankAdapter(env.config, client)
        assert adapter.create_payment(env.order_ref("P1")).method == "redirect"
        env.sandbox.pay("P1")
        assert adapter.query_payment("P1").status is TradeStatus.PAID
        env.sandbox.faults.timeout = True  # served for real, the simulated timeout is a 500
        with pytest.raises(ChannelUnavailable):
            adapter.query_payment("P1")
    with httpx.Client(base_url="http://127.0.0.1:9", timeout=1) as nowhere, pytest.raises(ChannelUnavailable):
        BankAdapter(env.config, nowhere).query_payment("P1")
