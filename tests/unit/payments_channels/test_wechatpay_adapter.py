"""The WeChat Pay adapter against the sandbox over HTTP (an in-process httpx client on the sandbox's ASGI app): every
API call, its business refusals and every fault, and the sandbox's own behaviour as the channel (request signatures,
signed answers, notifications, retries). The wechatpayv3 SDK checks both sides where it has the functions."""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from wechatpayv3 import utils as sdk

from payments.channels import wechatpay as wx
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
from payments.channels.common import ChannelRefusal, RefusalReason
from payments.channels.wechatpay_adapter import WechatPayAdapter, WechatPayConfig, WechatPayMerchant
from payments.sandbox.wechatpay import WechatPaySandbox

NOW = 1_795_000_000  # 2026-11-18 19:06:40 China time; every clock here is this one
TODAY = datetime.date(2026, 11, 18)
ORDER = "SO20261118000001"
AMOUNT = 12000
NOTIFY = "https://sscard.example/v1/payments/callbacks/wechatpay"


class Inbox:
    """The merchant's callback endpoint: verifies each delivery with the adapter and answers like the real route."""

    def __init__(self) -> None:
        self.adapter: WechatPayAdapter | None = None
        self.events: list[ChannelEvent | RefundEvent] = []
        self.refused: list[RefusalReason] = []
        self.answers: list[int] = []  # statuses to answer before reading (a service that is down)

    def __call__(self, url: str, headers: dict[str, str], body: bytes) -> int:
        if self.answers:
            return self.answers.pop(0)
        assert self.adapter is not None
        try:
            self.events.append(self.adapter.read_callback(headers, body, now=NOW).event)
        except ChannelRefusal as refusal:
            self.refused.append(refusal.reason)
            return self.adapter.acknowledge(refusal).status
        return 204


@pytest.fixture
def inbox() -> Inbox:
    return Inbox()


@pytest.fixture
def sandbox(merchant_key: rsa.RSAPrivateKey, inbox: Inbox) -> WechatPaySandbox:
    return WechatPaySandbox(merchant_private_key=merchant_key, clock=lambda: NOW, sender=inbox)


def make_adapter(sandbox: WechatPaySandbox, *, http: httpx.Client | None = None, **merchant: Any) -> WechatPayAdapter:
    config = WechatPayConfig(
        mchid=sandbox.mchid, appid=sandbox.appid, platform_keys=sandbox.platform_keys(), apiv3_key=sandbox.apiv3_key
    )
    assert sandbox.merchant_private_key is not None
    fields = {
        "mchid": sandbox.mchid,
        "appid": sandbox.appid,
        "serial_no": sandbox.merchant_serial,
        "private_key": sandbox.merchant_private_key,
        "notify_url": NOTIFY,
        "api_base": "http://testserver",
        **merchant,
    }
    return WechatPayAdapter(
        config, merchant=WechatPayMerchant(**fields), http=http or TestClient(sandbox.app), clock=lambda: NOW
    )


def merchant_get(sandbox: WechatPaySandbox, path: str, *, timestamp: int = NOW) -> str:
    """The Authorization header of a GET of `path` signed with the sandbox merchant's key, as our adapter signs."""
    assert sandbox.merchant_private_key is not None
    return wx.authorization_header(
        method="GET",
        url=path,
        body="",
        mchid=sandbox.mchid,
        serial_no=sandbox.merchant_serial,
        private_key=sandbox.merchant_private_key,
        timestamp=timestamp,
    )


@pytest.fixture
def adapter(sandbox: WechatPaySandbox, inbox: Inbox) -> WechatPayAdapter:
    inbox.adapter = make_adapter(sandbox)
    return inbox.adapter


def order_ref(order_no: str = ORDER, amount: int = AMOUNT, notify_url: str = "") -> PaymentOrderRef:
    expires = datetime.datetime.fromtimestamp(NOW + 1800, datetime.UTC)
    return PaymentOrderRef(order_no, amount, "城乡居民养老保险 2026", expires, notify_url)


def paid(adapter: WechatPayAdapter, sandbox: WechatPaySandbox, order_no: str = ORDER) -> str:
    adapter.create_payment(order_ref(order_no))
    return sandbox.pay(order_no)


def test_the_adapter_implements_the_interface(adapter: WechatPayAdapter) -> None:
    assert isinstance(adapter, ChannelAdapter)


# --- Native pay ----------------------------------------------------------------------------------------------------


def test_native_pay_returns_the_code_url_and_creates_the_trade(
    adapter: WechatPayAdapter, sandbox: WechatPaySandbox
) -> None:
    start = adapter.create_payment(order_ref())
    trade = sandbox.trades[ORDER]
    assert start.method == "qr_code" and start.data["code_url"] == trade.code_url
    assert trade.code_url.startswith("weixin://wxpay/bizpayurl?pr=")
    assert (trade.amount_fen, trade.notify_url, trade.state) == (AMOUNT, NOTIFY, "NOTPAY")
    assert trade.time_expire == "2026-11-18T19:36:40+08:00"  # China time, as WeChat Pay writes it
    assert sandbox.requests == [("POST", "/v3/pay/transactions/native")]


