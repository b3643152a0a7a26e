"""What WeChat Pay answers, read by the adapter: the refund body and the queried transaction built by hand from the
specification's examples, and fuzzing of those parsers (only ChannelRefusal) and of every API call against signed
answers of any status and body (only a result, ChannelUnavailable or ChannelDeclined; never anything else)."""

from __future__ import annotations

import contextlib
import datetime
import json
import secrets
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from payments.channels import wechatpay as wx
from payments.channels.base import ChannelDeclined, ChannelUnavailable, PaymentOrderRef, RefundRequest
from payments.channels.common import ChannelRefusal, RefusalReason
from payments.channels.wechatpay_adapter import WechatPayAdapter, WechatPayConfig, WechatPayMerchant
from tests.unit.payments_channels.conftest import public_pem
from tests.unit.payments_channels.test_wechatpay import APIV3_KEY, PUB_KEY_ID

NOW = 1_795_000_000

# The refund API's answer, as in the specification's example ("退款申请" 应答示例), trimmed of promotion details.
REFUND_ANSWER = {
    "refund_id": "50000000382019052709732678859",
    "out_refund_no": "1217752501201407033233368018",
    "transaction_id": "1217752501201407033233368018",
    "out_trade_no": "1217752501201407033233368018",
    "channel": "ORIGINAL",
    "user_received_account": "招商银行信用卡0403",
    "success_time": "2020-12-01T16:18:12+08:00",
    "create_time": "2020-12-01T16:18:12+08:00",
    "status": "SUCCESS",
    "funds_account": "UNSETTLED",
    "amount": {
        "total": 100,
        "refund": 100,
        "payer_total": 90,
        "payer_refund": 90,
        "settlement_refund": 100,
        "settlement_total": 100,
        "discount_refund": 10,
        "currency": "CNY",
    },
}


def test_the_specifications_refund_answer_is_read() -> None:
    refund = wx.parse_refund(json.dumps(REFUND_ANSWER, ensure_ascii=False).encode(), status_field="status")
    assert (refund.state, refund.refund_fen, refund.total_fen, refund.refund_id) == (
        wx.RefundState.SUCCESS,
        100,
        100,
        "50000000382019052709732678859",
    )
    assert refund.success_time == datetime.datetime(2020, 12, 1, 8, 18, 12, tzinfo=datetime.UTC)


def test_a_refund_in_progress_has_no_success_time() -> None:
    body = {**REFUND_ANSWER, "status": "PROCESSING"}
    del body["success_time"]
    refund = wx.parse_refund(json.dumps(body).encode(), status_field="status")
    assert refund.state is wx.RefundState.PROCESSING and refund.success_time is None


def test_the_notification_field_is_not_the_api_field() -> None:
    # A refund notification says refund_status; an API answer says status. Reading one as the other is refused.
    with pytest.raises(ChannelRefusal) as e:
        wx.parse_refund(json.dumps(REFUND_ANSWER).encode())
    assert e.value.reason is RefusalReason.MALFORMED


def test_a_queried_unpaid_order_has_no_transaction_number() -> None:
    body = {
        "appid": "wxd678efh567hg6787",
        "mchid": "1230000109",
        "out_trade_no": "1217752501201407033233368018",
        "trade_state": "NOTPAY",
        "trade_state_desc": "订单未支付",
        "amount": {"total": 100, "currency": "CNY"},
    }
    tx = wx.parse_transaction(json.dumps(body).encode(), queried=True)
    assert (tx.trade_state, tx.transaction_id) == (wx.TradeState.NOTPAY, "")
    with pytest.raises(ChannelRefusal):  # a notification always has one
        wx.parse_transaction(json.dumps(body).encode())
    with pytest.raises(ChannelRefusal):  # and a paid one always has one, queried or not
        wx.parse_transaction(json.dumps({**body, "trade_state": "SUCCESS"}).encode(), queried=True)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=20,
)
# Valid answers with one field replaced by anything: closer to what a confused or hostile channel would send.
_refund_like = st.builds(
    lambda key, value: {**REFUND_ANSWER, key: value}, st.sampled_from([*REFUND_ANSWER, "mchid"]), _json
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        _json.map(lambda v: json.dumps(v).encode()),
        _refund_like.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=200),
    )
)
def test_fuzz_refund_parsing(body: bytes) -> None:
    for field in ("status", "refund_status"):
        with contextlib.suppress(ChannelRefusal):
            wx.parse_refund(body, expected_mchid="1900000109", status_field=field)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_json.map(lambda v: json.dumps(v).encode()), st.binary(max_size=200)))
