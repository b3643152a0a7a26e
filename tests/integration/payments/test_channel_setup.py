"""Channels built at start-up from Settings and the sealed keys (payments/channels/setup.py), on both backends: the
enabled channels with their keys are installed, the rest left out with one log line and answered 503; callbacks go
through the installed adapters (WeChat Pay's sandbox over its HTTP API, Alipay by hand), and key changes in keys/
reach the running service without a restart."""

from __future__ import annotations

import base64
import datetime
import logging
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient

from authsvc.app import create_app
from authsvc.cli import prepare
from authsvc.database import unit_of_work
from authsvc.runtime import Runtime
from keys import channel_keys as ck
from keys.models import KeyRecord
from payments.channels import registry
from payments.channels.base import ChannelUnavailable, PaymentOrderRef
from payments.channels.setup import install_channels
from payments.orders import checkout
from payments.sandbox.wechatpay import WechatPaySandbox
from tests.integration.payments.support import AMOUNT, new_order
from tests.integration.payments.test_callbacks import ali_delivery, state
from tests.unit.payments_channels.test_alipay import APP_ID

NOW = 1_795_000_000  # the service's and the sandbox's clock: no test depends on the real time
PAID = {"clearing:wechatpay": AMOUNT, "fund:pension:110000": AMOUNT}
CHANNEL_SETTINGS: dict[str, Any] = dict(
    wechatpay_mchid="1900000109",
    wechatpay_appid="wxd678efh567hg6787",
    wechatpay_base_url="https://api.mch.weixin.qq.com",
    alipay_app_id=APP_ID,
    bank_merchant_id="M0001",
    bank_base_url="https://bank.example",
)


@pytest.fixture(scope="module")
def alipay_keys() -> dict[str, rsa.RSAPrivateKey]:
    return {name: rsa.generate_private_key(public_exponent=65537, key_size=2048) for name in ("app", "old", "new")}


@pytest.fixture
def sandbox() -> WechatPaySandbox:
    return WechatPaySandbox(mode="public_key", clock=lambda: NOW)


def pem(key: Any) -> bytes:
    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def imp(runtime: Runtime, channel: str, kind: str, data: bytes, serial: str | None = None) -> ck.Listed:
    with unit_of_work(runtime.sessions) as session:
        return ck.describe(
            ck.import_key(session, runtime.sealer, channel=channel, kind=kind, data=data, serial=serial),
            runtime.sealer,
        )


def wechat_keys(runtime: Runtime, sandbox: WechatPaySandbox) -> dict[str, str]:
    """The merchant's material as the consoles hand it over, imported; returns the kids by kind."""
    d = sandbox.describe()
    return {
        "merchant": imp(
            runtime, "wechatpay", "merchant-key", d["merchant_private_key_pem"].encode(), d["merchant_serial"]
        ).kid,
        "apiv3": imp(runtime, "wechatpay", "apiv3-key", d["apiv3_key"].encode()).kid,
        "public": imp(
            runtime,
            "wechatpay",
            "platform-public-key",
            d["platform_public_key_pem"].encode(),
            d["platform_public_key_id"],
        ).kid,
        "certificate": imp(runtime, "wechatpay", "platform-certificate", d["platform_certificate_pem"].encode()).kid,
    }


def bank_keys(runtime: Runtime) -> None:
    imp(runtime, "bank", "signing-key", pem(ec.generate_private_key(ec.SECP256R1())), "sscard-1")
    imp(runtime, "bank", "bank-public-key", pem(ec.generate_private_key(ec.SECP256R1()).public_key()), "bank-1")


class Bridge(httpx.BaseTransport):
    """The sandbox's FastAPI app as a channel's network: requests the adapter signs go to it in process."""

    def __init__(self, app: Any) -> None:
        self.client = TestClient(app, base_url="https://api.mch.weixin.qq.com")

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        target = request.url.raw_path.decode()
        answer = self.client.request(request.method, target, headers=dict(request.headers), content=request.read())
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)