def test_the_orders_notify_url_wins_over_the_default(adapter: WechatPayAdapter, sandbox: WechatPaySandbox) -> None:
    adapter.create_payment(order_ref(notify_url="https://elsewhere.example/cb"))
    assert sandbox.trades[ORDER].notify_url == "https://elsewhere.example/cb"


def test_creating_the_same_order_again_gives_the_same_code(adapter: WechatPayAdapter) -> None:
    assert adapter.create_payment(order_ref()) == adapter.create_payment(order_ref())


@pytest.mark.parametrize(
    ("prepare", "code"),
    [
        (lambda a, s: a.create_payment(order_ref(amount=AMOUNT + 1)), "OUT_TRADE_NO_USED"),
        (lambda a, s: s.pay(ORDER), "ORDER_PAID"),
        (lambda a, s: a.close_payment(ORDER), "ORDER_CLOSED"),
    ],
)
def test_native_pay_refusals_are_declined(
    adapter: WechatPayAdapter, sandbox: WechatPaySandbox, prepare: Callable[..., object], code: str
) -> None:
    adapter.create_payment(order_ref(amount=AMOUNT + 1) if code == "OUT_TRADE_NO_USED" else order_ref())
    if code != "OUT_TRADE_NO_USED":
        prepare(adapter, sandbox)
    with pytest.raises(ChannelDeclined) as e:
        adapter.create_payment(order_ref())
    assert e.value.code == code


def test_a_wrong_appid_is_declined(sandbox: WechatPaySandbox) -> None:
    config = WechatPayConfig(mchid=sandbox.mchid, platform_keys=sandbox.platform_keys(), apiv3_key=sandbox.apiv3_key)
    assert sandbox.merchant_private_key is not None
    merchant = WechatPayMerchant(
        sandbox.mchid,
        "wx0000000000000000",
        sandbox.merchant_serial,
        sandbox.merchant_private_key,
        NOTIFY,
        "http://testserver",
    )
    adapter = WechatPayAdapter(config, merchant=merchant, http=TestClient(sandbox.app), clock=lambda: NOW)
    with pytest.raises(ChannelDeclined) as e:
        adapter.create_payment(order_ref())
    assert e.value.code == "APPID_MCHID_NOT_MATCH"


def test_order_numbers_outside_wechats_alphabet_never_reach_a_url(adapter: WechatPayAdapter) -> None:
    for bad in ("../../v3/x", "SO1?mchid=1", "abc"):
        with pytest.raises(ValueError):
            adapter.query_payment(bad)
    for bad in ("RF/../x", "RF1?x=1", ""):
        with pytest.raises(ValueError):
            adapter.query_refund(ORDER, bad)


# --- query ---------------------------------------------------------------------------------------------------------


def test_query_maps_every_trade_state(adapter: WechatPayAdapter, sandbox: WechatPaySandbox) -> None:
    adapter.create_payment(order_ref())
    unpaid = adapter.query_payment(ORDER)
    assert (unpaid.status, unpaid.raw_state, unpaid.channel_trade_no, unpaid.amount_fen) == (
        TradeStatus.UNPAID,
        "NOTPAY",
        None,
        AMOUNT,
    )
    sandbox.paying(ORDER)
    assert adapter.query_payment(ORDER).status is TradeStatus.PAYING
    transaction_id = sandbox.pay(ORDER)
    trade = adapter.query_payment(ORDER)
    assert (trade.status, trade.channel_trade_no, trade.amount_fen) == (TradeStatus.PAID, transaction_id, AMOUNT)
    assert trade.paid_at == datetime.datetime.fromtimestamp(NOW, datetime.UTC)
    adapter.refund(RefundRequest(ORDER, "RF1", 100, AMOUNT, "", ""))
    refunded = adapter.query_payment(ORDER)
    assert (refunded.status, refunded.raw_state) == (TradeStatus.PAID, "REFUND")  # the payment still happened


@pytest.mark.parametrize(("state", "status"), [("CLOSED", TradeStatus.CLOSED), ("REVOKED", TradeStatus.CLOSED)])
def test_query_of_closed_and_revoked(adapter: WechatPayAdapter, sandbox: WechatPaySandbox, state: str, status) -> None:
    adapter.create_payment(order_ref())
    sandbox.trades[ORDER].state = state
    assert adapter.query_payment(ORDER).status is status


def test_query_of_a_failed_payment(adapter: WechatPayAdapter, sandbox: WechatPaySandbox) -> None:
    adapter.create_payment(order_ref())
    sandbox.fail(ORDER)
    assert adapter.query_payment(ORDER).status is TradeStatus.FAILED


def test_query_of_an_unknown_order_is_not_found(adapter: WechatPayAdapter) -> None:
    trade = adapter.query_payment("SO20261118999999")
    assert trade.status is TradeStatus.NOT_FOUND and trade.amount_fen is None


def test_query_shows_a_charge_of_another_amount(adapter: WechatPayAdapter, sandbox: WechatPaySandbox) -> None:
    adapter.create_payment(order_ref())
    sandbox.pay(ORDER, amount_fen=AMOUNT - 1)
    assert adapter.query_payment(ORDER).amount_fen == AMOUNT - 1


