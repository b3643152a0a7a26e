"""Alipay async notify and request signing, checked against notifications built by hand from the published
specification, signed with the official alipay-sdk-python (PyPI; it signs with the pure-Python `rsa` package, an RSA
implementation independent of ours)."""

from __future__ import annotations

import base64
import random
import urllib.parse
from datetime import datetime

import pytest
from alipay.aop.api.util.SignatureUtils import get_sign_content, sign_with_rsa2, verify_with_rsa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from payments.channels import alipay as ali
from payments.channels.common import ChannelRefusal, RefusalReason
from tests.unit.payments_channels.conftest import public_pem

APP_ID = "2015102700040153"
NOTIFY_TIME = "2026-11-28 21:30:00"  # China time
NOW = datetime.fromisoformat("2026-11-28T21:31:00+08:00").timestamp()

# A TRADE_SUCCESS notification with the parameters of the specification's example, including an empty one.
PARAMS = {
    "gmt_create": "2026-11-28 21:29:40",
    "charset": "utf-8",
    "seller_email": "zhuzhanghu@alitest.com",
    "subject": "城乡居民养老保险 2026",
    "buyer_id": "2088102169481075",
    "invoice_amount": "120.00",
    "notify_id": "2026112800222213000093281003567512",
    "fund_bill_list": '[{"amount":"120.00","fundChannel":"ALIPAYACCOUNT"}]',
    "notify_type": "trade_status_sync",
    "trade_status": "TRADE_SUCCESS",
    "receipt_amount": "120.00",
    "app_id": APP_ID,
    "buyer_pay_amount": "120.00",
    "seller_id": "2088102119685838",
    "gmt_payment": "2026-11-28 21:29:59",
    "notify_time": NOTIFY_TIME,
    "passback_params": "",
    "version": "1.0",
    "out_trade_no": "P20261128000000000123",
    "total_amount": "120.00",
    "trade_no": "2026112822001481071000123456",
    "auth_app_id": APP_ID,
    "buyer_logon_id": "csq***@sandbox.com",
    "point_amount": "0.00",
}

# The content the specification says is signed, written out by hand: sorted by name, sign/sign_type and the empty
# passback_params left out, raw (decoded) values.
CONTENT = (
    "app_id=2015102700040153&auth_app_id=2015102700040153&buyer_id=2088102169481075&buyer_logon_id=csq***@sandbox.com"
    '&buyer_pay_amount=120.00&charset=utf-8&fund_bill_list=[{"amount":"120.00","fundChannel":"ALIPAYACCOUNT"}]'
    "&gmt_create=2026-11-28 21:29:40&gmt_payment=2026-11-28 21:29:59&invoice_amount=120.00"
    "&notify_id=2026112800222213000093281003567512&notify_time=2026-11-28 21:30:00&notify_type=trade_status_sync"
    "&out_trade_no=P20261128000000000123&point_amount=0.00&receipt_amount=120.00&seller_email=zhuzhanghu@alitest.com"
    "&seller_id=2088102119685838&subject=城乡居民养老保险 2026&total_amount=120.00"
    "&trade_no=2026112822001481071000123456&trade_status=TRADE_SUCCESS&version=1.0"
)


