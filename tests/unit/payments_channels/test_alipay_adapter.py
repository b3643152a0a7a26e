"""The Alipay adapter against the Alipay sandbox over HTTP (the sandbox's FastAPI app through a TestClient): every
gateway call, its refusals and the sandbox's faults; the signed-response check on hand-built answers; and
alipay-sdk-python talking to the sandbox (the SDK signs requests our sandbox verifies, and verifies its answers)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import zipfile
from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from payments.channels import alipay as ali
from payments.channels.alipay_adapter import AlipayAdapter, AlipayConfig, _detail_csv
from payments.channels.base import (
    ChannelAdapter,
    ChannelDeclined,
    ChannelEvent,
    ChannelUnavailable,
    CloseResult,
    Kind,
    LineKind,
    PaymentOrderRef,
    RefundEvent,
    RefundOutcome,
    RefundRequest,
    TradeStatus,
)
from payments.sandbox.alipay import AlipaySandbox, BillFault, GatewayFault, NotifyFault

APP_ID = "2021000000000001"
NOW = 1_795_000_000.0  # 2026-11-18 19:06:40 China time
TODAY = date(2026, 11, 18)
NOTIFY_URL = "https://pay.example.gov.cn/v1/payments/callbacks/alipay"


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Receiver:
    """Our side of the notifications: answers `success` unless told otherwise, keeps every body."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.answers: list[tuple[int, bytes]] = []

    def __call__(self, url: str, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
        self.bodies.append(body)
        return self.answers.pop(0) if self.answers else (200, b"success")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
def sandbox(
    merchant_key: rsa.RSAPrivateKey, alipay_key: rsa.RSAPrivateKey, clock: Clock, receiver: Receiver
) -> AlipaySandbox:
    return AlipaySandbox(
        app_id=APP_ID,
        app_public_key=merchant_key.public_key(),
        alipay_private_key=alipay_key,
        sender=receiver,
        clock=clock,
    )


def make_adapter(
    sandbox: AlipaySandbox,
    clock: Clock,
    key: rsa.RSAPrivateKey | None,
    *,
    public_key: rsa.RSAPublicKey | None = None,
    app_id: str = APP_ID,
) -> AlipayAdapter:
    return AlipayAdapter(
        AlipayConfig(app_id=app_id, public_key=public_key or sandbox.public_key),
        app_private_key=key,
        gateway_url="http://testserver/gateway.do",
        notify_url=NOTIFY_URL,
        http=TestClient(sandbox.app),
        clock=clock,
    )


@pytest.fixture
def adapter(sandbox: AlipaySandbox, clock: Clock, merchant_key: rsa.RSAPrivateKey) -> AlipayAdapter:
    return make_adapter(sandbox, clock, merchant_key)


def order(no: str = "P1", amount: int = 12000, minutes: int = 15) -> PaymentOrderRef:
    expires = datetime.fromtimestamp(NOW + minutes * 60, ali.CHINA_TIME)
    return PaymentOrderRef(no, amount, "城乡居民养老保险 2026", expires, NOTIFY_URL)


def refund(no: str = "R1", amount: int = 2000, order_no: str = "P1") -> RefundRequest:
    return RefundRequest(order_no, no, amount, 12000, "退保", NOTIFY_URL)


def paid(adapter: AlipayAdapter, sandbox: AlipaySandbox, no: str = "P1") -> None:
    adapter.create_payment(order(no))
    sandbox.pay(no)


# --- create -----------------------------------------------------------------------------------------------------


def test_adapter_is_a_channel_adapter(adapter: AlipayAdapter) -> None:
    assert isinstance(adapter, ChannelAdapter)


def test_create_payment_precreates_a_qr_code(adapter: AlipayAdapter, sandbox: AlipaySandbox) -> None:
    start = adapter.create_payment(order())
    assert (start.order_no, start.method) == ("P1", "qr_code")
    assert start.data["code_url"].startswith("https://qr.alipay.com/")
    trade = sandbox.trades["P1"]
    assert (trade.total_fen, trade.subject, trade.notify_url) == (12000, "城乡居民养老保险 2026", NOTIFY_URL)
    assert trade.expires_at == NOW + 900
    params = sandbox.requests[-1]
    assert {k: params[k] for k in ("app_id", "method", "format", "charset", "sign_type", "version")} == {
        "app_id": APP_ID,
        "method": "alipay.trade.precreate",
        "format": "JSON",
        "charset": "utf-8",
        "sign_type": "RSA2",
        "version": "1.0",
    }
    assert params["timestamp"] == "2026-11-18 19:06:40" and params["notify_url"] == NOTIFY_URL
    assert json.loads(params["biz_content"])["total_amount"] == "120.00"


def test_create_payment_again_gives_the_same_code_but_not_for_another_amount(adapter: AlipayAdapter) -> None:
    assert adapter.create_payment(order()) == adapter.create_payment(order())
    with pytest.raises(ChannelDeclined) as e:
        adapter.create_payment(order(amount=12001))
    assert e.value.code == "ACQ.CONTEXT_INCONSISTENT"


def test_create_payment_of_a_paid_order_is_declined(adapter: AlipayAdapter, sandbox: AlipaySandbox) -> None:
    paid(adapter, sandbox)
    with pytest.raises(ChannelDeclined) as e:
        adapter.create_payment(order())
    assert e.value.code == "ACQ.TRADE_HAS_SUCCESS"


# --- query ------------------------------------------------------------------------------------------------------


def test_query_of_an_order_alipay_never_saw_or_not_yet_scanned_is_not_found(
    adapter: AlipayAdapter, sandbox: AlipaySandbox
) -> None:
    assert adapter.query_payment("P9").status is TradeStatus.NOT_FOUND
    adapter.create_payment(order())
    assert adapter.query_payment("P1").status is TradeStatus.NOT_FOUND  # Alipay's precreate: not until scanned
    sandbox.scan("P1")
    trade = adapter.query_payment("P1")
    assert (trade.status, trade.amount_fen, trade.raw_state, trade.paid_at) == (
        TradeStatus.UNPAID,
        12000,
        "WAIT_BUYER_PAY",
        None,
    )


def test_query_of_a_paid_order(adapter: AlipayAdapter, sandbox: AlipaySandbox) -> None:
    paid(adapter, sandbox)
    trade = adapter.query_payment("P1")
    assert (trade.status, trade.amount_fen, trade.channel_trade_no) == (
        TradeStatus.PAID,
        12000,
        sandbox.trades["P1"].trade_no,
    )
    assert trade.paid_at is not None and trade.paid_at.timestamp() == NOW
    sandbox.finish("P1")
    assert adapter.query_payment("P1").status is TradeStatus.PAID


def test_query_tells_closed_unpaid_from_paid_then_fully_refunded(
    adapter: AlipayAdapter, sandbox: AlipaySandbox
) -> None:
    adapter.create_payment(order("P1"))
    sandbox.scan("P1")
    sandbox.close("P1")
    paid(adapter, sandbox, "P2")
    adapter.refund(RefundRequest("P2", "R1", 12000, 12000, "退保", NOTIFY_URL))
    closed, refunded = adapter.query_payment("P1"), adapter.query_payment("P2")
    assert (closed.status, closed.raw_state) == (TradeStatus.CLOSED, "TRADE_CLOSED")
    assert (refunded.status, refunded.raw_state) == (TradeStatus.PAID, "TRADE_CLOSED")


# --- close ------------------------------------------------------------------------------------------------------


def test_close_an_unpaid_trade(adapter: AlipayAdapter, sandbox: AlipaySandbox) -> None:
    adapter.create_payment(order())
    sandbox.scan("P1")
    assert adapter.close_payment("P1") is CloseResult.CLOSED
    assert sandbox.trades["P1"].status == "TRADE_CLOSED"
    assert adapter.close_payment("P1") is CloseResult.CLOSED  # again: Alipay refuses, the query says closed
    with pytest.raises(ValueError):
        sandbox.pay("P1")


def test_close_of_a_paid_trade_is_already_paid(adapter: AlipayAdapter, sandbox: AlipaySandbox) -> None:
    paid(adapter, sandbox)
    assert adapter.close_payment("P1") is CloseResult.ALREADY_PAID
    sandbox.finish("P1")
    assert adapter.close_payment("P1") is CloseResult.ALREADY_PAID
    assert sandbox.trades["P1"].status == "TRADE_FINISHED"


def test_close_of_an_unknown_or_unscanned_trade_is_not_found(adapter: AlipayAdapter, sandbox: AlipaySandbox) -> None:
    assert adapter.close_payment("P9") is CloseResult.NOT_FOUND
    adapter.create_payment(order())
    assert adapter.close_payment("P1") is CloseResult.NOT_FOUND
    # Alipay's precreate code stays payable until its time_expire even so (docs/payments.md, Alipay): the adapter
    # always sends time_expire, and after it the payer can no longer scan.
    sandbox.scan("P1")
    sandbox.clock = Clock(NOW + 901)  # type: ignore[assignment]
    adapter.create_payment(order("P2"))
    with pytest.raises(ValueError):
        sandbox.scan("P2")


# --- refunds ----------------------------------------------------------------------------------------------------


def test_refund_is_synchronous(adapter: AlipayAdapter, sandbox: AlipaySandbox) -> None:
    paid(adapter, sandbox)
    status = adapter.refund(refund())
    assert (status.refund_no, status.outcome, status.amount_fen, status.raw_state) == (
        "R1",
        RefundOutcome.SUCCEEDED,
        2000,
        "fund_change=Y",
    )
    assert sandbox.trades["P1"].refunded_fen == 2000
    assert json.loads(sandbox.requests[-1]["biz_content"])["out_request_no"] == "R1"


def test_refund_repeated_refunds_once(adapter: AlipayAdapter, sandbox: AlipaySandbox) -> None:
    paid(adapter, sandbox)
    adapter.refund(refund())
    again = adapter.refund(refund())  # fund_change N: the adapter asks the refund query what happened
    assert (again.outcome, again.amount_fen, again.raw_state) == (RefundOutcome.SUCCEEDED, 2000, "REFUND_SUCCESS")
    assert sandbox.trades["P1"].refunded_fen == 2000
    assert sandbox.calls[-2:] == ["alipay.trade.refund", "alipay.trade.fastpay.refund.query"]


def test_refund_whose_answer_was_lost_is_retried_safely(adapter: AlipayAdapter, sandbox: AlipaySandbox) -> None:
    paid(adapter, sandbox)
    sandbox.fail_next(1, GatewayFault.LOST_RESPONSE)
    with pytest.raises(ChannelUnavailable):
        adapter.refund(refund())
    assert adapter.query_refund("P1", "R1").outcome is RefundOutcome.SUCCEEDED
    assert adapter.refund(refund()).outcome is RefundOutcome.SUCCEEDED
    assert sandbox.trades["P1"].refunded_fen == 2000


def test_partial_refunds_up_to_the_total(adapter: AlipayAdapter, sandbox: AlipaySandbox) -> None:
    paid(adapter, sandbox)
    adapter.refund(refund("R1", 2000))
    with pytest.raises(ChannelDeclined) as e:
        adapter.refund(refund("R2", 10001))
    assert e.value.code == "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL"
    assert adapter.refund(refund("R2", 10000)).outcome is RefundOutcome.SUCCEEDED
    assert sandbox.trades["P1"].status == "TRADE_CLOSED"


@pytest.mark.parametrize(
    ("setup", "code"),
    [
        ("none", "ACQ.TRADE_NOT_EXIST"),
        ("unpaid", "ACQ.TRADE_STATUS_ERROR"),
        ("finished", "ACQ.TRADE_HAS_FINISHED"),
        ("other_amount", "ACQ.DISCORDANT_REPEAT_REQUEST"),
    ],
)
def test_refund_refusals_are_declined(adapter: AlipayAdapter, sandbox: AlipaySandbox, setup: str, code: str) -> None:
    if setup == "unpaid":
        adapter.create_payment(order())
        sandbox.scan("P1")
    elif setup in ("finished", "other_amount"):
        paid(adapter, sandbox)
        if setup == "finished":
            sandbox.finish("P1")
        else:
            adapter.refund(refund("R1", 2000))
    with pytest.raises(ChannelDeclined) as e:
        adapter.refund(refund("R1", 3000))
    assert e.value.code == code and e.value.message
    assert sandbox.trades.get("P1") is None or sandbox.trades["P1"].refunded_fen in (0, 2000)


def test_query_refund(adapter: AlipayAdapter, sandbox: AlipaySandbox) -> None:
    paid(adapter, sandbox)
    unknown = adapter.query_refund("P1", "R1")
    assert (unknown.outcome, unknown.raw_state) == (RefundOutcome.PROCESSING, "NOT_FOUND")
    adapter.refund(refund())
    known = adapter.query_refund("P1", "R1")
    assert (known.outcome, known.amount_fen) == (RefundOutcome.SUCCEEDED, 2000)
    with pytest.raises(ChannelDeclined):
        adapter.query_refund("P9", "R1")


# --- statements -------------------------------------------------------------------------------------------------


def _day_with_movements(adapter: AlipayAdapter, sandbox: AlipaySandbox, clock: Clock) -> None:
    paid(adapter, sandbox, "P1")
    paid(adapter, sandbox, "P2")
    adapter.refund(refund("R1", 2000, "P1"))
    clock.now = NOW + 86400  # the bill of a day exists from the next day on


def test_fetch_statement_downloads_and_unzips_the_days_bill(
    adapter: AlipayAdapter, sandbox: AlipaySandbox, clock: Clock
) -> None:
    _day_with_movements(adapter, sandbox, clock)
    data = adapter.fetch_statement(TODAY)
    assert data.startswith("#支付宝业务明细查询".encode("gbk"))
    lines = list(adapter.parse_statement(io.BytesIO(data)))
    assert sorted((line.kind, line.order_no, line.amount_fen, line.refund_no or "") for line in lines) == [
        (LineKind.PAYMENT, "P1", 12000, ""),
        (LineKind.PAYMENT, "P2", 12000, ""),
        (LineKind.REFUND, "P1", 2000, "R1"),
    ]
    assert {line.occurred_at.timestamp() for line in lines} == {NOW}
    assert json.loads(sandbox.requests[-1]["biz_content"]) == {"bill_type": "trade", "bill_date": "2026-11-18"}
    assert list(adapter.parse_statement(io.BytesIO(adapter.fetch_statement(TODAY - timedelta(days=1))))) == []


def test_todays_bill_does_not_exist_yet(adapter: AlipayAdapter) -> None:
    with pytest.raises(ChannelDeclined) as e:
        adapter.fetch_statement(TODAY)
    assert e.value.code == "isp.bill_not_exist"


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (BillFault.EXTRA_LINE, {("P1", 12000), ("P2", 12000), ("X-NOT-OURS", 100), ("P1", -2000)}),
        (BillFault.MISSING_LINE, {("P2", 12000), ("P1", -2000)}),
        (BillFault.WRONG_AMOUNT, {("P1", 12001), ("P2", 12000), ("P1", -2000)}),
    ],
)
def test_bill_faults_are_consistent_files_that_disagree_with_the_truth(
    adapter: AlipayAdapter, sandbox: AlipaySandbox, clock: Clock, fault: BillFault, expected: set
) -> None:
    _day_with_movements(adapter, sandbox, clock)
    sandbox.set_bill_fault(fault)
    lines = adapter.parse_statement(io.BytesIO(adapter.fetch_statement(TODAY)))  # totals agree with the rows
    got = {(x.order_no, x.amount_fen if x.kind is LineKind.PAYMENT else -x.amount_fen) for x in lines}
    assert got == expected


