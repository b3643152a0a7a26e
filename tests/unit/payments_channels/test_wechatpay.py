"""WeChat Pay API v3 wire format, checked against callbacks built by hand from the published specification and
against the wechatpayv3 SDK (PyPI), not only against our own signing code."""

from __future__ import annotations

import base64
import json
import os
import re

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from wechatpayv3 import utils as sdk

from payments.channels import wechatpay as wx
from payments.channels.common import ChannelRefusal, RefusalReason
from tests.unit.payments_channels.conftest import public_pem

NOW = 1_780_000_000  # a fixed clock; no test depends on the real time
CERT_SERIAL = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
PUB_KEY_ID = "PUB_KEY_ID_0114232134912410000000000000"
APIV3_KEY = b"0123456789abcdefghijklmnopqrstuv"  # 32 ASCII bytes, as the merchant platform makes them

# The decrypted resource of a payment notification, as in the "支付通知" example of the specification.
TRANSACTION = {
    "transaction_id": "1217752501201407033233368018",
    "amount": {"payer_total": 100, "total": 100, "currency": "CNY", "payer_currency": "CNY"},
    "mchid": "1230000109",
    "trade_state": "SUCCESS",
    "bank_type": "CMC",
    "success_time": "2018-06-08T10:34:56+08:00",
    "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
    "out_trade_no": "1217752501201407033233368018",
    "appid": "wxd678efh567hg6787",
    "trade_state_desc": "支付成功",
    "trade_type": "MICROPAY",
    "attach": "自定义数据",
    "scene_info": {"device_id": "013467007045764"},
}


def encrypt(plaintext: bytes, *, key: bytes = APIV3_KEY, nonce: str = "fdasflkja484", aad: str = "transaction") -> dict:
    """The resource object as WeChat Pay builds it: AES-256-GCM, ciphertext||tag, base64."""
    ct = AESGCM(key).encrypt(nonce.encode(), plaintext, aad.encode())
    return {
        "original_type": "transaction",
        "algorithm": "AEAD_AES_256_GCM",
        "ciphertext": base64.b64encode(ct).decode(),
        "associated_data": aad,
        "nonce": nonce,
    }


def envelope(resource: dict) -> bytes:
    # Pretty-printed with non-ASCII text, as WeChat Pay sends it: the signature covers these exact bytes.
    body = {
        "id": "EV-2018022511223320873",
        "create_time": "2015-05-20T13:29:35+08:00",
        "resource_type": "encrypt-resource",
        "event_type": "TRANSACTION.SUCCESS",
        "summary": "支付成功",
        "resource": resource,
    }
    return json.dumps(body, ensure_ascii=False, indent=4).encode("utf-8")


def sign(key: rsa.RSAPrivateKey, timestamp: str, nonce: str, body: bytes) -> str:
    # The literal message layout of the specification, written out here rather than taken from the module.
    message = timestamp.encode() + b"\n" + nonce.encode() + b"\n" + body + b"\n"
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def headers(
    key: rsa.RSAPrivateKey, serial: str, body: bytes, *, ts: int = NOW, nonce: str = "5K8264ILTKCH16CQ2502SI8ZNMTM67VS"
) -> dict:
    return {
        "Wechatpay-Timestamp": str(ts),
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Signature": sign(key, str(ts), nonce, body),
        "Wechatpay-Serial": serial,
        "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
    }


@pytest.fixture
def keys(platform_cert_pem: bytes, platform_pub_key: rsa.RSAPrivateKey) -> wx.PlatformKeys:
    # Both verification modes at once, as during WeChat Pay's migration to the platform public key.
    return wx.PlatformKeys.of(
        wx.PlatformKeys.certificate_entry(platform_cert_pem),
        wx.PlatformKeys.public_key_entry(PUB_KEY_ID, public_pem(platform_pub_key)),
    )


