"""Payment channel keys in keys/ (keys/channel_keys/) on both backends: import from the consoles' formats, sealing,
rotation rules per role (one signer; active + next verify; the APIv3 switch window), refusals, the WeChat Pay
platform certificate refresh over HTTP, and the `authsvc channel-keys` commands."""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from authsvc.cli import main
from authsvc.database import unit_of_work, utcnow
from authsvc.runtime import Runtime
from keys import channel_keys as ck
from keys.models import KeyRecord
from keys.sealing import Sealer
from payments.channels import wechatpay as wx
from payments.channels.common import ChannelRefusal, RefusalReason
from payments.sandbox.wechatpay import WechatPaySandbox

NOW = datetime.datetime.now(datetime.UTC)
APIV3 = b"0123456789abcdefABCDEF0123456789"
APIV3_NEW = b"ZYXWVUTSRQPONMLKJIHGFEDCBA987654"
MCHID = "1900000109"
MERCHANT_SERIAL = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
PUB_KEY_ID = "PUB_KEY_ID_0114232134912410000000000000"


@pytest.fixture(scope="module")
def rsa_keys() -> list[rsa.RSAPrivateKey]:
    return [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(5)]


def pem_private(key: Any, fmt: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def _public(key: Any) -> Any:
    return key.public_key() if hasattr(key, "private_bytes") else key


def pem_public(key: Any) -> bytes:
    return _public(key).public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def bare_public(key: Any) -> bytes:
    """The Alipay console's form: SubjectPublicKeyInfo DER in base64, one line, no armour."""
    return base64.b64encode(
        _public(key).public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def certificate(key: rsa.RSAPrivateKey, serial: int, *, days: int = 365, start_days: int = -1) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay.com platform test")])
    start = NOW + datetime.timedelta(days=start_days)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def imp(runtime: Runtime, channel: str, kind: str, data: bytes, serial: str | None = None, **kw: Any) -> KeyRecord:
    with unit_of_work(runtime.sessions) as session:
        return ck.import_key(session, runtime.sealer, channel=channel, kind=kind, data=data, serial=serial, **kw)


def material(runtime: Runtime, channel: str, now: datetime.datetime | None = None) -> ck.ChannelMaterial:
    with unit_of_work(runtime.sessions) as session:
        return ck.material(session, runtime.sealer, channel, now=now)


def promote(runtime: Runtime, kid: str, now: datetime.datetime | None = None) -> None:
    with unit_of_work(runtime.sessions) as session:
        ck.promote(session, kid, now=now)


def retire(runtime: Runtime, kid: str, now: datetime.datetime | None = None) -> None:
    with unit_of_work(runtime.sessions) as session:
        ck.retire(session, kid, now=now)


def states(runtime: Runtime, channel: str) -> dict[str, str]:
    with unit_of_work(runtime.sessions) as session:
        return {k.kid: k.state for k in ck.list_keys(session, runtime.sealer, channel)}


def wx_signed(key: rsa.RSAPrivateKey, serial: str, body: bytes, ts: int) -> dict[str, str]:
    nonce = secrets.token_hex(16)
    signature = key.sign(wx.signed_message(str(ts), nonce, body), padding.PKCS1v15(), hashes.SHA256())
    return {
        "Wechatpay-Timestamp": str(ts),
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Signature": base64.b64encode(signature).decode(),
        "Wechatpay-Serial": serial,
    }


def verifies(runtime: Runtime, key: rsa.RSAPrivateKey, serial: str) -> bool:
    now = int(datetime.datetime.now(datetime.UTC).timestamp())
    body = b'{"id":"x"}'
    keys = wx.PlatformKeys(dict(material(runtime, "wechatpay").verify_keys))
    try:
        wx.verify_callback(wx_signed(key, serial, body, now), body, keys, now=now)
    except ChannelRefusal as refusal:
        assert refusal.reason == RefusalReason.UNKNOWN_KEY
        return False
    return True


# --- import and sealing ----------------------------------------------------------------------------------------------


def test_each_kind_imports_from_the_consoles_forms_and_lists_without_secrets(
    runtime: Runtime, rsa_keys: list[rsa.RSAPrivateKey]
) -> None:
    bank_ours, bank_theirs = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    merchant = imp(runtime, "wechatpay", "merchant-key", pem_private(rsa_keys[0]), MERCHANT_SERIAL.lower())
    cert = imp(runtime, "wechatpay", "platform-certificate", cert_pem(certificate(rsa_keys[1], 0x3A1B)))
    pub = imp(runtime, "wechatpay", "platform-public-key", pem_public(rsa_keys[2]), PUB_KEY_ID)
    v3 = imp(runtime, "wechatpay", "apiv3-key", APIV3 + b"\n")
    # Alipay's key tool hands out bare base64 (PKCS#1 for non-Java SDKs) rather than PEM.
    app_der = rsa_keys[3].private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    imp(runtime, "alipay", "app-key", base64.b64encode(app_der))
    imp(runtime, "alipay", "alipay-public-key", bare_public(rsa_keys[4]))
    imp(runtime, "bank", "signing-key", pem_private(bank_ours), "sscard-2026")
    imp(runtime, "bank", "bank-public-key", pem_public(bank_theirs.public_key()), "bank-k1")

    assert (merchant.kid, cert.kid, pub.kid) == (f"wxm-{MERCHANT_SERIAL}", "wxc-3A1B", f"wxp-{PUB_KEY_ID}")
    with unit_of_work(runtime.sessions) as session:
        listed = [k.as_dict() for k in ck.list_keys(session, runtime.sealer)]
    assert [(k["channel"], k["kind"], k["state"]) for k in listed] == [
        ("wechatpay", "merchant-key", "active"),
        ("wechatpay", "platform-certificate", "active"),
        ("wechatpay", "platform-public-key", "active"),
        ("wechatpay", "apiv3-key", "active"),
        ("alipay", "app-key", "active"),
        ("alipay", "alipay-public-key", "active"),
        ("bank", "signing-key", "active"),
        ("bank", "bank-public-key", "active"),
    ]
    by_kid = {k["kid"]: k for k in listed}
    assert by_kid[merchant.kid]["fingerprint"] == ck.fingerprint(rsa_keys[0].public_key())
    assert by_kid[merchant.kid]["serial"] == MERCHANT_SERIAL and by_kid[merchant.kid]["algorithm"] == "RSA-2048"
    assert by_kid[v3.kid]["fingerprint"].startswith("kcv:") and len(by_kid[v3.kid]["fingerprint"]) == 10
    text = json.dumps(listed)
    assert APIV3.decode() not in text and "PRIVATE" not in text
    assert APIV3.decode() not in repr(material(runtime, "wechatpay"))
    assert "RSAPrivateKey" not in repr(material(runtime, "alipay"))


def test_material_is_sealed_and_survives_a_kek_rotation(runtime: Runtime, rsa_keys: list[rsa.RSAPrivateKey]) -> None:
    imp(runtime, "wechatpay", "merchant-key", pem_private(rsa_keys[0]), MERCHANT_SERIAL)
    imp(runtime, "wechatpay", "apiv3-key", APIV3)
    with unit_of_work(runtime.sessions) as session:
        rows = list(session.scalars(select(KeyRecord).where(KeyRecord.purpose == "pay:wechatpay")))
        assert all(APIV3 not in r.sealed_secret and b"PRIVATE KEY" not in r.sealed_secret for r in rows)
        # A new key-encryption key first, the old one after it: everything still opens, then reseal under the new.
        fresh = Fernet.generate_key()
        both = Sealer([fresh, runtime.settings.kek.encode()])  # type: ignore[union-attr]
        for r in rows:
            r.sealed_secret = both.reseal(r.sealed_secret)
    only_new = Sealer([fresh])
    with unit_of_work(runtime.sessions) as session:
        opened = ck.material(session, only_new, "wechatpay")
    assert opened.secrets == (APIV3,)
    assert opened.signer is not None and opened.signer.serial == MERCHANT_SERIAL
    assert ck.fingerprint(opened.signer.private_key.public_key()) == ck.fingerprint(rsa_keys[0].public_key())


@pytest.mark.parametrize(
    ("channel", "kind", "data", "serial", "message"),
    [
        ("wechatpay", "merchant-key", "public", MERCHANT_SERIAL, "private key"),
        ("wechatpay", "merchant-key", "rsa1024", MERCHANT_SERIAL, "at least 2048 bits"),
        ("wechatpay", "merchant-key", "ec", MERCHANT_SERIAL, "RSA key"),
        ("wechatpay", "merchant-key", "rsa", None, "needs --serial"),
        ("wechatpay", "merchant-key", "rsa", "not-hex", "--serial must be"),
        ("wechatpay", "platform-public-key", "public", "5157F09E", "PUB_KEY_ID_"),
        ("wechatpay", "platform-public-key", "rsa", PUB_KEY_ID, "holds a private key"),
        ("wechatpay", "platform-certificate", "public", None, "not a PEM X.509 certificate"),
        ("wechatpay", "platform-certificate", "expired", None, "expired"),
        ("wechatpay", "platform-certificate", "certificate", "ABCDEF12", "differs from the certificate"),
        ("wechatpay", "apiv3-key", "short", None, "32 letters and digits"),
        ("wechatpay", "apiv3-key", "apiv3", "ABCDEF12", "takes no --serial"),
        ("wechatpay", "shoe-key", "rsa", None, "unknown kind"),
        ("wechatpay", "app-key", "rsa", None, "not a wechatpay key"),
        ("alipay", "app-key", "garbage", None, "not a PEM private key"),
        ("alipay", "alipay-public-key", "garbage", None, "not a PEM public key"),
        ("bank", "signing-key", "rsa", "k1", "ECDSA P-256"),
        ("bank", "bank-public-key", "ec", "bad key id!", "--serial must be"),
        ("bank", "bank-public-key", "ec384", "k1", "ECDSA P-256"),
    ],
)
def test_imports_are_refused_with_a_reason_and_store_nothing(
    runtime: Runtime, rsa_keys: list[rsa.RSAPrivateKey], channel: str, kind: str, data: str, serial: str, message: str
) -> None:
    inputs: dict[str, Callable[[], bytes]] = {
        "public": lambda: pem_public(rsa_keys[0].public_key()),
        "rsa": lambda: pem_private(rsa_keys[0]),
        "rsa1024": lambda: pem_private(rsa.generate_private_key(public_exponent=65537, key_size=1024)),
        "ec": lambda: pem_public(ec.generate_private_key(ec.SECP256R1()).public_key()),
        "ec384": lambda: pem_public(ec.generate_private_key(ec.SECP384R1()).public_key()),
        "expired": lambda: cert_pem(certificate(rsa_keys[1], 77, days=2, start_days=-5)),
        "certificate": lambda: cert_pem(certificate(rsa_keys[1], 0x1234)),
        "short": lambda: b"tooshort",
        "apiv3": lambda: APIV3,
        "garbage": lambda: b"not base64 at all \x00",
    }
    if kind == "merchant-key" and data == "ec":
        inputs["ec"] = lambda: pem_private(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(ck.ChannelKeyError, match=message):
        imp(runtime, channel, kind, inputs[data](), serial)
    assert states(runtime, channel if channel in ck.CHANNELS else "wechatpay") == {}


def test_a_duplicate_import_is_refused(runtime: Runtime, rsa_keys: list[rsa.RSAPrivateKey]) -> None:
    first = imp(runtime, "wechatpay", "platform-public-key", pem_public(rsa_keys[2]), PUB_KEY_ID)
    # The same key under another id, the same id with another key, the same APIv3 key twice, the same cert twice.
    with pytest.raises(ck.ChannelKeyError, match=f"already stored as {first.kid}"):
        imp(runtime, "wechatpay", "platform-public-key", bare_public(rsa_keys[2]), "PUB_KEY_ID_99")
    with pytest.raises(ck.ChannelKeyError, match="already stored"):
        imp(runtime, "wechatpay", "platform-public-key", pem_public(rsa_keys[3]), PUB_KEY_ID)
    imp(runtime, "wechatpay", "apiv3-key", APIV3)
    with pytest.raises(ck.ChannelKeyError, match="this APIv3 key is already stored"):
        imp(runtime, "wechatpay", "apiv3-key", APIV3)
    imp(runtime, "wechatpay", "platform-certificate", cert_pem(certificate(rsa_keys[1], 0xABC)))
    with pytest.raises(ck.ChannelKeyError, match="already stored"):
        imp(runtime, "wechatpay", "platform-certificate", cert_pem(certificate(rsa_keys[1], 0xABC)))
    assert len(states(runtime, "wechatpay")) == 3


# --- rotation rules -------------------------------------------------------------------------------------------------


def test_two_platform_keys_verify_during_a_rotation_and_a_retired_one_no_longer_does(
    runtime: Runtime, rsa_keys: list[rsa.RSAPrivateKey]
) -> None:
    old = imp(runtime, "wechatpay", "platform-certificate", cert_pem(certificate(rsa_keys[0], 0x1111)))
    new = imp(runtime, "wechatpay", "platform-certificate", cert_pem(certificate(rsa_keys[1], 0x2222)))
    assert states(runtime, "wechatpay") == {old.kid: "active", new.kid: "next"}
    assert verifies(runtime, rsa_keys[0], "1111") and verifies(runtime, rsa_keys[1], "2222")
    assert not verifies(runtime, rsa_keys[2], "3333")
    promote(runtime, new.kid)
    assert states(runtime, "wechatpay") == {old.kid: "retired", new.kid: "active"}
    assert not verifies(runtime, rsa_keys[0], "1111") and verifies(runtime, rsa_keys[1], "2222")


def test_certificates_and_public_keys_verify_together_and_one_mode_may_be_retired_for_the_other(
    runtime: Runtime, rsa_keys: list[rsa.RSAPrivateKey]
) -> None:
    cert = imp(runtime, "wechatpay", "platform-certificate", cert_pem(certificate(rsa_keys[0], 0x1111)))
    pub = imp(runtime, "wechatpay", "platform-public-key", pem_public(rsa_keys[1]), PUB_KEY_ID)
    assert verifies(runtime, rsa_keys[0], "1111") and verifies(runtime, rsa_keys[1], PUB_KEY_ID)
    retire(runtime, cert.kid)  # the merchant moved to the platform public key
    assert not verifies(runtime, rsa_keys[0], "1111") and verifies(runtime, rsa_keys[1], PUB_KEY_ID)
    with pytest.raises(ck.ChannelKeyError, match="only active platform-public-key"):
        retire(runtime, pub.kid)


def test_one_signer_promote_retires_the_old_one_and_the_last_active_key_cannot_be_retired(
    runtime: Runtime, rsa_keys: list[rsa.RSAPrivateKey]
) -> None:
    first = imp(runtime, "alipay", "app-key", pem_private(rsa_keys[0]))
    second = imp(runtime, "alipay", "app-key", pem_private(rsa_keys[1]))
    signer = material(runtime, "alipay").signer
    assert signer is not None and signer.kid == first.kid
    with pytest.raises(ck.ChannelKeyError, match="only active app-key of alipay"):
        retire(runtime, first.kid)
    with pytest.raises(ck.ChannelKeyError, match="only a next key can be promoted"):
        promote(runtime, first.kid)
    promote(runtime, second.kid)
    signer = material(runtime, "alipay").signer
    assert signer is not None and signer.kid == second.kid
    assert states(runtime, "alipay") == {first.kid: "retired", second.kid: "active"}
    with pytest.raises(ck.ChannelKeyError, match="only a next key can be promoted"):
        promote(runtime, first.kid)  # retired keys stay retired
    with pytest.raises(ck.ChannelKeyError, match="already retired"):
        retire(runtime, first.kid)
    with pytest.raises(ck.ChannelKeyError, match="no channel key"):
        retire(runtime, "sig-whatever")
    third = imp(runtime, "alipay", "app-key", pem_private(rsa_keys[2]))
    retire(runtime, third.kid)  # a next key that will not be used after all
    assert states(runtime, "alipay")[third.kid] == "retired"


def test_the_apiv3_key_switch_window(runtime: Runtime) -> None:
    t0 = utcnow()
    old = imp(runtime, "wechatpay", "apiv3-key", APIV3, now=t0)
    new = imp(runtime, "wechatpay", "apiv3-key", APIV3_NEW, now=t0)
    # Imported before the console change: both decrypt, the active one first.
    assert material(runtime, "wechatpay", t0).secrets == (APIV3, APIV3_NEW)
    promote(runtime, new.kid, now=t0)
    assert material(runtime, "wechatpay", t0).secrets == (APIV3_NEW, APIV3)
    late = t0 + ck.APIV3_SWITCH_WINDOW - datetime.timedelta(minutes=1)
    assert material(runtime, "wechatpay", late).secrets == (APIV3_NEW, APIV3)
    after = t0 + ck.APIV3_SWITCH_WINDOW + datetime.timedelta(minutes=1)
    assert material(runtime, "wechatpay", after).secrets == (APIV3_NEW,)
    # The window can be closed at once (the old key leaked, say): retire it again.
    retire(runtime, old.kid, now=t0 + datetime.timedelta(hours=1))
    assert material(runtime, "wechatpay", t0 + datetime.timedelta(hours=2)).secrets == (APIV3_NEW,)


def test_the_keyring_picks_up_a_rotation_without_a_restart(runtime: Runtime, rsa_keys: list[rsa.RSAPrivateKey]) -> None:
    ring = ck.ChannelKeyring(runtime.sessions, runtime.sealer, cache_seconds=0)
    imp(runtime, "alipay", "alipay-public-key", bare_public(rsa_keys[0]))
    assert len(ring.get("alipay").verify_keys) == 1
    nxt = imp(runtime, "alipay", "alipay-public-key", bare_public(rsa_keys[1]))
    assert len(ring.get("alipay").verify_keys) == 2
    promote(runtime, nxt.kid)
    (only,) = ring.get("alipay").verify_keys.values()
    assert ck.fingerprint(only) == ck.fingerprint(rsa_keys[1].public_key())
    cached = ck.ChannelKeyring(runtime.sessions, runtime.sealer, cache_seconds=300)
    assert cached.get("alipay") is cached.get("alipay")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=600) | st.text(max_size=300).map(str.encode))
def test_key_parsers_refuse_anything_else_with_their_one_error(data: bytes) -> None:
    for load in (ck.load_private, ck.load_public):
        for key_type in ("rsa", "ec"):
            with pytest.raises(ck.ChannelKeyError):
                load(data, key_type)
    with pytest.raises(ck.ChannelKeyError):
        ck.load_certificate(data)


# --- WeChat Pay platform certificate refresh --------------------------------------------------------------------------


class FakeWechatPay:
    """GET /v3/certificates as WeChat Pay documents it: each certificate AEAD_AES_256_GCM-encrypted under the APIv3
    key (associated data "certificate"), the answer signed like a callback by the platform key named in
    Wechatpay-Serial. It checks our request's Authorization header with the merchant's public key."""

    def __init__(self, merchant: rsa.RSAPrivateKey) -> None:
        self.merchant = merchant.public_key()
        self.listed: list[tuple[x509.Certificate, rsa.RSAPrivateKey]] = []
        self.apiv3 = APIV3
        self.status = 200
        self.sign_with: tuple[rsa.RSAPrivateKey, str] | None = None
        self.requests = 0

    def body(self) -> bytes:
        data = []
        for cert, _ in self.listed:
            nonce = secrets.token_hex(6)
            ct = AESGCM(self.apiv3).encrypt(nonce.encode(), cert_pem(cert), b"certificate")
            data.append(
                {
                    "serial_no": format(cert.serial_number, "X"),
                    "effective_time": cert.not_valid_before_utc.isoformat(),
                    "expire_time": cert.not_valid_after_utc.isoformat(),
                    "encrypt_certificate": {
                        "algorithm": "AEAD_AES_256_GCM",
                        "nonce": nonce,
                        "associated_data": "certificate",
                        "ciphertext": base64.b64encode(ct).decode(),
                    },
                }
            )
        return json.dumps({"data": data}).encode()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        assert request.method == "GET" and request.url.path == "/v3/certificates"
        scheme, _, params = request.headers["Authorization"].partition(" ")
        fields = dict(part.split("=", 1) for part in params.split(","))
        fields = {k: v.strip('"') for k, v in fields.items()}
        assert scheme == wx.AUTH_SCHEME and fields["mchid"] == MCHID and fields["serial_no"] == MERCHANT_SERIAL
        message = wx.request_message("GET", "/v3/certificates", fields["timestamp"], fields["nonce_str"], "")
        self.merchant.verify(base64.b64decode(fields["signature"]), message, padding.PKCS1v15(), hashes.SHA256())
        if self.status != 200:
            return httpx.Response(self.status, json={"code": "SYSTEM_ERROR", "message": "busy"})
        body = self.body()
        key, serial = self.sign_with or (self.listed[-1][1], format(self.listed[-1][0].serial_number, "X"))
        now = int(datetime.datetime.now(datetime.UTC).timestamp())
        return httpx.Response(200, headers=wx_signed(key, serial, body, now), content=body)


@pytest.fixture
def wechat(runtime: Runtime, rsa_keys: list[rsa.RSAPrivateKey]) -> FakeWechatPay:
    imp(runtime, "wechatpay", "merchant-key", pem_private(rsa_keys[0]), MERCHANT_SERIAL)
    imp(runtime, "wechatpay", "apiv3-key", APIV3)
    return FakeWechatPay(rsa_keys[0])


def refresh(runtime: Runtime, fake: FakeWechatPay) -> ck.RefreshReport:
    with httpx.Client(transport=httpx.MockTransport(fake)) as http:
        return ck.refresh_wechatpay_certificates(
            runtime.sessions, runtime.sealer, http, base_url="https://api.mch.weixin.qq.com", mchid=MCHID
        )


def test_refresh_stores_the_first_certificate_then_follows_a_rotation_at_wechat_pay(
    runtime: Runtime, rsa_keys: list[rsa.RSAPrivateKey], wechat: FakeWechatPay
) -> None:
    first = certificate(rsa_keys[1], 0x1111, start_days=-30)
    wechat.listed = [(first, rsa_keys[1])]
    report = refresh(runtime, wechat)
    assert report.as_dict() == {"listed": ["1111"], "added": ["wxc-1111"], "promoted": [], "retired": []}
    assert verifies(runtime, rsa_keys[1], "1111")
    assert refresh(runtime, wechat).added == []  # nothing new: nothing stored

    # WeChat Pay publishes a successor: stored as next, and both verify at once.
    second = certificate(rsa_keys[2], 0x2222, start_days=-1)
    wechat.listed = [(first, rsa_keys[1]), (second, rsa_keys[2])]
    assert refresh(runtime, wechat).added == ["wxc-2222"]
    assert states(runtime, "wechatpay")["wxc-2222"] == "next"
    assert verifies(runtime, rsa_keys[1], "1111") and verifies(runtime, rsa_keys[2], "2222")

    # The old one is withdrawn: the successor becomes active, the old one stops verifying. No operator involved.
    wechat.listed = [(second, rsa_keys[2])]
    report = refresh(runtime, wechat)
    assert (report.promoted, report.retired) == (["wxc-2222"], ["wxc-1111"])
    assert not verifies(runtime, rsa_keys[1], "1111") and verifies(runtime, rsa_keys[2], "2222")


def test_refresh_decrypts_with_the_new_apiv3_key_during_a_switch(
    runtime: Runtime, rsa_keys: list[rsa.RSAPrivateKey], wechat: FakeWechatPay
) -> None:
    imp(runtime, "wechatpay", "apiv3-key", APIV3_NEW)  # next: WeChat Pay already encrypts with it
    wechat.apiv3 = APIV3_NEW
    wechat.listed = [(certificate(rsa_keys[1], 0x1111), rsa_keys[1])]
    assert refresh(runtime, wechat).added == ["wxc-1111"]


@pytest.mark.parametrize("fault", ["wrong_apiv3", "forged_signature", "http_500", "serial_mismatch", "expired_only"])
def test_refresh_refuses_what_it_cannot_trust_and_stores_nothing(
    runtime: Runtime, rsa_keys: list[rsa.RSAPrivateKey], wechat: FakeWechatPay, fault: str
) -> None:
    good = certificate(rsa_keys[1], 0x1111)
    wechat.listed = [(good, rsa_keys[1])]
    if fault == "wrong_apiv3":
        wechat.apiv3 = APIV3_NEW
    elif fault == "forged_signature":
        wechat.sign_with = (rsa_keys[3], "1111")  # names the listed certificate, signed by another key
    elif fault == "http_500":
        wechat.status = 500
    elif fault == "serial_mismatch":
        wechat.listed = [(good, rsa_keys[1])]
        original = wechat.body
        wechat.body = lambda: original().replace(b'"serial_no": "1111"', b'"serial_no": "2222"')  # type: ignore[method-assign]
        wechat.sign_with = (rsa_keys[1], "1111")
    if fault == "expired_only":
        wechat.listed = [(certificate(rsa_keys[1], 0x1111, days=2, start_days=-5), rsa_keys[1])]
        assert refresh(runtime, wechat).added == []
    else:
        with pytest.raises(ck.RefreshError):
            refresh(runtime, wechat)
    assert [k for k in states(runtime, "wechatpay") if k.startswith("wxc-")] == []


def test_refresh_needs_the_merchant_key(runtime: Runtime, rsa_keys: list[rsa.RSAPrivateKey]) -> None:
    fake = FakeWechatPay(rsa_keys[0])
    with pytest.raises(ck.RefreshError, match="no active WeChat Pay merchant key"):
        refresh(runtime, fake)
    assert fake.requests == 0


@settings(max_examples=150, deadline=None)
@given(
    body=st.binary(max_size=400)
    | st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
        max_leaves=12,
    ).map(lambda v: json.dumps({"data": v}).encode())
)
def test_the_certificate_list_reader_refuses_anything_else_with_its_one_error(body: bytes) -> None:
    with pytest.raises(ck.RefreshError):
        ck.read_certificate_list({}, body, apiv3_keys=[APIV3], known={}, now=0)