def test_query_about_another_order_is_not_believed(adapter: WechatPayAdapter, sandbox: WechatPaySandbox) -> None:
    adapter.create_payment(order_ref())
    adapter.create_payment(order_ref("SO20261118000002"))
    sandbox.trades[ORDER] = sandbox.trades["SO20261118000002"]  # the channel answers about the other order
    with pytest.raises(ChannelUnavailable):
        adapter.query_payment(ORDER)


# --- close ---------------------------------------------------------------------------------------------------------


def test_close(adapter: WechatPayAdapter, sandbox: WechatPaySandbox) -> None:
    adapter.create_payment(order_ref())
    assert adapter.close_payment(ORDER) is CloseResult.CLOSED
    assert sandbox.trades[ORDER].state == "CLOSED"
    assert adapter.close_payment(ORDER) is CloseResult.CLOSED  # closing again is still closed
    with pytest.raises(ValueError):
        sandbox.pay(ORDER)  # nobody can pay a closed order


def test_close_too_late_is_already_paid(adapter: WechatPayAdapter, sandbox: WechatPaySandbox) -> None:
    paid(adapter, sandbox)
    assert adapter.close_payment(ORDER) is CloseResult.ALREADY_PAID
    assert sandbox.trades[ORDER].state == "SUCCESS"


def test_close_of_an_unknown_order_is_not_found(adapter: WechatPayAdapter) -> None:
    assert adapter.close_payment("SO20261118999999") is CloseResult.NOT_FOUND


# --- refunds -------------------------------------------------------------------------------------------------------


def test_refund_and_its_query(adapter: WechatPayAdapter, sandbox: WechatPaySandbox) -> None:
    paid(adapter, sandbox)
    status = adapter.refund(RefundRequest(ORDER, "RF20261118000001", 5000, AMOUNT, "退保", ""))
    refund = sandbox.refunds["RF20261118000001"]
    assert (status.outcome, status.amount_fen, status.channel_refund_no) == (
        RefundOutcome.PROCESSING,
        5000,
        refund.refund_id,
    )
    assert refund.notify_url == NOTIFY
    assert adapter.query_refund(ORDER, "RF20261118000001").outcome is RefundOutcome.PROCESSING
    # The same refund number again is the same refund, not a second one.
    assert adapter.refund(RefundRequest(ORDER, "RF20261118000001", 5000, AMOUNT, "退保", "")) == status
    assert sandbox.trades[ORDER].refunded_fen == 5000


@pytest.mark.parametrize(
    ("end", "outcome"),
    [("SUCCESS", RefundOutcome.SUCCEEDED), ("ABNORMAL", RefundOutcome.FAILED), ("CLOSED", RefundOutcome.FAILED)],
)
def test_refund_endings_are_queried_and_notified(
    adapter: WechatPayAdapter, sandbox: WechatPaySandbox, inbox: Inbox, end: str, outcome: RefundOutcome
) -> None:
    paid(adapter, sandbox)
    adapter.refund(RefundRequest(ORDER, "RF1", AMOUNT, AMOUNT, "", ""))
    sandbox.settle_refund("RF1", end)
    assert adapter.query_refund(ORDER, "RF1").outcome is outcome
    event = inbox.events[-1]
    assert isinstance(event, RefundEvent)
    assert (event.refund_no, event.order_no, event.outcome, event.amount_fen) == ("RF1", ORDER, outcome, AMOUNT)
    assert event.event_id == f"{sandbox.refunds['RF1'].refund_id}:{end}"
    assert event.payload["event_type"] == f"REFUND.{end}"


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (RefundRequest(ORDER, "RF2", AMOUNT, AMOUNT, "", ""), "INVALID_REQUEST"),  # above what is left
        (RefundRequest(ORDER, "RF1", 200, AMOUNT, "", ""), "INVALID_REQUEST"),  # same number, other amount
        (RefundRequest(ORDER, "RF3", 100, AMOUNT + 1, "", ""), "PARAM_ERROR"),  # wrong order total
        (RefundRequest("SO20261118999999", "RF4", 100, AMOUNT, "", ""), "RESOURCE_NOT_EXISTS"),
    ],
)
def test_refund_refusals_are_declined(
    adapter: WechatPayAdapter, sandbox: WechatPaySandbox, request_: RefundRequest, code: str
) -> None:
    paid(adapter, sandbox)
    adapter.refund(RefundRequest(ORDER, "RF1", 100, AMOUNT, "", ""))
    with pytest.raises(ChannelDeclined) as e:
        adapter.refund(request_)
    assert e.value.code == code


def test_refund_of_an_unpaid_order_and_a_short_balance_are_declined(
    adapter: WechatPayAdapter, sandbox: WechatPaySandbox
) -> None:
    adapter.create_payment(order_ref())
    with pytest.raises(ChannelDeclined) as e:
        adapter.refund(RefundRequest(ORDER, "RF1", 100, AMOUNT, "", ""))
    assert e.value.code == "INVALID_REQUEST"
    sandbox.pay(ORDER)
    sandbox.balance_short = True
    with pytest.raises(ChannelDeclined) as e:
        adapter.refund(RefundRequest(ORDER, "RF1", 100, AMOUNT, "", ""))
    assert e.value.code == "NOT_ENOUGH"
    assert sandbox.refunds == {}