@pytest.fixture
def signers(platform_cert_key: rsa.RSAPrivateKey, platform_pub_key: rsa.RSAPrivateKey) -> dict:
    return {CERT_SERIAL: platform_cert_key, PUB_KEY_ID: platform_pub_key}


def refusal(excinfo: pytest.ExceptionInfo[ChannelRefusal]) -> RefusalReason:
    return excinfo.value.reason


# --- a callback built by hand verifies, decrypts and parses ------------------------------------------------------


@pytest.mark.parametrize("serial", [CERT_SERIAL, PUB_KEY_ID])
def test_hand_built_callback_is_read(keys: wx.PlatformKeys, signers: dict, serial: str) -> None:
    body = envelope(encrypt(json.dumps(TRANSACTION, ensure_ascii=False).encode()))
    event = wx.read_payment_callback(
        headers(signers[serial], serial, body),
        body,
        keys,
        APIV3_KEY,
        expected_mchid="1230000109",
        expected_appid="wxd678efh567hg6787",
        now=NOW,
    )
    assert event.event_id == "EV-2018022511223320873"
    assert event.event_type == "TRANSACTION.SUCCESS"
    assert event.nonce == "5K8264ILTKCH16CQ2502SI8ZNMTM67VS"
    t = event.transaction
    assert (t.out_trade_no, t.transaction_id, t.trade_state) == (
        "1217752501201407033233368018",
        "1217752501201407033233368018",
        wx.TradeState.SUCCESS,
    )
    assert (t.total_fen, t.payer_total_fen, t.currency) == (100, 100, "CNY")
    assert t.success_time is not None and t.success_time.isoformat() == "2018-06-08T10:34:56+08:00"


def test_the_sdk_agrees_with_the_hand_built_callback(platform_cert_key: rsa.RSAPrivateKey) -> None:
    # The SDK's own verifier and decrypter accept what the tests build, so the tests' vectors follow the format.
    body = envelope(encrypt(b'{"x":1}'))
    h = headers(platform_cert_key, CERT_SERIAL, body)
    assert sdk.rsa_verify(
        h["Wechatpay-Timestamp"],
        h["Wechatpay-Nonce"],
        body.decode(),
        h["Wechatpay-Signature"],
        platform_cert_key.public_key(),
    )
    res = json.loads(body)["resource"]
    assert sdk.aes_decrypt(res["nonce"], res["ciphertext"], res["associated_data"], APIV3_KEY.decode()) == '{"x":1}'


def test_header_names_are_case_insensitive(keys: wx.PlatformKeys, signers: dict) -> None:
    body = b'{"any":"body"}'
    lower = {k.lower(): v for k, v in headers(signers[PUB_KEY_ID], PUB_KEY_ID, body).items()}
    assert wx.verify_callback(lower, body, keys, now=NOW).serial == PUB_KEY_ID


def test_certificate_serial_is_spelled_like_the_header(platform_cert_pem: bytes) -> None:
    assert wx.PlatformKeys.certificate_entry(platform_cert_pem)[0] == CERT_SERIAL


def test_key_names_are_checked(platform_pub_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ValueError):
        wx.PlatformKeys.public_key_entry("PUB_KEY_ID_abc", public_pem(platform_pub_key))
    with pytest.raises(ValueError):
        wx.PlatformKeys({"5157f09e": platform_pub_key.public_key()})  # lower case: WeChat Pay sends upper case


# --- refusals: signature, serial, time window -------------------------------------------------------------------


def test_forged_signature_is_refused(keys: wx.PlatformKeys, other_key: rsa.RSAPrivateKey) -> None:
    body = b'{"id":"EV-1"}'
    with pytest.raises(ChannelRefusal) as e:
        wx.verify_callback(headers(other_key, PUB_KEY_ID, body), body, keys, now=NOW)
    assert refusal(e) is RefusalReason.SIGNATURE