@pytest.fixture
def service_factory(settings_factory):  # type: ignore[no-untyped-def]
    """`service(**settings)` -> (runtime, client) for a service whose channels come from its settings and keys. The
    runtime exists first so that keys can be imported before the application starts."""
    opened: list[tuple[Runtime, TestClient]] = []

    def runtime(**overrides: Any) -> Runtime:
        rt = Runtime(settings_factory(**{**CHANNEL_SETTINGS, **overrides}))
        prepare(rt, migrate=False)
        return rt

    def start(rt: Runtime, *, transports: dict[str, httpx.BaseTransport] | None = None) -> TestClient:
        client = TestClient(create_app(runtime=rt), raise_server_exceptions=False)
        client.__enter__()
        # What create_app installed, again with the tests' clock and network; same function, same keys.
        install_channels(client.app, rt, clock=lambda: NOW, transports=transports)  # type: ignore[arg-type]
        opened.append((rt, client))
        return client

    yield runtime, start
    for rt, client in opened:
        client.app.state.payment_channel_clients.close()  # type: ignore[attr-defined]
        client.__exit__(None, None, None)
        rt.close()


def test_startup_builds_the_enabled_channels_and_leaves_out_those_missing_something(
    service_factory: Any, sandbox: WechatPaySandbox, alipay_keys: dict, caplog: pytest.LogCaptureFixture
) -> None:
    make_runtime, _ = service_factory
    rt = make_runtime(payment_channels="wechatpay,alipay,bank,card,withholding")
    wechat_keys(rt, sandbox)
    bank_keys(rt)
    imp(rt, "alipay", "alipay-public-key", pem(alipay_keys["old"].public_key()))  # but no app key
    with caplog.at_level(logging.ERROR, logger="sscard.payments.setup"):
        app = create_app(runtime=rt)
    channels = registry.current(app)
    assert channels.names() == ["bank", "card", "wechatpay", "withholding"]
    assert {channels.get(n).name for n in channels.names()} == set(channels.names())  # type: ignore[union-attr]
    assert app.state.payment_channel_clients.left_out == {"alipay": "no active app-key in keys (pay:alipay)"}
    (line,) = [r.getMessage() for r in caplog.records]
    assert "alipay is left out: no active app-key" in line
    app.state.payment_channel_clients.close()

    with TestClient(app, raise_server_exceptions=False) as client:
        # Left out: answered as our failure, so Alipay retries once the operator has imported the key.
        refused = client.post("/v1/payments/callbacks/alipay", content=b"a=b")
        assert refused.status_code == 503 and refused.json()["code"] == "FAIL"
        assert client.post("/v1/payments/callbacks/paypal", content=b"{}").status_code == 503


def test_missing_settings_leave_a_channel_out_and_no_channel_is_no_crash(
    service_factory: Any, sandbox: WechatPaySandbox, caplog: pytest.LogCaptureFixture
) -> None:
    make_runtime, _ = service_factory
    rt = make_runtime(payment_channels="wechatpay,bank", wechatpay_mchid="", bank_base_url="")
    wechat_keys(rt, sandbox)
    with caplog.at_level(logging.ERROR, logger="sscard.payments.setup"):
        app = create_app(runtime=rt)
    built = app.state.payment_channel_clients
    assert registry.current(app).names() == []
    assert built.left_out == {
        "wechatpay": "SSCARD_WECHATPAY_MCHID is not set",
        "bank": "SSCARD_BANK_BASE_URL is not set; no active signing-key and no bank-public-key in keys (pay:bank)",
    }
    assert len(caplog.records) == 2
    assert sandbox.describe()["apiv3_key"] not in caplog.text
    built.close()
    assert registry.current(create_app(runtime=make_runtime())).names() == []  # nothing enabled: nothing built


def test_a_wechatpay_payment_through_the_installed_adapter_and_its_callback(
    service_factory: Any, sandbox: WechatPaySandbox
) -> None:
    make_runtime, start = service_factory
    rt = make_runtime(payment_channels="wechatpay")
    wechat_keys(rt, sandbox)
    client = start(rt, transports={"wechatpay": Bridge(sandbox.app)})
    sandbox.sender = lambda url, headers, body: client.post(url, headers=headers, content=body).status_code
    adapter = registry.current(client.app).get("wechatpay")  # type: ignore[arg-type]
    assert adapter is not None

    order_no = new_order(rt, "wechatpay")
    expires = datetime.datetime.fromtimestamp(NOW + 3600, datetime.UTC)
    ref = PaymentOrderRef(
        order_no, AMOUNT, "养老保险 2025", expires, "http://testserver/v1/payments/callbacks/wechatpay"
    )
    started = adapter.create_payment(ref)
    assert started.method == "qr_code" and started.data["code_url"].startswith("weixin://")
    assert sandbox.trades[order_no].notify_url == "http://testserver/v1/payments/callbacks/wechatpay"

    sandbox.pay(order_no)
    assert [d.status for d in sandbox.deliveries] == [204]
    assert state(rt, order_no) == ("paid", PAID)
    assert adapter.query_payment(order_no).status == "paid"