def test_query_of_an_unknown_refund_is_declined(adapter: WechatPayAdapter) -> None:
    with pytest.raises(ChannelDeclined) as e:
        adapter.query_refund(ORDER, "RF404")
    assert e.value.code == "RESOURCE_NOT_EXISTS"


def test_refund_query_for_another_order_is_not_believed(adapter: WechatPayAdapter, sandbox: WechatPaySandbox) -> None:
    paid(adapter, sandbox)
    adapter.refund(RefundRequest(ORDER, "RF1", 100, AMOUNT, "", ""))
    with pytest.raises(ChannelUnavailable):
        adapter.query_refund("SO20261118000002", "RF1")


# --- faults on the API: nothing may be concluded -------------------------------------------------------------------


CALLS: dict[str, Callable[[WechatPayAdapter], object]] = {
    "create": lambda a: a.create_payment(order_ref("SO20261118000003")),
    "query": lambda a: a.query_payment(ORDER),
    "close": lambda a: a.close_payment(ORDER),
    "refund": lambda a: a.refund(RefundRequest(ORDER, "RF9", 100, AMOUNT, "", "")),
    "query_refund": lambda a: a.query_refund(ORDER, "RF1"),
    "bill": lambda a: a.fetch_statement(TODAY - datetime.timedelta(days=1)),
}


@pytest.mark.parametrize("how", ["error", "timeout", "bad_signature", "unsigned"])
@pytest.mark.parametrize("call", sorted(CALLS))
def test_faults_are_unavailable_and_pass(
    adapter: WechatPayAdapter, sandbox: WechatPaySandbox, how: str, call: str
) -> None:
    paid(adapter, sandbox)
    adapter.refund(RefundRequest(ORDER, "RF1", 100, AMOUNT, "", ""))
    before = (dict(sandbox.trades), dict(sandbox.refunds))
    sandbox.fail_next(2, how)
    for _ in range(2):
        with pytest.raises(ChannelUnavailable):
            CALLS[call](adapter)
    if how in ("error", "timeout"):  # refused before acting
        assert (sandbox.trades, sandbox.refunds) == before
    CALLS[call](adapter)  # the channel is back


def test_refused_connections_are_unavailable(sandbox: WechatPaySandbox) -> None:
    # Nothing listens on this port of our range: the transport error must not escape as anything else.
    adapter = make_adapter(sandbox, api_base="http://127.0.0.1:18109", http=httpx.Client(timeout=2.0))
    with pytest.raises(ChannelUnavailable):
        adapter.query_payment(ORDER)


def test_a_stale_answer_is_not_believed(sandbox: WechatPaySandbox, inbox: Inbox) -> None:
    adapter = make_adapter(sandbox)
    sandbox.clock = lambda: NOW - 3600  # the answer says it was signed an hour ago
    with pytest.raises(ChannelUnavailable):
        adapter.query_payment(ORDER)


def test_an_answer_from_a_retired_platform_key_is_not_believed(sandbox: WechatPaySandbox) -> None:
    adapter = make_adapter(sandbox)
    sandbox.mode = "certificate"
    config = adapter.config
    only_public_key = wx.PlatformKeys.of(
        wx.PlatformKeys.public_key_entry(sandbox.public_key_id, sandbox.describe()["platform_public_key_pem"].encode())
    )
    adapter.config = WechatPayConfig(mchid=config.mchid, platform_keys=only_public_key, apiv3_key=config.apiv3_key)
    with pytest.raises(ChannelUnavailable):
        adapter.query_payment(ORDER)


@pytest.mark.parametrize("mode", ["certificate", "public_key"])
def test_both_platform_key_modes_verify(merchant_key: rsa.RSAPrivateKey, inbox: Inbox, mode: str) -> None:
    sandbox = WechatPaySandbox(merchant_private_key=merchant_key, clock=lambda: NOW, sender=inbox, mode=mode)
    inbox.adapter = adapter = make_adapter(sandbox)
    paid(adapter, sandbox)
    assert adapter.query_payment(ORDER).status is TradeStatus.PAID
    assert isinstance(inbox.events[-1], ChannelEvent)


# --- the sandbox refuses requests not signed by the merchant -------------------------------------------------------