def test_signature_under_the_other_valid_key_is_refused(keys: wx.PlatformKeys, signers: dict) -> None:
    # Signed with the platform public key but claiming the certificate's serial: the serial selects the key.
    body = b"{}"
    with pytest.raises(ChannelRefusal) as e:
        wx.verify_callback(headers(signers[PUB_KEY_ID], CERT_SERIAL, body), body, keys, now=NOW)
    assert refusal(e) is RefusalReason.SIGNATURE


@pytest.mark.parametrize(
    "serial", ["PUB_KEY_ID_0114232134912410000000000001", "ABCDEF", "", "5157f09efdc096de15ebe81a47057a7232f1b8e1"]
)
def test_unknown_serial_is_refused(keys: wx.PlatformKeys, signers: dict, serial: str) -> None:
    body = b"{}"
    with pytest.raises(ChannelRefusal) as e:
        wx.verify_callback(headers(signers[PUB_KEY_ID], serial, body), body, keys, now=NOW)
    assert refusal(e) is RefusalReason.UNKNOWN_KEY


def test_rotated_out_key_is_refused(signers: dict, platform_pub_key: rsa.RSAPrivateKey) -> None:
    only_new = wx.PlatformKeys.of(wx.PlatformKeys.public_key_entry(PUB_KEY_ID, public_pem(platform_pub_key)))
    body = b"{}"
    with pytest.raises(ChannelRefusal) as e:
        wx.verify_callback(headers(signers[CERT_SERIAL], CERT_SERIAL, body), body, only_new, now=NOW)
    assert refusal(e) is RefusalReason.UNKNOWN_KEY


@pytest.mark.parametrize(
    ("offset", "ok"), [(0, True), (-300, True), (-301, False), (-86_400, False), (30, True), (31, False), (3600, False)]
)
def test_time_window_is_past_only(keys: wx.PlatformKeys, signers: dict, offset: int, ok: bool) -> None:
    body = b"{}"
    h = headers(signers[PUB_KEY_ID], PUB_KEY_ID, body, ts=NOW + offset)
    if ok:
        assert wx.verify_callback(h, body, keys, now=NOW).timestamp == NOW + offset
    else:
        with pytest.raises(ChannelRefusal) as e:
            wx.verify_callback(h, body, keys, now=NOW)
        assert refusal(e) is RefusalReason.STALE


def test_window_is_configurable(keys: wx.PlatformKeys, signers: dict) -> None:
    body = b"{}"
    h = headers(signers[PUB_KEY_ID], PUB_KEY_ID, body, ts=NOW - 600)
    assert wx.verify_callback(h, body, keys, now=NOW, max_age_seconds=600).timestamp == NOW - 600
    with pytest.raises(ChannelRefusal):
        wx.verify_callback(h, body, keys, now=NOW, max_age_seconds=599)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda b: b.replace(b'"id": "EV-', b'"id": "EX-'),
        lambda b: b + b" ",
        lambda b: b[:-1],
        lambda b: b.replace(b"\n", b"\r\n", 1),
    ],
)
def test_tampered_body_is_refused(keys: wx.PlatformKeys, signers: dict, tamper) -> None:
    body = envelope(encrypt(b"{}"))
    h = headers(signers[CERT_SERIAL], CERT_SERIAL, body)
    with pytest.raises(ChannelRefusal) as e:
        wx.verify_callback(h, tamper(body), keys, now=NOW)
    assert refusal(e) is RefusalReason.SIGNATURE


def test_tampered_timestamp_or_nonce_is_refused(keys: wx.PlatformKeys, signers: dict) -> None:
    body = b"{}"
    h = headers(signers[PUB_KEY_ID], PUB_KEY_ID, body)
    for name, value in [("Wechatpay-Timestamp", str(NOW - 1)), ("Wechatpay-Nonce", "OTHERNONCE")]:
        with pytest.raises(ChannelRefusal) as e:
            wx.verify_callback({**h, name: value}, body, keys, now=NOW)
        assert refusal(e) is RefusalReason.SIGNATURE