def test_the_apiv3_switch_and_a_retired_platform_key_reach_the_running_service(
    service_factory: Any, sandbox: WechatPaySandbox
) -> None:
    make_runtime, start = service_factory
    rt = make_runtime(payment_channels="wechatpay", key_cache_seconds=0)
    kids = wechat_keys(rt, sandbox)
    client = start(rt, transports={"wechatpay": Bridge(sandbox.app)})
    sandbox.sender = lambda url, headers, body: client.post(url, headers=headers, content=body).status_code
    sandbox.max_attempts = 2
    adapter = registry.current(client.app).get("wechatpay")  # type: ignore[arg-type]
    assert adapter is not None
    expires = datetime.datetime.fromtimestamp(NOW + 3600, datetime.UTC)
    notify = "http://testserver/v1/payments/callbacks/wechatpay"

    # The merchant sets a new APIv3 key in the console: imported as next first, so both decrypt meanwhile.
    new_key = b"N3wApiV3KeyFromTheConsole0123456"
    imp(rt, "wechatpay", "apiv3-key", new_key)
    sandbox.apiv3_key = new_key
    first = new_order(rt, "wechatpay")
    adapter.create_payment(PaymentOrderRef(first, AMOUNT, "养老保险", expires, notify))
    sandbox.pay(first)
    assert sandbox.deliveries[-1].status == 204 and state(rt, first)[0] == "paid"

    # A key neither stored nor next: refused as undecryptable (400), retried by WeChat Pay, nothing applied.
    sandbox.apiv3_key = b"SomeoneElsesKey00000000000000000"
    second = new_order(rt, "wechatpay")
    adapter.create_payment(PaymentOrderRef(second, AMOUNT, "养老保险", expires, notify))
    sandbox.pay(second)
    assert [d.status for d in sandbox.deliveries[-2:]] == [400, 400]
    assert state(rt, second)[0] == "pending"

    # The platform public key is retired (the merchant keeps the certificate mode): its signatures stop verifying
    # in the running service at once.
    sandbox.apiv3_key = new_key
    with unit_of_work(rt.sessions) as session:
        ck.retire(session, kids["public"])
    third = new_order(rt, "wechatpay")
    sandbox.mode = "certificate"  # the API answer is signed with the certificate, which is still active
    adapter.create_payment(PaymentOrderRef(third, AMOUNT, "养老保险", expires, notify))
    sandbox.mode = "public_key"  # the notification with the retired public key
    sandbox.pay(third)
    assert [d.status for d in sandbox.deliveries[-2:]] == [401, 401]
    assert state(rt, third)[0] == "pending"