def test_fuzz_queried_transactions(body: bytes) -> None:
    with contextlib.suppress(ChannelRefusal):
        wx.parse_transaction(body, queried=True, expected_mchid="1900000109")


# --- every call against signed answers of any shape ----------------------------------------------------------------

CALLS: dict[str, Callable[[WechatPayAdapter], object]] = {
    "create": lambda a: a.create_payment(
        PaymentOrderRef("SO0001", 100, "x", datetime.datetime.fromtimestamp(NOW, datetime.UTC), "")
    ),
    "query": lambda a: a.query_payment("SO0001"),
    "close": lambda a: a.close_payment("SO0001"),
    "refund": lambda a: a.refund(RefundRequest("SO0001", "RF1", 100, 100, "", "")),
    "query_refund": lambda a: a.query_refund("SO0001", "RF1"),
    "bill": lambda a: a.fetch_statement(datetime.date(2026, 11, 17)),
}


def _adapter(platform_pub_key: rsa.RSAPrivateKey, merchant_key: rsa.RSAPrivateKey, status: int, body: bytes):
    def answer(request: httpx.Request) -> httpx.Response:
        headers = wx.platform_signature_headers(
            platform_pub_key, PUB_KEY_ID, body, timestamp=NOW, nonce=secrets.token_hex(8)
        )
        return httpx.Response(status, content=body, headers={**headers, "Content-Type": "application/json"})

    keys = wx.PlatformKeys.of(wx.PlatformKeys.public_key_entry(PUB_KEY_ID, public_pem(platform_pub_key)))
    config = WechatPayConfig(mchid="1900000109", appid="wxd678efh567hg6787", platform_keys=keys, apiv3_key=APIV3_KEY)
    merchant = WechatPayMerchant("1900000109", "wxd678efh567hg6787", "ABC123", merchant_key, "https://x/cb")
    return WechatPayAdapter(
        config, merchant=merchant, http=httpx.Client(transport=httpx.MockTransport(answer)), clock=lambda: NOW
    )


_bodies = st.one_of(
    _json.map(lambda v: json.dumps(v).encode()),
    _refund_like.map(lambda v: json.dumps(v).encode()),
    st.builds(lambda c, m: json.dumps({"code": c, "message": m}).encode(), _json, _json),
    st.binary(max_size=100),
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(CALLS)), st.sampled_from([200, 202, 204, 301, 400, 401, 403, 404, 429, 500]), _bodies)
def test_fuzz_signed_answers_to_every_call(
    platform_pub_key: rsa.RSAPrivateKey, merchant_key: rsa.RSAPrivateKey, call: str, status: int, body: bytes
) -> None:
    adapter = _adapter(platform_pub_key, merchant_key, status, body)
    with contextlib.suppress(ChannelUnavailable, ChannelDeclined):
        CALLS[call](adapter)


def test_a_signed_answer_about_nothing_we_asked_is_unavailable(
    platform_pub_key: rsa.RSAPrivateKey, merchant_key: rsa.RSAPrivateKey
) -> None:
    # Every 200 below is well signed; none is an answer to the question, so none may be believed.
    refund_elsewhere = {**REFUND_ANSWER, "out_trade_no": "SO0001", "out_refund_no": "RF2"}
    cases: list[tuple[str, Any]] = [
        ("create", {"code_url": "https://evil.example/pay"}),
        ("create", {}),
        ("query", {**REFUND_ANSWER}),
        ("refund", refund_elsewhere),
        ("query_refund", refund_elsewhere),
        (
            "refund",
            {**REFUND_ANSWER, "out_trade_no": "SO0001", "out_refund_no": "RF1", "amount": {"total": 100, "refund": 99}},
        ),
        ("bill", {"hash_type": "SHA1", "hash_value": "0" * 40}),
    ]
    for call, body in cases:
        adapter = _adapter(platform_pub_key, merchant_key, 200, json.dumps(body).encode())
        with pytest.raises(ChannelUnavailable):
            CALLS[call](adapter)