def test_nonce_cannot_absorb_part_of_the_body(keys: wx.PlatformKeys, signers: dict) -> None:
    # Signed message "ts\nA\nB\n{}\n" is the same bytes whether the nonce is "A\nB" and body "{}", or the nonce "A"
    # and body "B\n{}": a nonce with a newline must not be accepted.
    signed = headers(signers[PUB_KEY_ID], PUB_KEY_ID, b"B\n{}", nonce="A")
    with pytest.raises(ChannelRefusal) as e:
        wx.verify_callback({**signed, "Wechatpay-Nonce": "A\nB"}, b"{}", keys, now=NOW)
    assert refusal(e) is RefusalReason.MALFORMED


@pytest.mark.parametrize(
    "missing", ["Wechatpay-Timestamp", "Wechatpay-Nonce", "Wechatpay-Signature", "Wechatpay-Serial"]
)
def test_missing_header_is_refused(keys: wx.PlatformKeys, signers: dict, missing: str) -> None:
    h = headers(signers[PUB_KEY_ID], PUB_KEY_ID, b"{}")
    del h[missing]
    with pytest.raises(ChannelRefusal) as e:
        wx.verify_callback(h, b"{}", keys, now=NOW)
    assert refusal(e) is RefusalReason.MALFORMED


@pytest.mark.parametrize("signature", ["WECHATPAY/SIGNTEST/" + "A" * 40, "not base64!", "", "QUJD"])
def test_probe_and_garbage_signatures_are_refused(keys: wx.PlatformKeys, signers: dict, signature: str) -> None:
    # WeChat Pay sends WECHATPAY/SIGNTEST/ signatures to check that merchants really verify.
    h = {**headers(signers[PUB_KEY_ID], PUB_KEY_ID, b"{}"), "Wechatpay-Signature": signature}
    with pytest.raises(ChannelRefusal) as e:
        wx.verify_callback(h, b"{}", keys, now=NOW)
    assert refusal(e) is RefusalReason.SIGNATURE


def test_other_signature_type_is_refused(keys: wx.PlatformKeys, signers: dict) -> None:
    h = {**headers(signers[PUB_KEY_ID], PUB_KEY_ID, b"{}"), "Wechatpay-Signature-Type": "WECHATPAY2-SM2-WITH-SM3"}
    with pytest.raises(ChannelRefusal) as e:
        wx.verify_callback(h, b"{}", keys, now=NOW)
    assert refusal(e) is RefusalReason.UNSUPPORTED


# --- refusals: the encrypted resource ---------------------------------------------------------------------------


def _read(
    keys: wx.PlatformKeys, signer: rsa.RSAPrivateKey, body: bytes, apiv3_key: bytes = APIV3_KEY, **kw
) -> wx.PaymentEvent:
    return wx.read_payment_callback(headers(signer, PUB_KEY_ID, body), body, keys, apiv3_key, now=NOW, **kw)


def test_tampered_ciphertext_is_refused(keys: wx.PlatformKeys, signers: dict) -> None:
    # Re-signed after tampering, as a holder of a leaked platform key could: the AEAD tag still catches it.
    resource = encrypt(json.dumps(TRANSACTION).encode())
    raw = bytearray(base64.b64decode(resource["ciphertext"]))
    raw[40] ^= 0x01
    resource["ciphertext"] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(ChannelRefusal) as e:
        _read(keys, signers[PUB_KEY_ID], envelope(resource))
    assert refusal(e) is RefusalReason.DECRYPTION


@pytest.mark.parametrize("field", ["associated_data", "nonce"])
def test_tampered_associated_data_or_nonce_is_refused(keys: wx.PlatformKeys, signers: dict, field: str) -> None:
    resource = encrypt(json.dumps(TRANSACTION).encode())
    resource[field] = "certificate" if field == "associated_data" else "aaaaaaaaaaaa"
    with pytest.raises(ChannelRefusal) as e:
        _read(keys, signers[PUB_KEY_ID], envelope(resource))
    assert refusal(e) is RefusalReason.DECRYPTION