def _zip(entries: list[tuple[str, bytes]], *, gbk_names: bool = False) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i, (name, data) in enumerate(entries):
            # zipfile writes non-ASCII names only as UTF-8; Alipay's are GBK without the UTF-8 flag, so an ASCII
            # placeholder of the same length is written and its bytes replaced (the CRC covers only the data).
            archive.writestr(f"{i:0{len(name.encode('gbk'))}d}" if gbk_names else name, data)
    raw = buffer.getvalue()
    if gbk_names:
        for i, (name, _) in enumerate(entries):
            encoded = name.encode("gbk")
            raw = raw.replace(f"{i:0{len(encoded)}d}".encode(), encoded)
    return raw


@pytest.mark.parametrize("gbk_names", [True, False])
def test_the_detail_file_is_picked_from_alipays_zip(gbk_names: bool) -> None:
    data = _zip(
        [("2088_20261118_业务明细(汇总).csv", b"summary"), ("2088_20261118_业务明细.csv", b"detail")],
        gbk_names=gbk_names,
    )
    assert _detail_csv(data) == b"detail"


@pytest.mark.parametrize(
    "entries",
    [[("2088_20261118_业务明细(汇总).csv", b"s")], [("a_业务明细.csv", b"1"), ("b_业务明细.csv", b"2")], []],
)
def test_a_zip_without_exactly_one_detail_file_is_unavailable(entries: list[tuple[str, bytes]]) -> None:
    with pytest.raises(ChannelUnavailable):
        _detail_csv(_zip(entries))