def test_a_request_signed_with_another_key_is_sign_error(
    sandbox: WechatPaySandbox, other_key: rsa.RSAPrivateKey
) -> None:
    adapter = make_adapter(sandbox, private_key=other_key)
    # Not a decline: nothing was done and a fixed key would succeed, so a refund must not be failed over it.
    with pytest.raises(ChannelUnavailable, match="SIGN_ERROR"):
        adapter.create_payment(order_ref())
    assert sandbox.trades == {}


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer abc",
        'WECHATPAY2-SHA256-RSA2048 mchid="1900000109",nonce_str="n",signature="AAAA",timestamp="1795000000",'
        'serial_no="3775B6A45ACD588826D15E583A95F5DD8A8E4A2C"',
    ],
)
def test_the_sandbox_answers_401_sign_error(sandbox: WechatPaySandbox, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = TestClient(sandbox.app).get(f"/v3/pay/transactions/out-trade-no/{ORDER}?mchid=1", headers=headers)
    assert response.status_code == 401 and response.json()["code"] == "SIGN_ERROR"
    assert wx.verify_callback(response.headers, response.content, sandbox.platform_keys(), now=NOW)


def _sdk_signed_get(sandbox: WechatPaySandbox, path: str, *, timestamp: int = NOW, key: Any = None) -> httpx.Response:
    # The SDK's own Authorization builder (it reads the clock and makes its nonce itself).
    assert sandbox.merchant_private_key is not None
    header = sdk.build_authorization(
        path, "GET", sandbox.mchid, sandbox.merchant_serial, key or sandbox.merchant_private_key
    )
    return TestClient(sandbox.app).get(path, headers={"Authorization": header})


def test_the_sandbox_accepts_the_sdks_signature_and_the_sdk_verifies_its_answer(merchant_key, inbox) -> None:
    import time

    sandbox = WechatPaySandbox(merchant_private_key=merchant_key, clock=time.time, sender=inbox)
    sandbox.trades.clear()
    response = _sdk_signed_get(sandbox, f"/v3/pay/transactions/out-trade-no/{ORDER}?mchid={sandbox.mchid}")
    assert response.status_code == 404 and response.json()["code"] == "ORDER_NOT_EXIST"
    h = response.headers
    assert sdk.rsa_verify(
        h["Wechatpay-Timestamp"],
        h["Wechatpay-Nonce"],
        response.text,
        h["Wechatpay-Signature"],
        sandbox.platform_public_key.public_key(),
    )


def test_a_replayed_request_is_sign_error(sandbox: WechatPaySandbox) -> None:
    path = f"/v3/pay/transactions/out-trade-no/{ORDER}?mchid={sandbox.mchid}"
    header = merchant_get(sandbox, path)
    client = TestClient(sandbox.app)
    assert client.get(path, headers={"Authorization": header}).status_code == 404
    assert client.get(path, headers={"Authorization": header}).json()["code"] == "SIGN_ERROR"


def test_a_request_outside_the_window_is_sign_error(sandbox: WechatPaySandbox) -> None:
    adapter = make_adapter(sandbox)
    adapter._clock = lambda: NOW - 600
    with pytest.raises(ChannelUnavailable):  # the answer is stale for our clock too; the sandbox refused first
        adapter.query_payment(ORDER)
    assert sandbox.requests == []


# --- the platform certificates endpoint ----------------------------------------------------------------------------


def test_certificates_are_encrypted_under_the_apiv3_key(sandbox: WechatPaySandbox) -> None:
    (entry,) = _certificates(sandbox)
    sealed = entry["encrypt_certificate"]
    assert entry["serial_no"] == sandbox.certificate_serial and sealed["algorithm"] == "AEAD_AES_256_GCM"
    # Decrypted by the SDK's own function, then read as the certificate whose serial it claims.
    pem = sdk.aes_decrypt(sealed["nonce"], sealed["ciphertext"], sealed["associated_data"], sandbox.apiv3_key.decode())
    assert wx.PlatformKeys.certificate_entry(pem.encode())[0] == entry["serial_no"]


# --- the trade bill ------------------------------------------------------------------------------------------------


def _bill_day(sandbox: WechatPaySandbox, adapter: WechatPayAdapter) -> datetime.date:
    # Payments are made "today"; the bill for a day exists from the next day on.
    sandbox.clock = adapter._clock = lambda: NOW + 86400
    return TODAY


def test_the_bill_is_fetched_checked_and_parsed(adapter: WechatPayAdapter, sandbox: WechatPaySandbox) -> None:
    paid(adapter, sandbox)
    transaction_id = paid(adapter, sandbox, "SO20261118000002")
    adapter.refund(RefundRequest("SO20261118000002", "RF1", 2000, AMOUNT, "", ""))
    sandbox.settle_refund("RF1")
    day = _bill_day(sandbox, adapter)
    data = adapter.fetch_statement(day)
    assert data == sandbox.bill(day)
    lines = list(adapter.parse_statement(data.splitlines(keepends=True)))
    assert sorted((x.kind, x.order_no, x.amount_fen) for x in lines) == [
        (LineKind.PAYMENT, ORDER, AMOUNT),
        (LineKind.PAYMENT, "SO20261118000002", AMOUNT),
        (LineKind.REFUND, "SO20261118000002", 2000),
    ]
    refund_line = next(x for x in lines if x.kind is LineKind.REFUND)
    assert (refund_line.refund_no, refund_line.channel_trade_no) == ("RF1", transaction_id)


def test_a_bill_whose_hash_does_not_match_is_not_returned(adapter: WechatPayAdapter, sandbox: WechatPaySandbox) -> None:
    paid(adapter, sandbox)
    day = _bill_day(sandbox, adapter)
    sandbox.bill_faults = {"bad_hash"}
    with pytest.raises(ChannelUnavailable):
        adapter.fetch_statement(day)


def test_a_bill_not_made_yet_is_declined(adapter: WechatPayAdapter) -> None:
    with pytest.raises(ChannelDeclined) as e:
        adapter.fetch_statement(TODAY)
    assert e.value.code == "NO_STATEMENT_EXIST"


@pytest.mark.parametrize(
    "changes",
    [
        {"download_url": "https://evil.example/v3/billdownload/file?token=x"},  # our signed GET sent elsewhere
        {"download_url": "http://testserver/v3/pay/transactions/native"},
        {"download_url": None},
        {"hash_type": "SM3"},
        {"hash_value": "é" * 40},
        {"hash_value": None},
    ],
)
def test_a_bill_answer_we_cannot_check_is_never_followed(
    adapter: WechatPayAdapter, sandbox: WechatPaySandbox, monkeypatch: pytest.MonkeyPatch, changes: dict
) -> None:
    day = _bill_day(sandbox, adapter)
    original = sandbox._tradebill
    monkeypatch.setattr(sandbox, "_tradebill", lambda request, req: {**original(request, req), **changes})
    sandbox.app = sandbox._build_app()
    adapter._http = TestClient(sandbox.app)
    with pytest.raises(ChannelUnavailable):
        adapter.fetch_statement(day)
    assert sandbox.requests == [("GET", "/v3/bill/tradebill")]


@pytest.mark.parametrize(
    ("fault", "check"),
    [
        ("missing_line", lambda lines: len(lines) == 1),
        ("extra_line", lambda lines: len(lines) == 3 and lines[-1].order_no.startswith("SANDBOX")),
        ("wrong_amount", lambda lines: sorted(x.amount_fen for x in lines) == [AMOUNT, AMOUNT + 1]),
    ],
)
def test_bill_faults_are_consistent_bills_that_disagree_with_the_trades(
    adapter: WechatPayAdapter, sandbox: WechatPaySandbox, fault: str, check: Callable[[list[Any]], bool]
) -> None:
    paid(adapter, sandbox)
    paid(adapter, sandbox, "SO20261118000002")
    day = _bill_day(sandbox, adapter)
    sandbox.bill_faults = {fault}
    data = adapter.fetch_statement(day)  # the hash matches: WeChat Pay's own bill says so
    assert check(list(adapter.parse_statement(data)))


# --- notifications -------------------------------------------------------------------------------------------------


def test_pay_sends_a_signed_encrypted_notification(
    adapter: WechatPayAdapter, sandbox: WechatPaySandbox, inbox: Inbox
) -> None:
    transaction_id = paid(adapter, sandbox)
    (event,) = inbox.events
    assert isinstance(event, ChannelEvent)
    assert (event.order_no, event.kind, event.amount_fen, event.event_id) == (
        ORDER,
        Kind.PAID,
        AMOUNT,
        f"{transaction_id}:SUCCESS",
    )
    assert [(d.url, d.status, d.attempt) for d in sandbox.deliveries] == [(NOTIFY, 204, 1)]


def test_the_sdk_verifies_and_decrypts_the_sandboxs_notification(sandbox: WechatPaySandbox, adapter) -> None:
    captured: list[tuple[dict[str, str], bytes]] = []
    sandbox.sender = lambda url, headers, body: captured.append((headers, body)) or 204
    paid(adapter, sandbox)
    ((headers, body),) = captured
    assert sdk.rsa_verify(
        headers["Wechatpay-Timestamp"],
        headers["Wechatpay-Nonce"],
        body.decode(),
        headers["Wechatpay-Signature"],
        sandbox.platform_public_key.public_key(),
    )
    resource = json.loads(body)["resource"]
    plaintext = sdk.aes_decrypt(
        resource["nonce"], resource["ciphertext"], resource["associated_data"], sandbox.apiv3_key.decode()
    )
    assert json.loads(plaintext)["out_trade_no"] == ORDER


def test_a_failed_payment_is_notified(adapter: WechatPayAdapter, sandbox: WechatPaySandbox, inbox: Inbox) -> None:
    adapter.create_payment(order_ref())
    sandbox.fail(ORDER)
    (event,) = inbox.events
    assert isinstance(event, ChannelEvent) and event.kind is Kind.FAILED and event.channel_state == "PAYERROR"


def test_notifications_are_retried_until_acknowledged(
    adapter: WechatPayAdapter, sandbox: WechatPaySandbox, inbox: Inbox
) -> None:
    inbox.answers = [500, 503, 599]
    paid(adapter, sandbox)
    assert [d.status for d in sandbox.deliveries] == [500, 503, 599, 204]
    assert len(inbox.events) == 1


def test_retries_stop_after_max_attempts(adapter: WechatPayAdapter, sandbox: WechatPaySandbox, inbox: Inbox) -> None:
    inbox.answers = [500] * 20
    paid(adapter, sandbox)
    assert len(sandbox.deliveries) == sandbox.max_attempts and inbox.events == []


def test_each_retry_is_signed_afresh(sandbox: WechatPaySandbox, adapter: WechatPayAdapter) -> None:
    seen: list[dict[str, str]] = []
    sandbox.sender = lambda url, headers, body: seen.append(headers) or (204 if len(seen) == 3 else 500)
    paid(adapter, sandbox)
    assert len({h["Wechatpay-Nonce"] for h in seen}) == 3  # a spent nonce would be refused as a replay


def test_never_sent(adapter: WechatPayAdapter, sandbox: WechatPaySandbox, inbox: Inbox) -> None:
    adapter.create_payment(order_ref())
    sandbox.pay(ORDER, delivery="none")
    assert inbox.events == [] and sandbox.deliveries == []
    assert adapter.query_payment(ORDER).status is TradeStatus.PAID  # the query is how it is found


def test_sent_twice(adapter: WechatPayAdapter, sandbox: WechatPaySandbox, inbox: Inbox) -> None:
    adapter.create_payment(order_ref())
    sandbox.pay(ORDER, delivery="twice")
    first, second = inbox.events
    assert first.event_id == second.event_id  # the inbox deduplicates on it


@pytest.mark.parametrize(
    ("delivery", "reason"), [("bad_signature", RefusalReason.SIGNATURE), ("stale", RefusalReason.STALE)]
)
def test_forged_and_stale_notifications_are_refused(
    adapter: WechatPayAdapter, sandbox: WechatPaySandbox, inbox: Inbox, delivery: str, reason: RefusalReason
) -> None:
    adapter.create_payment(order_ref())
    sandbox.pay(ORDER, delivery=delivery)
    assert inbox.events == [] and inbox.refused == [reason]
    assert [d.status for d in sandbox.deliveries] == [401]


def test_out_of_order_delivery(adapter: WechatPayAdapter, sandbox: WechatPaySandbox, inbox: Inbox) -> None:
    adapter.create_payment(order_ref())
    sandbox.hold_callbacks = True
    sandbox.fail(ORDER)
    sandbox.pay(ORDER)
    sandbox.hold_callbacks = False
    assert inbox.events == []
    assert sandbox.release_callbacks(reverse=True) == 2
    assert [e.channel_state for e in inbox.events if isinstance(e, ChannelEvent)] == ["SUCCESS", "PAYERROR"]


def test_a_charge_of_another_amount_is_notified_as_charged(
    adapter: WechatPayAdapter, sandbox: WechatPaySandbox, inbox: Inbox
) -> None:
    adapter.create_payment(order_ref())
    sandbox.pay(ORDER, amount_fen=AMOUNT + 100)
    assert inbox.events[0].amount_fen == AMOUNT + 100


# --- refund notifications read by the adapter ----------------------------------------------------------------------


def _refund_notification(
    sandbox: WechatPaySandbox, resource: dict[str, Any], event_type: str = "REFUND.SUCCESS"
) -> tuple[dict[str, str], bytes]:
    envelope = {
        "id": "EV-1",
        "create_time": "2026-11-18T04:26:40+08:00",
        "resource_type": "encrypt-resource",
        "event_type": event_type,
        "summary": "退款成功",
        "resource": wx.encrypt_resource(
            json.dumps(resource).encode(),
            sandbox.apiv3_key,
            nonce="abcdefghijkl",
            associated_data="refund",
            original_type="refund",
        ),
    }
    return sandbox.signed_notification(envelope)


REFUND = {
    "mchid": "1900000109",
    "out_trade_no": ORDER,
    "transaction_id": "4200000000202611180000000001",
    "out_refund_no": "RF1",
    "refund_id": "50000000002026111800000000001",
    "refund_status": "SUCCESS",
    "success_time": "2026-11-18T04:26:40+08:00",
    "user_received_account": "招商银行信用卡0403",
    "amount": {"total": AMOUNT, "refund": 5000, "payer_total": AMOUNT, "payer_refund": 5000},
}


@pytest.mark.parametrize(
    ("changes", "event_type", "reason"),
    [
        ({"refund_status": "ABNORMAL"}, "REFUND.SUCCESS", RefusalReason.MALFORMED),  # envelope and resource disagree
        ({}, "REFUND.PROCESSING", RefusalReason.UNSUPPORTED),
        ({"refund_status": "PENDING"}, "REFUND.SUCCESS", RefusalReason.UNSUPPORTED),
        ({"mchid": "1900000999"}, "REFUND.SUCCESS", RefusalReason.MISMATCH),
        ({"amount": {"total": AMOUNT, "refund": AMOUNT + 1}}, "REFUND.SUCCESS", RefusalReason.MALFORMED),
        ({"amount": {"total": AMOUNT, "refund": 50.0}}, "REFUND.SUCCESS", RefusalReason.MALFORMED),
        ({"amount": {"total": AMOUNT, "refund": 0}}, "REFUND.SUCCESS", RefusalReason.MALFORMED),
        ({"out_refund_no": "RF 1"}, "REFUND.SUCCESS", RefusalReason.MALFORMED),
        ({"refund_id": None}, "REFUND.SUCCESS", RefusalReason.MALFORMED),
    ],
)
def test_bad_refund_notifications_are_refused(
    adapter: WechatPayAdapter, sandbox: WechatPaySandbox, changes: dict, event_type: str, reason: RefusalReason
) -> None:
    resource = {k: v for k, v in {**REFUND, **changes}.items() if v is not None}
    headers, body = _refund_notification(sandbox, resource, event_type)
    with pytest.raises(ChannelRefusal) as e:
        adapter.read_callback(headers, body, now=NOW)
    assert e.value.reason is reason


def test_a_hand_built_refund_notification_is_read(adapter: WechatPayAdapter, sandbox: WechatPaySandbox) -> None:
    headers, body = _refund_notification(sandbox, REFUND)
    verified = adapter.read_callback(headers, body, now=NOW)
    event = verified.event
    assert isinstance(event, RefundEvent)
    assert (event.refund_no, event.channel_refund_no, event.outcome, event.amount_fen) == (
        "RF1",
        REFUND["refund_id"],
        RefundOutcome.SUCCEEDED,
        5000,
    )
    assert verified.nonce == f"{sandbox.public_key_id}:{headers['Wechatpay-Nonce']}"
    assert event.payload["resource"] == REFUND


def test_another_resource_type_is_refused(adapter: WechatPayAdapter, sandbox: WechatPaySandbox) -> None:
    envelope = json.loads(_refund_notification(sandbox, REFUND)[1])
    envelope["resource"]["original_type"] = "certificate"
    headers, body = sandbox.signed_notification(envelope)
    with pytest.raises(ChannelRefusal) as e:
        adapter.read_callback(headers, body, now=NOW)
    assert e.value.reason is RefusalReason.UNSUPPORTED


# --- configuration -------------------------------------------------------------------------------------------------


def test_a_callback_only_adapter_names_the_missing_merchant_config(sandbox: WechatPaySandbox) -> None:
    config = WechatPayConfig(mchid=sandbox.mchid, platform_keys=sandbox.platform_keys(), apiv3_key=sandbox.apiv3_key)
    adapter = WechatPayAdapter(config)
    for call in CALLS.values():
        with pytest.raises(ChannelUnavailable, match="merchant config"):
            call(adapter)


def test_the_merchant_key_stays_out_of_reprs(adapter: WechatPayAdapter, sandbox: WechatPaySandbox) -> None:
    assert adapter.merchant is not None
    text = repr(adapter.merchant) + repr(adapter.config)
    assert "private_key" not in text and "apiv3" not in text
    pem = sandbox.describe()["merchant_private_key_pem"]
    assert pem.splitlines()[1] not in text


def test_merchant_and_callback_config_must_agree(sandbox: WechatPaySandbox) -> None:
    with pytest.raises(ValueError):
        make_adapter(sandbox, mchid="1900000999")


def test_the_bill_sha1_in_the_answer_is_of_the_file(adapter: WechatPayAdapter, sandbox: WechatPaySandbox) -> None:
    # Checked against the SHA1 of the bytes by hashlib directly, not through the adapter.
    paid(adapter, sandbox)
    day = _bill_day(sandbox, adapter)
    path = f"/v3/bill/tradebill?bill_date={day.isoformat()}&bill_type=ALL"
    header = merchant_get(sandbox, path, timestamp=NOW + 86400)
    answer = TestClient(sandbox.app).get(path, headers={"Authorization": header}).json()
    assert answer["hash_value"] == hashlib.sha1(sandbox.bill(day)).hexdigest()


def _certificates(sandbox: WechatPaySandbox) -> list[dict[str, Any]]:
    """The platform certificates endpoint's entries, its answer verified."""
    header = merchant_get(sandbox, "/v3/certificates")
    response = TestClient(sandbox.app).get("/v3/certificates", headers={"Authorization": header})
    wx.verify_callback(response.headers, response.content, sandbox.platform_keys(), now=NOW)
    return response.json()["data"]  # type: ignore[no-any-return]


def test_a_certificate_rotation_is_followed_by_downloading_the_certificates(
    merchant_key: rsa.RSAPrivateKey, inbox: Inbox
) -> None:
    sandbox = WechatPaySandbox(merchant_private_key=merchant_key, clock=lambda: NOW, sender=inbox, mode="certificate")
    adapter = make_adapter(sandbox)
    old_serial = sandbox.certificate_serial
    new_serial = sandbox.rotate_certificate()
    with pytest.raises(ChannelUnavailable):  # signed with a certificate the merchant does not hold yet
        adapter.query_payment(ORDER)
    entries = _certificates(sandbox)
    assert [e["serial_no"] for e in entries] == [old_serial, new_serial]  # the old one stays listed
    downloaded = []
    for entry in entries:
        sealed = entry["encrypt_certificate"]
        pem = sdk.aes_decrypt(
            sealed["nonce"], sealed["ciphertext"], sealed["associated_data"], sandbox.apiv3_key.decode()
        )
        downloaded.append(wx.PlatformKeys.certificate_entry(pem.encode()))
    config = adapter.config
    adapter.config = WechatPayConfig(
        mchid=config.mchid,
        appid=config.appid,
        platform_keys=wx.PlatformKeys.of(*downloaded),
        apiv3_key=config.apiv3_key,
    )
    assert adapter.query_payment(ORDER).status is TradeStatus.NOT_FOUND