def test_wrong_apiv3_key_is_refused(keys: wx.PlatformKeys, signers: dict) -> None:
    body = envelope(encrypt(json.dumps(TRANSACTION).encode()))
    with pytest.raises(ChannelRefusal) as e:
        _read(keys, signers[PUB_KEY_ID], body, apiv3_key=os.urandom(32))
    assert refusal(e) is RefusalReason.DECRYPTION
    assert APIV3_KEY.decode() not in e.value.message


def test_short_apiv3_key_is_a_configuration_error() -> None:
    with pytest.raises(ValueError):
        wx.decrypt_resource(
            wx.EncryptedResource("AEAD_AES_256_GCM", "AAAA", "abcdefghijkl", "", "transaction"), b"short"
        )


def test_other_algorithm_is_refused(keys: wx.PlatformKeys, signers: dict) -> None:
    resource = {**encrypt(b"{}"), "algorithm": "AEAD_SM4_GCM"}
    with pytest.raises(ChannelRefusal) as e:
        _read(keys, signers[PUB_KEY_ID], envelope(resource))
    assert refusal(e) is RefusalReason.UNSUPPORTED


def test_refund_notification_is_not_a_payment(keys: wx.PlatformKeys, signers: dict) -> None:
    resource = {**encrypt(b"{}"), "original_type": "refund"}
    with pytest.raises(ChannelRefusal) as e:
        _read(keys, signers[PUB_KEY_ID], envelope(resource))
    assert refusal(e) is RefusalReason.UNSUPPORTED


# --- refusals: the decrypted transaction ------------------------------------------------------------------------


def _tx(**changes: object) -> bytes:
    tx = json.loads(json.dumps(TRANSACTION))
    for path, value in changes.items():
        target = tx
        *parents, last = path.split("__")
        for p in parents:
            target = target[p]
        if value is ...:
            del target[last]
        else:
            target[last] = value
    return json.dumps(tx).encode()


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"amount__total": 1.0}, RefusalReason.MALFORMED),
        ({"amount__total": "100"}, RefusalReason.MALFORMED),
        ({"amount__total": True}, RefusalReason.MALFORMED),
        ({"amount__total": -1}, RefusalReason.MALFORMED),
        ({"amount__total": 10**20}, RefusalReason.MALFORMED),
        ({"amount__total": ...}, RefusalReason.MALFORMED),
        ({"amount__payer_total": 101}, RefusalReason.MALFORMED),
        ({"amount__currency": "USD"}, RefusalReason.UNSUPPORTED),
        ({"amount": ...}, RefusalReason.MALFORMED),
        ({"amount": [100]}, RefusalReason.MALFORMED),
        ({"out_trade_no": ...}, RefusalReason.MALFORMED),
        ({"out_trade_no": "a b"}, RefusalReason.MALFORMED),
        ({"transaction_id": 1217752501201407033233368018}, RefusalReason.MALFORMED),
        ({"trade_state": "PAID"}, RefusalReason.UNSUPPORTED),
        ({"success_time": ...}, RefusalReason.MALFORMED),
        ({"success_time": "2018-06-08 10:34:56"}, RefusalReason.MALFORMED),
        ({"success_time": "2018-13-08T10:34:56+08:00"}, RefusalReason.MALFORMED),
        ({"mchid": "1900000000"}, RefusalReason.MISMATCH),
        ({"appid": "wx0000000000000000"}, RefusalReason.MISMATCH),
    ],
)
def test_bad_transactions_are_refused(changes: dict, reason: RefusalReason) -> None:
    with pytest.raises(ChannelRefusal) as e:
        wx.parse_transaction(_tx(**changes), expected_mchid="1230000109", expected_appid="wxd678efh567hg6787")
    assert refusal(e) is reason


def test_unpaid_states_parse_without_success_time() -> None:
    t = wx.parse_transaction(_tx(trade_state="NOTPAY", success_time=..., amount__payer_total=...))
    assert (t.trade_state, t.success_time, t.payer_total_fen) == (wx.TradeState.NOTPAY, None, None)