def sdk_private(key: rsa.RSAPrivateKey) -> str:
    """The key as the SDK takes it: base64 of PKCS#1, PEM markers optional."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()


def bare_public(key: rsa.RSAPrivateKey) -> str:
    """The public key as the Alipay console shows it: base64 DER on one line, no markers."""
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def alipay_sign(key: rsa.RSAPrivateKey, content: str) -> str:
    return sign_with_rsa2(sdk_private(key), content, "utf-8")


def notify_body(params: dict[str, str], order: list[str] | None = None) -> bytes:
    """The form body Alipay POSTs: application/x-www-form-urlencoded, UTF-8, in whatever order it likes."""
    names = order if order is not None else list(params)
    return urllib.parse.urlencode([(n, params[n]) for n in names], encoding="utf-8").encode("ascii")


def signed(key: rsa.RSAPrivateKey, content: str = CONTENT, **changes: str) -> dict[str, str]:
    params = {**PARAMS, **changes}
    return {**params, "sign_type": "RSA2", "sign": alipay_sign(key, content)}


def resign(key: rsa.RSAPrivateKey, **changes: str) -> dict[str, str]:
    """A notification with changed fields, validly signed: for checks that come after the signature."""
    params = {k: v for k, v in {**PARAMS, **changes}.items() if v is not None}
    content = "&".join(f"{k}={params[k]}" for k in sorted(params) if params[k])
    return {**params, "sign_type": "RSA2", "sign": alipay_sign(key, content)}


@pytest.fixture
def alipay_public(alipay_key: rsa.RSAPrivateKey) -> rsa.RSAPublicKey:
    return ali.load_public_key(bare_public(alipay_key))


def read(body: bytes, key: rsa.RSAPublicKey, **kw) -> ali.TradeNotification:
    return ali.read_notify(body, key, app_id=APP_ID, now=NOW, **kw)


# --- a notification built by hand verifies and parses -----------------------------------------------------------


def test_hand_built_notify_is_read(alipay_key: rsa.RSAPrivateKey, alipay_public: rsa.RSAPublicKey) -> None:
    n = read(notify_body(signed(alipay_key)), alipay_public)
    assert n.notify_id == "2026112800222213000093281003567512"
    assert (n.out_trade_no, n.trade_no, n.trade_status) == (
        "P20261128000000000123",
        "2026112822001481071000123456",
        ali.TradeStatus.TRADE_SUCCESS,
    )
    assert (n.total_amount_fen, n.receipt_amount_fen, n.buyer_pay_amount_fen, n.refund_fee_fen) == (
        12000,
        12000,
        12000,
        None,
    )
    assert n.notify_time.isoformat() == "2026-11-28T21:30:00+08:00"
    assert n.gmt_payment is not None and n.gmt_payment.isoformat() == "2026-11-28T21:29:59+08:00"


def test_our_sign_content_is_the_specifications() -> None:
    assert ali.sign_content({**PARAMS, "sign": "x", "sign_type": "RSA2"}, exclude=("sign", "sign_type")) == CONTENT


def test_order_of_parameters_in_the_body_does_not_matter(
    alipay_key: rsa.RSAPrivateKey, alipay_public: rsa.RSAPublicKey
) -> None:
    params = signed(alipay_key)
    names = list(params)
    random.Random(4).shuffle(names)
    assert read(notify_body(params, names), alipay_public).total_amount_fen == 12000


def test_pem_public_key_is_accepted_too(alipay_key: rsa.RSAPrivateKey) -> None:
    assert read(notify_body(signed(alipay_key)), ali.load_public_key(public_pem(alipay_key))).total_amount_fen == 12000


# --- refusals ---------------------------------------------------------------------------------------------------


def _refused(body: bytes, key: rsa.RSAPublicKey, reason: RefusalReason, **kw) -> None:
    with pytest.raises(ChannelRefusal) as e:
        read(body, key, **kw)
    assert e.value.reason is reason


def test_forged_signature_is_refused(other_key: rsa.RSAPrivateKey, alipay_public: rsa.RSAPublicKey) -> None:
    _refused(notify_body(signed(other_key)), alipay_public, RefusalReason.SIGNATURE)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("total_amount", "1200.00"),
        ("out_trade_no", "P20261128000000000124"),
        ("trade_status", "TRADE_FINISHED"),
        ("passback_params", "x"),  # an empty, unsigned parameter filled in
        ("extra", "1"),  # a parameter added
    ],
)
def test_tampered_parameters_are_refused(
    alipay_key: rsa.RSAPrivateKey, alipay_public: rsa.RSAPublicKey, name: str, value: str
) -> None:
    _refused(notify_body({**signed(alipay_key), name: value}), alipay_public, RefusalReason.SIGNATURE)


def test_removed_parameter_is_refused(alipay_key: rsa.RSAPrivateKey, alipay_public: rsa.RSAPublicKey) -> None:
    params = signed(alipay_key)
    del params["buyer_id"]
    _refused(notify_body(params), alipay_public, RefusalReason.SIGNATURE)


def test_duplicated_parameter_is_refused(alipay_key: rsa.RSAPrivateKey, alipay_public: rsa.RSAPublicKey) -> None:
    params = signed(alipay_key)
    body = notify_body(params) + b"&total_amount=0.01"
    _refused(body, alipay_public, RefusalReason.MALFORMED)
    # Even a repeat with the same value: the signed content has no place for it.
    _refused(notify_body(params) + b"&total_amount=120.00", alipay_public, RefusalReason.MALFORMED)


@pytest.mark.parametrize("sign_type", ["RSA", "rsa2", "SM2", ""])
def test_sign_type_other_than_rsa2_is_refused(
    alipay_key: rsa.RSAPrivateKey, alipay_public: rsa.RSAPublicKey, sign_type: str
) -> None:
    # sign_type is outside the signed content, so changing it keeps a valid sign; it must still say RSA2.
    _refused(notify_body({**signed(alipay_key), "sign_type": sign_type}), alipay_public, RefusalReason.UNSUPPORTED)


def test_missing_sign_type_or_sign_is_refused(alipay_key: rsa.RSAPrivateKey, alipay_public: rsa.RSAPublicKey) -> None:
    params = signed(alipay_key)
    _refused(
        notify_body({k: v for k, v in params.items() if k != "sign_type"}), alipay_public, RefusalReason.UNSUPPORTED
    )
    _refused(notify_body({k: v for k, v in params.items() if k != "sign"}), alipay_public, RefusalReason.SIGNATURE)
    _refused(notify_body({**params, "sign": "not base64!"}), alipay_public, RefusalReason.SIGNATURE)


@pytest.mark.parametrize("body", [b"", b"a", b"a=1&&b", b"a=%FF", "总=1".encode(), b"x=" + b"a" * 70_000])
def test_malformed_bodies_are_refused(alipay_public: rsa.RSAPublicKey, body: bytes) -> None:
    with pytest.raises(ChannelRefusal):
        read(body, alipay_public)


@pytest.mark.parametrize(
    ("notify_time", "ok"),
    [
        ("2026-11-28 21:31:00", True),
        ("2026-11-28 21:16:00", True),
        ("2026-11-28 21:15:59", False),
        ("2026-11-27 21:31:00", False),
        ("2026-11-28 21:32:00", True),
        ("2026-11-28 21:32:01", False),
    ],
)
def test_notify_time_window_is_past_only(
    alipay_key: rsa.RSAPrivateKey, alipay_public: rsa.RSAPublicKey, notify_time: str, ok: bool
) -> None:
    body = notify_body(resign(alipay_key, notify_time=notify_time))
    if ok:
        assert read(body, alipay_public).notify_time.strftime("%Y-%m-%d %H:%M:%S") == notify_time
    else:
        _refused(body, alipay_public, RefusalReason.STALE)


def test_app_id_must_be_ours(alipay_key: rsa.RSAPrivateKey, alipay_public: rsa.RSAPublicKey) -> None:
    _refused(notify_body(resign(alipay_key, app_id="2021000000000000")), alipay_public, RefusalReason.MISMATCH)


@pytest.mark.parametrize("status", list(ali.TradeStatus))
def test_every_trade_status_is_read(
    alipay_key: rsa.RSAPrivateKey, alipay_public: rsa.RSAPublicKey, status: ali.TradeStatus
) -> None:
    assert read(notify_body(resign(alipay_key, trade_status=status.value)), alipay_public).trade_status is status


def test_unknown_trade_status_is_refused(alipay_key: rsa.RSAPrivateKey, alipay_public: rsa.RSAPublicKey) -> None:
    _refused(notify_body(resign(alipay_key, trade_status="TRADE_PAID")), alipay_public, RefusalReason.UNSUPPORTED)


@pytest.mark.parametrize(
    "name", ["notify_id", "out_trade_no", "trade_no", "total_amount", "trade_status", "notify_time", "app_id"]
)
def test_missing_fields_are_refused(alipay_key: rsa.RSAPrivateKey, alipay_public: rsa.RSAPublicKey, name: str) -> None:
    params = resign(alipay_key, **{name: None})
    assert name not in params
    with pytest.raises(ChannelRefusal) as e:
        read(notify_body(params), alipay_public)
    assert e.value.reason in (RefusalReason.MALFORMED, RefusalReason.MISMATCH, RefusalReason.UNSUPPORTED)


# --- amounts ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("yuan", "fen"),
    [
        ("0.01", 1),
        ("1", 100),
        ("1.5", 150),
        ("120.00", 12000),
        ("100000000.00", 10_000_000_000),
        ("9.99", 999),
    ],
)
def test_yuan_amounts_become_integer_fen(yuan: str, fen: int) -> None:
    params = {**PARAMS, "total_amount": yuan, "receipt_amount": yuan, "buyer_pay_amount": yuan}
    n = ali.parse_trade_notify(params, app_id=APP_ID, now=NOW)
    assert n.total_amount_fen == n.receipt_amount_fen == n.buyer_pay_amount_fen == fen
    assert type(n.total_amount_fen) is int


@pytest.mark.parametrize(
    "yuan",
    [
        "1.005",
        "0.001",
        "1e2",
        "1E2",
        "1.0e1",
        "-1.00",
        "+1.00",
        " 1.00",
        "1.00 ",
        "01.00",
        "1.",
        ".5",
        "1,00",
        "１.00",
        "NaN",
        "inf",
        "0x10",
        "1_000",
        "0",
        "0.00",
        "",
    ],
)
def test_bad_total_amount_is_refused(yuan: str) -> None:
    with pytest.raises(ChannelRefusal) as e:
        ali.parse_trade_notify({**PARAMS, "total_amount": yuan}, app_id=APP_ID, now=NOW)
    assert e.value.reason is RefusalReason.MALFORMED


def test_three_decimals_are_refused_end_to_end(alipay_key: rsa.RSAPrivateKey, alipay_public: rsa.RSAPublicKey) -> None:
    _refused(notify_body(resign(alipay_key, total_amount="120.001")), alipay_public, RefusalReason.MALFORMED)


def test_refund_fee_is_read(alipay_key: rsa.RSAPrivateKey, alipay_public: rsa.RSAPublicKey) -> None:
    refund = {"refund_fee": "20.50", "gmt_refund": "2026-11-28 21:30:00.123", "out_biz_no": "R1"}
    n = read(notify_body(resign(alipay_key, **refund)), alipay_public)
    assert (n.refund_fee_fen, n.out_biz_no, n.is_refund) == (2050, "R1", True)
    assert n.gmt_refund is not None and n.gmt_refund.isoformat() == "2026-11-28T21:30:00+08:00"
    assert not read(notify_body(signed(alipay_key)), alipay_public).is_refund


@pytest.mark.parametrize(
    "changes",
    [
        {"refund_fee": "20.50", "gmt_refund": "2026-11-28 21:30:00"},  # no out_biz_no: nothing to apply it to
        {"refund_fee": "20.50", "out_biz_no": "R1"},
        {"refund_fee": "20.50", "out_biz_no": "R1", "gmt_refund": "2026-11-28T21:30:00"},
        {"refund_fee": "20.50", "out_biz_no": "R1", "gmt_refund": "2026-11-28 21:30:00.1234"},
        {"refund_fee": "-20.50", "out_biz_no": "R1", "gmt_refund": "2026-11-28 21:30:00"},
    ],
)
def test_incomplete_refund_notices_are_refused(
    alipay_key: rsa.RSAPrivateKey, alipay_public: rsa.RSAPublicKey, changes: dict[str, str]
) -> None:
    _refused(notify_body(resign(alipay_key, **changes)), alipay_public, RefusalReason.MALFORMED)


# --- acknowledgements -------------------------------------------------------------------------------------------


def test_acknowledgements_are_the_exact_bodies() -> None:
    ok, no = ali.acknowledge_success(), ali.acknowledge_refusal()
    assert (ok.status, ok.body) == (200, b"success")
    assert (no.status, no.body) == (200, b"fail")


# --- signing our requests ---------------------------------------------------------------------------------------

REQUEST = {
    "app_id": APP_ID,
    "method": "alipay.trade.precreate",
    "format": "JSON",
    "charset": "utf-8",
    "sign_type": "RSA2",
    "timestamp": "2026-11-28 21:30:00",
    "version": "1.0",
    "notify_url": "https://pay.example.gov.cn/callbacks/alipay",
    "app_auth_token": "",
    "biz_content": '{"out_trade_no":"P20261128000000000123","total_amount":"120.00","subject":"城乡居民养老保险"}',
}


def test_request_sign_is_the_sdks(merchant_key: rsa.RSAPrivateKey) -> None:
    # sign_type is part of a request's signed content (unlike a notification's); the empty token is left out.
    ours = ali.sign_request(REQUEST, merchant_key)
    content = get_sign_content({k: v for k, v in REQUEST.items() if v})
    assert "sign_type=RSA2" in content
    assert ali.sign_content(REQUEST, exclude=("sign",)) == content
    assert ours["sign"] == sign_with_rsa2(sdk_private(merchant_key), content, "utf-8")
    assert verify_with_rsa(bare_public(merchant_key), content.encode(), ours["sign"])
    assert {k: v for k, v in ours.items() if k != "sign"} == REQUEST


def test_signed_request_encodes_as_a_form(merchant_key: rsa.RSAPrivateKey) -> None:
    form = ali.encode_form(ali.sign_request(REQUEST, merchant_key))
    assert dict(urllib.parse.parse_qsl(form))["biz_content"] == REQUEST["biz_content"]


def test_request_sign_checks() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(ValueError):
        ali.sign_request({**REQUEST, "sign_type": "RSA"}, key)
    with pytest.raises(ValueError):
        ali.sign_request({**REQUEST, "sign": "x"}, key)
    assert ali.format_time(datetime.fromisoformat("2026-11-28T13:30:00+00:00")) == "2026-11-28 21:30:00"
