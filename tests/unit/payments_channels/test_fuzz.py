"""Fuzz the channel parsers: whatever a channel (or anyone pretending to be one) sends, the only exception that
may come out is ChannelRefusal."""

from __future__ import annotations

import contextlib
import json
from decimal import Decimal

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payments.channels import alipay as ali
from payments.channels import wechatpay as wx
from payments.channels.common import ChannelRefusal
from tests.unit.payments_channels.conftest import public_pem

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)

# Transactions that are mostly right, with any field replaced by anything: reaches the deep checks, not only the
# first "not an object" refusal.
_GOOD = {
    "transaction_id": "4200000000202611280000000001",
    "out_trade_no": "P20261128000000000123",
    "mchid": "1230000109",
    "appid": "wxd678efh567hg6787",
    "trade_state": "SUCCESS",
    "success_time": "2026-11-28T21:30:00+08:00",
    "amount": {"total": 100, "payer_total": 100, "currency": "CNY"},
}
_FIELDS = [*_GOOD, "amount.total", "amount.payer_total", "amount.currency"]


@st.composite
def mutated_transactions(draw: st.DrawFn) -> bytes:
    tx = json.loads(json.dumps(_GOOD))
    for field in draw(st.lists(st.sampled_from(_FIELDS), max_size=3)):
        in_amount = field.startswith("amount.") and isinstance(tx.get("amount"), dict)
        target, name = (tx["amount"], field[7:]) if in_amount else (tx, field)
        if draw(st.booleans()):
            target.pop(name, None)
        else:
            target[name] = draw(json_values)
    return json.dumps(tx).encode()


@FUZZ
@given(mutated_transactions())
def test_transaction_parser_only_refuses(plaintext: bytes) -> None:
    try:
        t = wx.parse_transaction(plaintext)
    except ChannelRefusal:
        return
    assert type(t.total_fen) is int and t.total_fen >= 0
    assert t.payer_total_fen is None or 0 <= t.payer_total_fen <= t.total_fen


@FUZZ
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_notification_parsers_only_refuse(body: bytes) -> None:
    for parse in (wx.parse_notification, wx.parse_transaction):
        with contextlib.suppress(ChannelRefusal):
            parse(body)


@FUZZ
@given(st.text(max_size=20), st.text(max_size=60), st.text(max_size=30), st.text(max_size=30))
def test_resource_decryption_only_refuses(algorithm: str, ciphertext: str, nonce: str, aad: str) -> None:
    resource = wx.EncryptedResource(algorithm or "AEAD_AES_256_GCM", ciphertext, nonce, aad, "transaction")
    with contextlib.suppress(ChannelRefusal):
        wx.decrypt_resource(resource, b"k" * 32)


@pytest.fixture(scope="module")
def fuzz_keys(platform_pub_key: rsa.RSAPrivateKey) -> wx.PlatformKeys:
    return wx.PlatformKeys.of(
        wx.PlatformKeys.public_key_entry("PUB_KEY_ID_0114232134912410000000000000", public_pem(platform_pub_key))
    )


_HEADER_NAMES = [
    "Wechatpay-Timestamp",
    "Wechatpay-Nonce",
    "Wechatpay-Signature",
    "Wechatpay-Serial",
    "wechatpay-serial",
    "Wechatpay-Signature-Type",
]


@FUZZ
@given(
    st.dictionaries(st.sampled_from(_HEADER_NAMES) | st.text(max_size=10), st.text(max_size=60), max_size=7),
    st.binary(max_size=100),
    st.sampled_from(["PUB_KEY_ID_0114232134912410000000000000", None]),
)
def test_callback_verification_only_refuses(
    fuzz_keys: wx.PlatformKeys, headers: dict, body: bytes, serial: str | None
) -> None:
    if serial is not None:
        headers = {**headers, "Wechatpay-Serial": serial}
    with pytest.raises(ChannelRefusal):
        # Nothing random carries a valid signature, so everything is refused, and cleanly.
        wx.read_payment_callback(headers, body, fuzz_keys, b"k" * 32, now=1_780_000_000)


@FUZZ
@given(
    st.binary(max_size=300)
    | st.lists(st.tuples(st.text(max_size=12), st.text(max_size=20)), max_size=8).map(
        lambda pairs: "&".join(f"{k}={v}" for k, v in pairs).encode("utf-8")
    )
)
def test_alipay_notify_only_refuses(alipay_key: rsa.RSAPrivateKey, body: bytes) -> None:
    with pytest.raises(ChannelRefusal):
        ali.read_notify(body, alipay_key.public_key(), app_id="2015102700040153", now=1_780_000_000)


_NOTIFY = {
    "app_id": "2015102700040153",
    "notify_time": "2026-11-28 21:30:00",
    "notify_id": "n1",
    "trade_status": "TRADE_SUCCESS",
    "out_trade_no": "P1",
    "trade_no": "T1",
    "total_amount": "1.00",
    "gmt_payment": "2026-11-28 21:29:59",
}


@FUZZ
@given(st.dictionaries(st.sampled_from([*_NOTIFY, "receipt_amount", "refund_fee"]), st.text(max_size=24), max_size=5))
def test_alipay_field_parser_only_refuses(changes: dict[str, str]) -> None:
    try:
        n = ali.parse_trade_notify({**_NOTIFY, **changes}, app_id="2015102700040153", now=1_795_872_600 + 60)
    except ChannelRefusal:
        return
    assert type(n.total_amount_fen) is int and n.total_amount_fen > 0


@FUZZ
@given(
    st.text(max_size=20)
    | st.decimals(min_value=0, max_value=10**9, places=3).map(str)
    | st.floats(min_value=0, max_value=1e9).map(repr)
)
def test_yuan_parser_is_exact_or_refuses(value: str) -> None:
    try:
        fen = ali._parse_yuan(value, "total_amount")
    except ChannelRefusal:
        return
    assert type(fen) is int
    assert Decimal(value) * 100 == fen  # exact: no rounding ever happened