def test_a_broken_zip_is_unavailable() -> None:
    data = _zip([("2088_20261118_业务明细.csv", b"detail" * 100)])
    with pytest.raises(ChannelUnavailable):
        _detail_csv(data[:40] + b"\0" * 20 + data[60:])


# --- faults: the outcome is unknown -----------------------------------------------------------------------------

CALLS: list[tuple[str, Callable[[AlipayAdapter], object]]] = [
    ("precreate", lambda a: a.create_payment(order("P2"))),
    ("query", lambda a: a.query_payment("P1")),
    ("close", lambda a: a.close_payment("P1")),
    ("refund", lambda a: a.refund(refund())),
    ("refund_query", lambda a: a.query_refund("P1", "R1")),
    ("bill", lambda a: a.fetch_statement(TODAY - timedelta(days=1))),
]


@pytest.mark.parametrize(
    "fault",
    [
        GatewayFault.HTTP_500,
        GatewayFault.TIMEOUT,
        GatewayFault.SYSTEM_ERROR,
        GatewayFault.BUSY,
        GatewayFault.BAD_SIGNATURE,
    ],
)
@pytest.mark.parametrize(("name", "call"), CALLS, ids=[name for name, _ in CALLS])
def test_gateway_faults_are_unavailable_then_pass(
    adapter: AlipayAdapter,
    sandbox: AlipaySandbox,
    fault: GatewayFault,
    name: str,
    call: Callable[[AlipayAdapter], object],
) -> None:
    paid(adapter, sandbox)
    sandbox.fail_next(2, fault)
    for _ in range(2):
        with pytest.raises(ChannelUnavailable):
            call(adapter)
    call(adapter)  # the gateway is back
    assert sandbox.trades["P1"].refunded_fen == (2000 if name == "refund" else 0)