@pytest.mark.parametrize("plaintext", [b"", b"[]", b"null", b"\xff\xfe", b"{" * 100_000, b'{"amount":'])
def test_non_objects_are_refused(plaintext: bytes) -> None:
    with pytest.raises(ChannelRefusal):
        wx.parse_transaction(plaintext)


# --- acknowledgements -------------------------------------------------------------------------------------------


def test_acknowledgements() -> None:
    ok = wx.acknowledge_success()
    assert (ok.status, ok.body, ok.headers) == (204, b"", {})
    refused = wx.acknowledge_refusal(ChannelRefusal(RefusalReason.SIGNATURE, "signature does not verify"))
    assert refused.status == 401 and refused.content_type == "application/json"
    assert json.loads(refused.body) == {"code": "FAIL", "message": "signature does not verify"}
    ours = wx.acknowledge_refusal()
    assert ours.status == 500 and json.loads(ours.body)["code"] == "FAIL"


# --- signing our requests ---------------------------------------------------------------------------------------


def test_authorization_header_matches_the_specification(merchant_key: rsa.RSAPrivateKey) -> None:
    # The example values of the "签名生成" page; the message is written out literally.
    header = wx.authorization_header(
        method="GET",
        url="/v3/certificates",
        body="",
        mchid="1900009191",
        serial_no="1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C",
        private_key=merchant_key,
        timestamp=1554208460,
        nonce="593BEC0C930BF1AFEB40B4A08C8FB242",
    )
    m = re.fullmatch(
        r'WECHATPAY2-SHA256-RSA2048 mchid="1900009191",nonce_str="593BEC0C930BF1AFEB40B4A08C8FB242",'
        r'signature="([A-Za-z0-9+/=]+)",timestamp="1554208460",serial_no="1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C"',
        header,
    )
    assert m is not None
    message = b"GET\n/v3/certificates\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n\n"
    merchant_key.public_key().verify(base64.b64decode(m.group(1)), message, padding.PKCS1v15(), hashes.SHA256())
    with pytest.raises(InvalidSignature):
        merchant_key.public_key().verify(
            base64.b64decode(m.group(1)), message + b"x", padding.PKCS1v15(), hashes.SHA256()
        )


def test_authorization_header_is_the_sdks(merchant_key: rsa.RSAPrivateKey) -> None:
    # PKCS#1 v1.5 signatures are deterministic, so the same inputs give the SDK's header byte for byte.
    body = json.dumps({"appid": "wxd678efh567hg6787", "description": "养老保险", "amount": {"total": 100}})
    theirs = sdk.build_authorization(
        "/v3/pay/transactions/native", "POST", "1900009191", "1DDE55AD", merchant_key, data=body, nonce_str="NONCE123"
    )
    ts = int(re.search(r'timestamp="(\d+)"', theirs).group(1))
    ours = wx.authorization_header(
        method="POST",
        url="/v3/pay/transactions/native",
        body=body,
        mchid="1900009191",
        serial_no="1DDE55AD",
        private_key=merchant_key,
        timestamp=ts,
        nonce="NONCE123",
    )
    assert ours == theirs


def test_authorization_header_defaults_and_checks(merchant_key: rsa.RSAPrivateKey) -> None:
    a = wx.authorization_header(
        method="GET", url="/v3/certificates", body="", mchid="1", serial_no="A", private_key=merchant_key
    )
    b = wx.authorization_header(
        method="GET", url="/v3/certificates", body="", mchid="1", serial_no="A", private_key=merchant_key
    )
    assert re.search(r'nonce_str="[0-9A-F]{32}"', a) and a != b  # a fresh nonce per request
    with pytest.raises(ValueError):
        wx.authorization_header(
            method="GET",
            url="https://api.mch.weixin.qq.com/v3/certificates",
            body="",
            mchid="1",
            serial_no="A",
            private_key=merchant_key,
        )