# --- the commands -----------------------------------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_channel_keys_commands(
    cli_env: Runtime, tmp_path: Path, rsa_keys: list[rsa.RSAPrivateKey], capsys: pytest.CaptureFixture[str]
) -> None:
    files = {
        "k0": pem_private(rsa_keys[0]),
        "k1": pem_private(rsa_keys[1]),
        "small": pem_private(rsa.generate_private_key(public_exponent=65537, key_size=1024)),
        "pub": pem_public(rsa_keys[2].public_key()),
        "v3": APIV3,
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    base = ("channel-keys", "import", "--channel")

    code, out, _ = run(
        capsys,
        *base,
        "wechatpay",
        "--kind",
        "merchant-key",
        "--file",
        str(tmp_path / "k0"),
        "--serial",
        MERCHANT_SERIAL,
    )
    assert code == 0 and json.loads(out)["state"] == "active" and "PRIVATE" not in out
    code, out, _ = run(capsys, *base, "wechatpay", "--kind", "apiv3-key", "--file", str(tmp_path / "v3"))
    assert code == 0 and APIV3.decode() not in out
    code, out, _ = run(
        capsys, *base, "wechatpay", "--kind", "merchant-key", "--file", str(tmp_path / "k1"), "--serial", "ABCDEF0123"
    )
    assert code == 0 and json.loads(out)["state"] == "next"

    refusals = [
        (("wechatpay", "--kind", "merchant-key", "--file", str(tmp_path / "pub"), "--serial", "ABCDEF01"), "private"),
        (("wechatpay", "--kind", "merchant-key", "--file", str(tmp_path / "small"), "--serial", "ABCDEF01"), "2048"),
        (("wechatpay", "--kind", "token", "--file", str(tmp_path / "k0")), "unknown kind"),
        (("wechatpay", "--kind", "merchant-key", "--file", str(tmp_path / "k0"), "--serial", "ABCDEF99"), "already"),
        (("alipay", "--kind", "app-key", "--file", str(tmp_path / "missing")), "cannot read"),
    ]
    for args, message in refusals:
        code, out, err = run(capsys, *base, *args)
        assert code == 1 and message in err and out == "", args
        assert "BEGIN" not in err

    code, out, _ = run(capsys, "channel-keys", "list", "--channel", "wechatpay")
    listed = json.loads(out)
    assert [(k["kid"], k["state"]) for k in listed] == [
        (f"wxm-{MERCHANT_SERIAL}", "active"),
        (listed[1]["kid"], "active"),
        ("wxm-ABCDEF0123", "next"),
    ]
    assert APIV3.decode() not in out and "PRIVATE" not in out

    code, _, err = run(capsys, "channel-keys", "retire", f"wxm-{MERCHANT_SERIAL}")
    assert code == 1 and "only active merchant-key" in err
    code, out, _ = run(capsys, "channel-keys", "promote", "wxm-ABCDEF0123")
    assert code == 0 and f"wxm-{MERCHANT_SERIAL} is retired" in out
    code, _, err = run(capsys, "channel-keys", "promote", "wxm-nope")
    assert code == 1 and "no channel key" in err
    code, out, _ = run(capsys, "channel-keys", "retire", f"wxm-{MERCHANT_SERIAL}")
    assert code == 1

    # Without SSCARD_WECHATPAY_MCHID the refresh says what is missing; with it, it reaches the (unreachable) API.
    code, _, err = run(capsys, "channel-keys", "refresh-wechatpay-certificates")
    assert code == 1 and "SSCARD_WECHATPAY_MCHID" in err


@pytest.fixture
def sandbox_over_http() -> Iterator[tuple[WechatPaySandbox, str]]:
    """The WeChat Pay sandbox served by uvicorn on 127.0.0.1, in this helper's port range (18130-18139)."""
    sandbox = WechatPaySandbox(mode="certificate")
    for port in range(18130, 18140):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                break
    else:
        pytest.fail("no free port in 18130-18139")
    server = uvicorn.Server(uvicorn.Config(sandbox.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            pytest.fail("the sandbox did not start")
        threading.Event().wait(0.02)
    yield sandbox, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_refresh_command_against_the_sandbox_over_http(
    cli_env: Runtime,
    sandbox_over_http: tuple[WechatPaySandbox, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sandbox, url = sandbox_over_http
    d = sandbox.describe()
    imp(cli_env, "wechatpay", "merchant-key", d["merchant_private_key_pem"].encode(), d["merchant_serial"])
    imp(cli_env, "wechatpay", "apiv3-key", d["apiv3_key"].encode())
    monkeypatch.setenv("SSCARD_WECHATPAY_MCHID", d["mchid"])
    monkeypatch.setenv("SSCARD_WECHATPAY_BASE_URL", url)
    code, out, _ = run(capsys, "channel-keys", "refresh-wechatpay-certificates")
    assert code == 0 and json.loads(out)["added"] == [f"wxc-{sandbox.certificate_serial}"]
    assert sandbox.requests == [("GET", "/v3/certificates")]
    sandbox.fail_next(1, "error")
    code, _, err = run(capsys, "channel-keys", "refresh-wechatpay-certificates")
    assert code == 1 and "HTTP 500" in err
    code, out, _ = run(capsys, "channel-keys", "list", "--channel", "wechatpay")
    assert [k["kind"] for k in json.loads(out)] == ["merchant-key", "apiv3-key", "platform-certificate"]