def test_an_answer_under_another_key_is_never_trusted(
    sandbox: AlipaySandbox, clock: Clock, merchant_key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey
) -> None:
    adapter = make_adapter(sandbox, clock, merchant_key, public_key=other_key.public_key())
    with pytest.raises(ChannelUnavailable):
        adapter.query_payment("P1")  # even a (signed) "not found" is not believed


def test_requests_signed_with_another_key_are_refused(
    sandbox: AlipaySandbox, clock: Clock, other_key: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(ChannelDeclined) as e:
        make_adapter(sandbox, clock, other_key).create_payment(order())
    assert e.value.code == "isv.invalid-signature"
    assert sandbox.trades == {}


def test_another_app_id_is_refused(sandbox: AlipaySandbox, clock: Clock, merchant_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ChannelDeclined) as e:
        make_adapter(sandbox, clock, merchant_key, app_id="2021000000000002").query_payment("P1")
    assert e.value.code == "isv.invalid-app-id"


def test_connection_refused_is_unavailable(sandbox: AlipaySandbox, merchant_key: rsa.RSAPrivateKey) -> None:
    import httpx

    adapter = AlipayAdapter(
        AlipayConfig(APP_ID, sandbox.public_key),
        app_private_key=merchant_key,
        gateway_url="http://127.0.0.1:9/gateway.do",  # discard port: nothing listens
        http=httpx.Client(timeout=2),
    )
    with pytest.raises(ChannelUnavailable):
        adapter.query_payment("P1")


def test_callback_only_adapter_names_what_is_missing(sandbox: AlipaySandbox, merchant_key: rsa.RSAPrivateKey) -> None:
    callback_only = AlipayAdapter(AlipayConfig(APP_ID, sandbox.public_key))
    no_http = AlipayAdapter(AlipayConfig(APP_ID, sandbox.public_key), app_private_key=merchant_key)
    for adapter, missing in ((callback_only, "app_private_key"), (no_http, "http client")):
        for _, call in CALLS:
            with pytest.raises(ChannelUnavailable, match=missing):
                call(adapter)


def test_repr_holds_no_key(adapter: AlipayAdapter, merchant_key: rsa.RSAPrivateKey) -> None:
    text = repr(adapter)
    assert APP_ID in text
    assert str(merchant_key.private_numbers().d)[:20] not in text and "PRIVATE" not in text
    assert "public_key" not in repr(adapter.config)


# --- callbacks from the sandbox ---------------------------------------------------------------------------------


def test_payment_notification_is_a_channel_event(
    adapter: AlipayAdapter, sandbox: AlipaySandbox, receiver: Receiver
) -> None:
    paid(adapter, sandbox)
    event = adapter.read_callback({}, receiver.bodies[-1], now=NOW).event
    assert isinstance(event, ChannelEvent)
    assert (event.order_no, event.kind, event.amount_fen, event.channel_state) == (
        "P1",
        Kind.PAID,
        12000,
        "TRADE_SUCCESS",
    )
    assert "sign" not in event.payload


def test_refund_notifications_are_refund_events(
    adapter: AlipayAdapter, sandbox: AlipaySandbox, receiver: Receiver
) -> None:
    paid(adapter, sandbox)
    adapter.refund(refund("R1", 2000))
    adapter.refund(refund("R2", 10000))
    first, second = (adapter.read_callback({}, body, now=NOW).event for body in receiver.bodies[-2:])
    assert isinstance(first, RefundEvent) and isinstance(second, RefundEvent)
    assert (first.refund_no, first.order_no, first.outcome, first.amount_fen) == (
        "R1",
        "P1",
        RefundOutcome.SUCCEEDED,
        2000,
    )
    # refund_fee is the trade's total refunded so far: 120.00 after the second refund of 100.00
    assert (second.refund_no, second.amount_fen, second.payload["trade_status"]) == ("R2", 12000, "TRADE_CLOSED")
    assert first.event_id != second.event_id


def test_notifications_are_retried_until_exactly_success(
    sandbox: AlipaySandbox, adapter: AlipayAdapter, receiver: Receiver
) -> None:
    receiver.answers = [(200, b"fail"), (500, b""), (200, b"success\n"), (200, b"SUCCESS")]
    adapter.create_payment(order())
    (delivery,) = sandbox.pay("P1")
    assert delivery.acknowledged and len(delivery.attempts) == 5
    ids = {adapter.read_callback({}, body, now=NOW).event.event_id for body in receiver.bodies}
    assert ids == {delivery.notify_id}  # every retry is the same notification


def test_notifications_give_up_after_the_last_attempt(
    sandbox: AlipaySandbox, adapter: AlipayAdapter, receiver: Receiver
) -> None:
    receiver.answers = [(503, b"fail")] * 20
    adapter.create_payment(order())
    (delivery,) = sandbox.pay("P1")
    assert not delivery.acknowledged and len(delivery.attempts) == sandbox.max_attempts == 8


@pytest.mark.parametrize(
    ("fault", "check"),
    [
        (NotifyFault.NEVER, lambda bodies, read: bodies == []),
        (NotifyFault.TWICE, lambda bodies, read: len({read(b).event_id for b in bodies}) == 1 and len(bodies) == 2),
        (NotifyFault.OTHER_AMOUNT, lambda bodies, read: read(bodies[0]).amount_fen == 12001),
        (
            NotifyFault.CLOSED_AFTER,
            lambda bodies, read: [read(b).channel_state for b in bodies] == ["TRADE_SUCCESS", "TRADE_CLOSED"],
        ),
    ],
)
def test_notify_faults_that_verify(
    sandbox: AlipaySandbox, adapter: AlipayAdapter, receiver: Receiver, fault: NotifyFault, check: Callable
) -> None:
    adapter.create_payment(order())
    sandbox.pay("P1", fault)
    assert check(receiver.bodies, lambda body: adapter.read_callback({}, body, now=NOW).event)
    assert adapter.query_payment("P1").status is TradeStatus.PAID  # whatever the notifications said


@pytest.mark.parametrize("fault", [NotifyFault.WRONG_SIGNATURE, NotifyFault.STALE])
def test_notify_faults_that_are_refused(
    sandbox: AlipaySandbox, adapter: AlipayAdapter, receiver: Receiver, fault: NotifyFault
) -> None:
    from payments.channels.common import ChannelRefusal

    adapter.create_payment(order())
    sandbox.pay("P1", fault)
    with pytest.raises(ChannelRefusal):
        adapter.read_callback({}, receiver.bodies[0], now=NOW)


def test_sandbox_refuses_malformed_requests(sandbox: AlipaySandbox, adapter: AlipayAdapter) -> None:
    http = TestClient(sandbox.app)
    answer = http.post("/gateway.do?app_id=1&app_id=2", content=b"")
    assert ali.verify_response(answer.content, "", sandbox.public_key)["sub_code"] == "isv.invalid-parameter"
    answer = http.get("/gateway.do", params={"method": "alipay.trade.query"})
    assert ali.verify_response(answer.content, "alipay.trade.query", sandbox.public_key)["code"] == "40001"
    assert http.get("/downloadBillFile.resource", params={"fileId": "nope"}).status_code == 404


def test_an_unknown_method_is_answered_under_error_response(
    sandbox: AlipaySandbox, merchant_key: rsa.RSAPrivateKey
) -> None:
    params = ali.sign_request(
        {
            "app_id": APP_ID,
            "method": "alipay.trade.nonesuch",
            "charset": "utf-8",
            "sign_type": "RSA2",
            "timestamp": "2026-11-18 19:06:40",
            "version": "1.0",
            "format": "JSON",
        },
        merchant_key,
    )
    answer = TestClient(sandbox.app).get("/gateway.do", params=params)
    assert b'"error_response"' in answer.content
    assert ali.verify_response(answer.content, "alipay.trade.nonesuch", sandbox.public_key)["sub_code"] == (
        "isv.invalid-method"
    )


# --- signed answers, by hand ------------------------------------------------------------------------------------

METHOD = "alipay.trade.query"


def _sign(key: rsa.RSAPrivateKey, content: str) -> str:
    return base64.b64encode(key.sign(content.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()


def test_the_exact_text_is_verified_not_a_reserialisation(alipay_key: rsa.RSAPrivateKey) -> None:
    # As Alipay may send it: spaces, a \\u escape and a raw character; re-serialising would change the bytes.
    content = '{ "code": "10000", "msg": "Success", "subject": "\\u517b老", "total_amount": "120.00" }'
    body = f'{{\n  "alipay_trade_query_response" : {content} ,\n  "sign": "{_sign(alipay_key, content)}"\n}}'
    result = ali.verify_response(body.encode(), METHOD, alipay_key.public_key())
    assert result["subject"] == "养老" and result["total_amount"] == "120.00"
    compact = json.dumps(json.loads(content), ensure_ascii=False, separators=(",", ":"))
    tampered = body.replace(content, compact)
    with pytest.raises(ali.ResponseError):
        ali.verify_response(tampered.encode(), METHOD, alipay_key.public_key())


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b"not json",
        b'{"alipay_trade_query_response":{"code":"10000"}}',  # no sign
        b'{"alipay_trade_query_response":{"code":"10000"},"sign":5}',
        b'{"alipay_trade_query_response":{"code":"10000"},"sign":"!!"}',
        b'{"alipay_trade_query_response":{"code":"10000"},"sign":"QUJD"}',
        b'{"sign":"QUJD"}',
        b'{"alipay_trade_query_response":{"code":"10000"},"sign":"QUJD"} trailing',
        b'{"alipay_trade_query_response":{"code":"10000"},"sign":"QUJD","sign":"QUJD"}',
        b'{"alipay_trade_query_response":{"code":"10000"} "sign":"QUJD"}',
        b'{"alipay_trade_query_response" {"code":"10000"},"sign":"QUJD"}',
        b"\xff\xfe",
        b"{" + b" " * (2 * 1024 * 1024) + b"}",
        b'{"alipay_trade_query_response":' + b"[" * 100_000 + b"]" * 100_000 + b',"sign":"QUJD"}',
    ],
)
def test_malformed_or_unsigned_answers_are_refused(alipay_key: rsa.RSAPrivateKey, body: bytes) -> None:
    with pytest.raises(ali.ResponseError):
        ali.verify_response(body, METHOD, alipay_key.public_key())


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda inner, sign: f'{{"alipay_trade_query_response":{inner},"sign":{sign}}}'.encode(),
            st.text(alphabet='{}[]",:0123456789abc \\u', max_size=40),
            st.text(alphabet='"QUJD=\\', max_size=12),
        ),
    )
)
def test_fuzz_answers_only_response_errors(body: bytes) -> None:
    key = _FUZZ_KEY.public_key()
    with contextlib.suppress(ali.ResponseError):
        ali.verify_response(body, METHOD, key)