def test_alipay_callbacks_verify_under_either_public_key_during_a_rotation(
    service_factory: Any, alipay_keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    make_runtime, start = service_factory
    rt = make_runtime(payment_channels="alipay")
    imp(rt, "alipay", "app-key", pem(alipay_keys["app"]))
    old = imp(
        rt,
        "alipay",
        "alipay-public-key",
        base64.b64encode(
            alipay_keys["old"]
            .public_key()
            .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        ),
    )
    new = imp(rt, "alipay", "alipay-public-key", pem(alipay_keys["new"].public_key()))
    client = start(rt)
    url = "/v1/payments/callbacks/alipay"

    by_old, by_new = new_order(rt, "alipay"), new_order(rt, "alipay")
    assert client.post(url, content=ali_delivery(alipay_keys, by_old, signer="old")).text == "success"
    assert client.post(url, content=ali_delivery(alipay_keys, by_new, signer="new")).text == "success"
    assert state(rt, by_old)[0] == state(rt, by_new)[0] == "paid"
    forged = new_order(rt, "alipay")
    assert client.post(url, content=ali_delivery(alipay_keys, forged, signer="app")).text == "fail"

    with unit_of_work(rt.sessions) as session:
        ck.promote(session, new.kid)  # Alipay signs with the new key only now: the old one is retired
    late = new_order(rt, "alipay")
    assert client.post(url, content=ali_delivery(alipay_keys, late, signer="old")).text == "fail"
    assert client.post(url, content=ali_delivery(alipay_keys, late, signer="new")).text == "success"
    assert state(rt, forged)[0] == "pending" and state(rt, late)[0] == "paid"
    assert old.kid != new.kid


@pytest.mark.parametrize("mode", ["certificate", "public_key", "public_key_unknown"])
def test_the_platform_certificate_refresh_through_the_sandbox(
    service_factory: Any, sandbox: WechatPaySandbox, mode: str
) -> None:
    make_runtime, _ = service_factory
    rt = make_runtime()
    d = sandbox.describe()
    imp(rt, "wechatpay", "merchant-key", d["merchant_private_key_pem"].encode(), d["merchant_serial"])
    imp(rt, "wechatpay", "apiv3-key", d["apiv3_key"].encode())
    # "certificate": the answer is signed by the certificate it carries (a first download); "public_key": by the
    # platform public key we hold; "public_key_unknown": by a PUB_KEY_ID we do not hold, which proves nothing.
    sandbox.mode = "certificate" if mode == "certificate" else "public_key"
    if mode == "public_key":
        imp(rt, "wechatpay", "platform-public-key", d["platform_public_key_pem"].encode(), d["platform_public_key_id"])

    def refresh(http: httpx.Client) -> ck.RefreshReport:
        return ck.refresh_wechatpay_certificates(
            rt.sessions, rt.sealer, http, base_url="https://api.mch.weixin.qq.com", mchid=d["mchid"], clock=lambda: NOW
        )

    with httpx.Client(transport=Bridge(sandbox.app)) as http:
        if mode == "public_key_unknown":
            with pytest.raises(ck.RefreshError, match="signature does not hold"):
                refresh(http)
            assert [k for k in _kids(rt) if k.startswith("wxc-")] == []
            return
        assert refresh(http).added == [f"wxc-{sandbox.certificate_serial}"]
        assert refresh(http).added == []
        sandbox.fail_next(1, "bad_signature")
        with pytest.raises(ck.RefreshError):
            refresh(http)
        sandbox.fail_next(1, "error")
        with pytest.raises(ck.RefreshError, match="HTTP 500"):
            refresh(http)
    assert ("GET", "/v3/certificates") in sandbox.requests
    assert f"wxc-{sandbox.certificate_serial}" in _kids(rt)


def _kids(rt: Runtime) -> list[str]:
    with unit_of_work(rt.sessions) as session:
        return [k.kid for k in ck.list_keys(session, rt.sealer, "wechatpay")]


def test_keys_sealed_under_another_kek_leave_the_channel_out_without_a_crash(
    service_factory: Any, sandbox: WechatPaySandbox, caplog: pytest.LogCaptureFixture
) -> None:
    make_runtime, _ = service_factory
    wechat_keys(make_runtime(), sandbox)
    stranger = make_runtime(payment_channels="wechatpay", kek=Fernet.generate_key().decode())
    with caplog.at_level(logging.ERROR, logger="sscard.payments.setup"):
        app = create_app(runtime=stranger)
    assert registry.current(app).names() == []
    assert app.state.payment_channel_clients.left_out == {"wechatpay": "its keys cannot be read (SealError)"}
    assert "wechatpay is left out" in caplog.text


def test_a_channel_whose_keys_went_away_while_running_answers_retry_later_not_500(
    service_factory: Any, alipay_keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    """Keys can stop being usable after start-up (a platform certificate past its end, a key row lost in a restore):
    the channel is then unavailable, as if it did not answer. Its callbacks are answered 503 (the channel retries,
    nothing is recorded) and a payment start is ChannelUnavailable (the API's 503), never an unhandled error."""
    make_runtime, start = service_factory
    rt = make_runtime(payment_channels="alipay", key_cache_seconds=0)
    imp(rt, "alipay", "app-key", pem(alipay_keys["app"]))
    public = imp(rt, "alipay", "alipay-public-key", pem(alipay_keys["old"].public_key()))
    client = start(rt)
    adapter = registry.current(client.app).get("alipay")  # type: ignore[arg-type]
    assert adapter is not None
    order_no = new_order(rt, "alipay")
    with unit_of_work(rt.sessions) as session:  # the only public key of Alipay is no longer there
        record = session.get(KeyRecord, public.kid)
        assert record is not None
        session.delete(record)

    response = client.post("/v1/payments/callbacks/alipay", content=ali_delivery(alipay_keys, order_no, signer="old"))
    assert response.status_code == 503 and response.text != "success"
    assert state(rt, order_no) == ("pending", {})
    expires = datetime.datetime.fromtimestamp(NOW + 3600, datetime.UTC)
    with pytest.raises(ChannelUnavailable):
        checkout.start(adapter, PaymentOrderRef(order_no, AMOUNT, "养老保险", expires, ""), rt.sessions)
    assert state(rt, order_no) == ("pending", {})