_FUZZ_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_a_signed_array_is_refused(alipay_key: rsa.RSAPrivateKey) -> None:
    body = f'{{"alipay_trade_query_response":[1],"sign":"{_sign(alipay_key, "[1]")}"}}'
    with pytest.raises(ali.ResponseError):
        ali.verify_response(body.encode(), METHOD, alipay_key.public_key())


# --- interop with alipay-sdk-python -----------------------------------------------------------------------------


def test_the_sdk_talks_to_the_sandbox(
    monkeypatch: pytest.MonkeyPatch,
    sandbox: AlipaySandbox,
    adapter: AlipayAdapter,
    merchant_key: rsa.RSAPrivateKey,
) -> None:
    """The SDK's requests pass the sandbox's signature check, and the SDK verifies the sandbox's signed answers."""
    import alipay.aop.api.DefaultAlipayClient as sdk_client
    from alipay.aop.api.AlipayClientConfig import AlipayClientConfig
    from alipay.aop.api.request.AlipayTradeQueryRequest import AlipayTradeQueryRequest
    from alipay.aop.api.response.AlipayTradeQueryResponse import AlipayTradeQueryResponse

    from tests.unit.payments_channels.test_alipay import sdk_private

    http = TestClient(sandbox.app)

    def do_post(url, query_string=None, headers=None, params=None, charset="utf-8", timeout=15):  # type: ignore[no-untyped-def]
        # The SDK's own transport cannot reach a port (it adds an int to a str); the request is the SDK's as built.
        body = "&".join(f"{k}={sdk_client.quote_plus(v)}" for k, v in params.items())
        return http.post(f"/gateway.do?{query_string}", content=body.encode(), headers=headers).content

    monkeypatch.setattr(sdk_client, "do_post", do_post)
    config = AlipayClientConfig()
    config.server_url = "http://testserver/gateway.do"
    config.app_id = APP_ID
    config.app_private_key = sdk_private(merchant_key)
    config.alipay_public_key = sandbox.public_key_text()
    client = sdk_client.DefaultAlipayClient(config)

    paid(adapter, sandbox)
    request = AlipayTradeQueryRequest()
    request.biz_content = {"out_trade_no": "P1"}
    response = AlipayTradeQueryResponse()
    response.parse_response_content(client.execute(request))  # raises if the SDK cannot verify the answer
    assert (response.code, response.trade_status, response.total_amount) == ("10000", "TRADE_SUCCESS", "120.00")
    assert sandbox.requests[-1]["method"] == "alipay.trade.query" and "sign" in sandbox.requests[-1]

    request.biz_content = {"out_trade_no": "P9"}
    response = AlipayTradeQueryResponse()
    response.parse_response_content(client.execute(request))
    assert response.sub_code == "ACQ.TRADE_NOT_EXIST"

    config.app_private_key = sdk_private(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    response = AlipayTradeQueryResponse()
    response.parse_response_content(sdk_client.DefaultAlipayClient(config).execute(request))
    assert response.sub_code == "isv.invalid-signature"


def test_a_refund_made_at_alipay_is_noticed(adapter: AlipayAdapter, sandbox: AlipaySandbox, receiver: Receiver) -> None:
    paid(adapter, sandbox)
    delivery = sandbox.refund("P1", "CONSOLE-1", 3000)
    assert delivery.acknowledged
    event = adapter.read_callback({}, receiver.bodies[-1], now=NOW).event
    assert isinstance(event, RefundEvent) and (event.refund_no, event.amount_fen) == ("CONSOLE-1", 3000)
    assert adapter.query_refund("P1", "CONSOLE-1").amount_fen == 3000
    with pytest.raises(ValueError, match="exists"):
        sandbox.refund("P1", "CONSOLE-1", 3000)
    with pytest.raises(ValueError, match=r"ACQ\.REFUND_AMT_NOT_EQUAL_TOTAL"):
        sandbox.refund("P1", "CONSOLE-2", 9001)


def test_the_sdk_verifies_the_sandboxs_notifications(
    adapter: AlipayAdapter, sandbox: AlipaySandbox, receiver: Receiver
) -> None:
    import urllib.parse

    from alipay.aop.api.util.SignatureUtils import get_sign_content, verify_with_rsa

    paid(adapter, sandbox)
    adapter.refund(refund())
    for body in receiver.bodies:
        params = dict(urllib.parse.parse_qsl(body.decode()))
        sign = params.pop("sign")
        assert params.pop("sign_type") == "RSA2"
        assert verify_with_rsa(sandbox.public_key_text(), get_sign_content(params).encode(), sign)
