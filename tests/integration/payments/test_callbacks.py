"""The callbacks inbox over HTTP, on both backends: callbacks built by hand from the channels' specifications (the
helpers of tests/unit/payments_channels/), recorded once, applied through the order accounting, acknowledged in
each channel's exact form."""

from __future__ import annotations

import datetime
import json
import logging
import secrets
import threading
from typing import Any

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient
from sqlalchemy import select

from authsvc.database import unit_of_work
from authsvc.runtime import Runtime
from payments.callbacks.config import AlipayConfig, CallbackConfig, WechatPayConfig, configure
from payments.callbacks.models import PaymentCallback
from payments.channels import alipay as ali
from payments.channels import wechatpay as wx
from payments.ledger.check import check
from payments.ledger.service import balances
from payments.orders import repository
from tests.integration.payments.support import AMOUNT, new_order
from tests.integration.test_cli import run as run_cli
from tests.unit.payments_channels.test_alipay import APP_ID, bare_public, notify_body, resign
from tests.unit.payments_channels.test_wechatpay import APIV3_KEY, CERT_SERIAL, PUB_KEY_ID, TRANSACTION, encrypt
from tests.unit.payments_channels.test_wechatpay import headers as wx_headers

NOW = 1_795_000_000  # the service's clock in these tests (config.clock): no test depends on the real time
MCHID, APPID = TRANSACTION["mchid"], TRANSACTION["appid"]
WX, ALI = "/v1/payments/callbacks/wechatpay", "/v1/payments/callbacks/alipay"


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def signers() -> dict[str, rsa.RSAPrivateKey]:
    return {CERT_SERIAL: _rsa(), PUB_KEY_ID: _rsa(), "alipay": _rsa(), "forger": _rsa()}


def platform_keys(signers: dict[str, rsa.RSAPrivateKey]) -> wx.PlatformKeys:
    # Both WeChat Pay verification modes at once: a platform certificate and a platform public key.
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay.com Root CA test")])
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(signers[CERT_SERIAL].public_key())
        .serial_number(int(CERT_SERIAL, 16))
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=1825))
        .sign(signers[CERT_SERIAL], hashes.SHA256())
    )
    pub = (
        signers[PUB_KEY_ID]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return wx.PlatformKeys.of(
        wx.PlatformKeys.certificate_entry(cert.public_bytes(serialization.Encoding.PEM)),
        wx.PlatformKeys.public_key_entry(PUB_KEY_ID, pub),
    )


@pytest.fixture
def service(client: TestClient, signers: dict[str, rsa.RSAPrivateKey]) -> TestClient:
    configure(
        client.app,  # type: ignore[arg-type]
        CallbackConfig(
            wechatpay=WechatPayConfig(
                mchid=MCHID, appid=APPID, platform_keys=platform_keys(signers), apiv3_key=APIV3_KEY
            ),
            alipay=AlipayConfig(app_id=APP_ID, public_key=ali.load_public_key(bare_public(signers["alipay"]))),
            clock=lambda: NOW,
        ),
    )
    return client


# --- building deliveries by hand -----------------------------------------------------------------------------


def wx_delivery(
    signers: dict[str, rsa.RSAPrivateKey],
    order_no: str,
    *,
    state: str = "SUCCESS",
    total: int = AMOUNT,
    transaction_id: str = "4200001234202611280000000001",
    serial: str = PUB_KEY_ID,
    signer: str | None = None,
    ts: int = NOW,
) -> tuple[dict[str, str], bytes]:
    """One delivery as WeChat Pay sends it: a fresh nonce and signature each time, even for the same event."""
    tx: dict[str, Any] = {
        **TRANSACTION,
        "out_trade_no": order_no,
        "transaction_id": transaction_id,
        "trade_state": state,
        "amount": {"total": total, "payer_total": total, "currency": "CNY", "payer_currency": "CNY"},
    }
    body = {
        "id": "EV-" + secrets.token_hex(8),
        "create_time": "2026-11-28T21:30:00+08:00",
        "resource_type": "encrypt-resource",
        "event_type": "TRANSACTION.SUCCESS" if state == "SUCCESS" else "TRANSACTION.CLOSED",
        "summary": "支付成功",
        "resource": encrypt(json.dumps(tx, ensure_ascii=False).encode()),
    }
    raw = json.dumps(body, ensure_ascii=False, indent=4).encode()
    key = signers[signer or serial]
    return wx_headers(key, serial, raw, ts=ts, nonce=secrets.token_hex(16).upper()), raw


def ali_delivery(
    signers: dict[str, rsa.RSAPrivateKey],
    order_no: str,
    *,
    status: str = "TRADE_SUCCESS",
    total: str = "120.00",
    notify_id: str | None = None,
    sent: int = NOW,
    signer: str = "alipay",
) -> bytes:
    notify_time = ali.format_time(datetime.datetime.fromtimestamp(sent, datetime.UTC))
    params = resign(
        signers[signer],
        out_trade_no=order_no,
        trade_status=status,
        total_amount=total,
        receipt_amount=total,
        buyer_pay_amount=total,
        invoice_amount=total,
        notify_time=notify_time,
        notify_id=notify_id or secrets.token_hex(16),
    )
    return notify_body(params)


# --- reading the outcome -------------------------------------------------------------------------------------


def inbox(runtime: Runtime) -> list[tuple[str, str, str]]:
    with unit_of_work(runtime.sessions) as db:
        rows = db.scalars(select(PaymentCallback).order_by(PaymentCallback.id))
        return [(r.channel, r.order_ref, r.outcome) for r in rows]


def state(runtime: Runtime, order_no: str) -> tuple[str, dict[str, int]]:
    with unit_of_work(runtime.sessions) as db:
        order = repository.order_by_no(db, order_no)
        assert check(db).ok
        return (order.state if order else "none"), balances(db)


PAID = {"clearing:wechatpay": AMOUNT, "fund:pension:110000": AMOUNT}


def assert_wx_refused(response: Any, status: int) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["code"] == "FAIL" and response.json()["message"]


# --- WeChat Pay ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("serial", [CERT_SERIAL, PUB_KEY_ID])
def test_wechatpay_paid_once(service: TestClient, runtime: Runtime, signers: dict, serial: str) -> None:
    order_no = new_order(runtime, "wechatpay")
    for _ in range(2):  # WeChat Pay delivers again until it sees our answer: a new nonce, the same transaction
        h, body = wx_delivery(signers, order_no, serial=serial)
        response = service.post(WX, content=body, headers=h)
        assert response.status_code == 204 and response.content == b""
    assert state(runtime, order_no) == ("paid", PAID)
    assert inbox(runtime) == [("wechatpay", order_no, "applied")]
    with unit_of_work(runtime.sessions) as db:
        row = db.scalars(select(PaymentCallback)).one()
        assert row.event_id == "4200001234202611280000000001:SUCCESS" and row.amount_fen == AMOUNT
        assert row.payload["resource"]["out_trade_no"] == order_no  # the decrypted content, kept for review
        assert APIV3_KEY.decode() not in json.dumps(row.payload)


def test_concurrent_duplicates_post_once(
    service: TestClient, runtime: Runtime, signers: dict, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sscard.payments.callbacks")
    order_no = new_order(runtime, "wechatpay")
    deliveries = [wx_delivery(signers, order_no) for _ in range(2)]
    barrier = threading.Barrier(2)
    statuses: list[int] = []
    errors: list[BaseException] = []

    def deliver(h: dict[str, str], body: bytes) -> None:
        try:
            barrier.wait()
            statuses.append(service.post(WX, content=body, headers=h).status_code)
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=deliver, args=d) for d in deliveries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and statuses == [204, 204]
    # The second delivery was stopped by the inbox's unique event id, whichever of the two came first.
    assert sum("delivered again" in r.getMessage() for r in caplog.records) == 1
    assert state(runtime, order_no) == ("paid", PAID)
    assert inbox(runtime) == [("wechatpay", order_no, "applied")]
    with unit_of_work(runtime.sessions) as db:
        assert check(db).entries == 1


@pytest.mark.parametrize("late", ["PAYERROR", "CLOSED", "REVOKED"])
def test_a_late_failure_after_paid_is_a_conflict(
    service: TestClient, runtime: Runtime, signers: dict, late: str
) -> None:
    order_no = new_order(runtime, "wechatpay")
    assert service.post(WX, content=(d := wx_delivery(signers, order_no))[1], headers=d[0]).status_code == 204
    h, body = wx_delivery(signers, order_no, state=late)
    assert service.post(WX, content=body, headers=h).status_code == 204  # acknowledged: retrying changes nothing
    assert state(runtime, order_no) == ("paid", PAID)
    assert inbox(runtime) == [("wechatpay", order_no, "applied"), ("wechatpay", order_no, "conflict")]


def test_a_failure_before_payment_fails_the_order(service: TestClient, runtime: Runtime, signers: dict) -> None:
    order_no = new_order(runtime, "wechatpay")
    h, body = wx_delivery(signers, order_no, state="PAYERROR")
    assert service.post(WX, content=body, headers=h).status_code == 204
    assert state(runtime, order_no) == ("failed", {})
    assert inbox(runtime) == [("wechatpay", order_no, "applied")]


def test_forged_replayed_and_stale_are_refused(service: TestClient, runtime: Runtime, signers: dict) -> None:
    order_no = new_order(runtime, "wechatpay")
    forged = wx_delivery(signers, order_no, signer="forger")
    assert_wx_refused(service.post(WX, content=forged[1], headers=forged[0]), 401)
    unknown_serial = wx_delivery(signers, order_no, serial="PUB_KEY_ID_0000", signer="forger")
    assert_wx_refused(service.post(WX, content=unknown_serial[1], headers=unknown_serial[0]), 401)
    for ts in (NOW - 301, NOW + 31):  # past-only window (5 minutes), a small skew ahead
        stale = wx_delivery(signers, order_no, ts=ts)
        assert_wx_refused(service.post(WX, content=stale[1], headers=stale[0]), 401)
    h, body = wx_delivery(signers, order_no, transaction_id="4200009999")
    tampered = body.replace(b"TRANSACTION.SUCCESS", b"TRANSACTION.CLOSED")
    assert_wx_refused(service.post(WX, content=tampered, headers=h), 401)
    assert state(runtime, order_no) == ("pending", {}) and inbox(runtime) == []

    assert service.post(WX, content=body, headers=h).status_code == 204
    replay = service.post(WX, content=body, headers=h)  # the same delivery again, inside the window
    assert_wx_refused(replay, 401)
    assert replay.json()["message"] == "nonce already used"
    assert inbox(runtime) == [("wechatpay", order_no, "applied")]


def test_amount_mismatch_is_held_not_paid(service: TestClient, runtime: Runtime, signers: dict) -> None:
    order_no = new_order(runtime, "wechatpay")
    h, body = wx_delivery(signers, order_no, total=AMOUNT - 1)
    assert service.post(WX, content=body, headers=h).status_code == 204
    # Not paid, nothing for the fund: what the channel took waits in suspense for review.
    assert state(runtime, order_no) == ("pending", {"clearing:wechatpay": AMOUNT - 1, "suspense:wechatpay": AMOUNT - 1})
    assert inbox(runtime) == [("wechatpay", order_no, "held_amount_mismatch")]


def test_unknown_order_is_kept(service: TestClient, runtime: Runtime, signers: dict) -> None:
    h, body = wx_delivery(signers, "SO000000000000000000000000")
    assert service.post(WX, content=body, headers=h).status_code == 204
    assert inbox(runtime) == [("wechatpay", "SO000000000000000000000000", "unknown_order")]
    assert state(runtime, "SO000000000000000000000000")[1] == {
        "clearing:wechatpay": AMOUNT,
        "suspense:wechatpay": AMOUNT,
    }


@pytest.mark.parametrize(
    "body, drop",
    [(b"", None), (b"not json", None), (b"{}", None), (b"\xff" * 100, None), (b"{}", "Wechatpay-Signature")],
)
def test_bad_input_is_a_4xx_never_a_500(service: TestClient, body: bytes, drop: str | None) -> None:
    h = wx_headers(_rsa(), PUB_KEY_ID, body)
    if drop:
        del h[drop]
    response = service.post(WX, content=body, headers=h)
    assert 400 <= response.status_code < 500 and response.json()["code"] == "FAIL"


def test_unconfigured_channel_asks_for_a_retry(client: TestClient) -> None:
    configure(client.app, CallbackConfig())  # type: ignore[arg-type]
    assert_wx_refused(client.post(WX, content=b"{}"), 503)
    # Alipay retries anything but the body `success`; the answer is the same for a channel this service never had.
    for path in (ALI, "/v1/payments/callbacks/paypal"):
        response = client.post(path, content=b"a=b")
        assert response.status_code == 503 and response.content != b"success"


# --- Alipay ----------------------------------------------------------------------------------------------------


def test_alipay_paid_then_finished(service: TestClient, runtime: Runtime, signers: dict) -> None:
    order_no = new_order(runtime, "alipay")
    body = ali_delivery(signers, order_no)
    for _ in range(2):  # the same notification delivered twice: the same notify_id
        response = service.post(ALI, content=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert response.status_code == 200 and response.content == b"success"
    finished = ali_delivery(signers, order_no, status="TRADE_FINISHED")
    assert service.post(ALI, content=finished).content == b"success"
    assert state(runtime, order_no) == ("paid", {"clearing:alipay": AMOUNT, "fund:pension:110000": AMOUNT})
    assert inbox(runtime) == [("alipay", order_no, "applied"), ("alipay", order_no, "duplicate")]


def test_alipay_concurrent_duplicates_post_once(service: TestClient, runtime: Runtime, signers: dict) -> None:
    order_no = new_order(runtime, "alipay")
    body = ali_delivery(signers, order_no)
    barrier = threading.Barrier(2)
    answers: list[bytes] = []

    def deliver() -> None:
        barrier.wait()
        answers.append(service.post(ALI, content=body).content)

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [b"success", b"success"]
    assert inbox(runtime) == [("alipay", order_no, "applied")]
    with unit_of_work(runtime.sessions) as db:
        assert check(db).entries == 1


def test_two_paying_events_of_one_order_concurrently_post_once(
    service: TestClient, runtime: Runtime, signers: dict
) -> None:
    # Two different event ids (TRADE_SUCCESS and TRADE_FINISHED) both pass the inbox; the order row lock in the
    # accounting serialises them, and the second finds the order paid.
    order_no = new_order(runtime, "alipay")
    bodies = [ali_delivery(signers, order_no), ali_delivery(signers, order_no, status="TRADE_FINISHED")]
    barrier = threading.Barrier(2)
    answers: list[bytes] = []

    def deliver(body: bytes) -> None:
        barrier.wait()
        answers.append(service.post(ALI, content=body).content)

    threads = [threading.Thread(target=deliver, args=(b,)) for b in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [b"success", b"success"]
    assert sorted(outcome for _, _, outcome in inbox(runtime)) == ["applied", "duplicate"]
    assert state(runtime, order_no) == ("paid", {"clearing:alipay": AMOUNT, "fund:pension:110000": AMOUNT})


def test_alipay_refusals_answer_fail(service: TestClient, runtime: Runtime, signers: dict) -> None:
    order_no = new_order(runtime, "alipay")
    for body in (
        ali_delivery(signers, order_no, signer="forger"),
        ali_delivery(signers, order_no, sent=NOW - 901),  # stale: past-only window of 15 minutes
        ali_delivery(signers, order_no, sent=NOW + 61),
        ali_delivery(signers, order_no).replace(b"total_amount=120.00", b"total_amount=1.20"),  # tampered
        b"",
        b"%%%",
        b"\xff\xfe",
    ):
        response = service.post(ALI, content=body)
        assert response.status_code == 200 and response.content == b"fail"
    assert state(runtime, order_no) == ("pending", {}) and inbox(runtime) == []


def test_alipay_amount_mismatch_and_late_close(service: TestClient, runtime: Runtime, signers: dict) -> None:
    held, paid = new_order(runtime, "alipay"), new_order(runtime, "alipay")
    assert service.post(ALI, content=ali_delivery(signers, held, total="1.20")).content == b"success"
    assert service.post(ALI, content=ali_delivery(signers, paid)).content == b"success"
    assert service.post(ALI, content=ali_delivery(signers, paid, status="TRADE_CLOSED")).content == b"success"
    assert state(runtime, held) == (
        "pending",
        {"clearing:alipay": AMOUNT + 120, "suspense:alipay": 120, "fund:pension:110000": AMOUNT},
    )
    assert state(runtime, paid)[0] == "paid"
    assert inbox(runtime) == [
        ("alipay", held, "held_amount_mismatch"),
        ("alipay", paid, "applied"),
        ("alipay", paid, "conflict"),
    ]


def test_a_charge_through_another_channel_is_not_applied(service: TestClient, runtime: Runtime, signers: dict) -> None:
    order_no = new_order(runtime, "alipay")
    h, body = wx_delivery(signers, order_no)
    assert service.post(WX, content=body, headers=h).status_code == 204
    assert state(runtime, order_no)[0] == "pending"
    assert inbox(runtime) == [("wechatpay", order_no, "conflict")]


# --- review ----------------------------------------------------------------------------------------------------


def test_review_lists_what_waits_for_a_person(
    service: TestClient, cli_env: Runtime, signers: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(capsys, "payments", "review")[0] == 0  # nothing waits: monitoring stays quiet
    held_order, paid_order = new_order(cli_env, "wechatpay"), new_order(cli_env, "wechatpay")
    for headers, body in (
        wx_delivery(signers, held_order, total=AMOUNT + 1, transaction_id="4200000000000000000000000001"),
        wx_delivery(signers, "NO-SUCH-ORDER-1", transaction_id="4200000000000000000000000002"),
        wx_delivery(signers, paid_order, transaction_id="4200000000000000000000000003"),
    ):
        assert service.post(WX, content=body, headers=headers).status_code == 204
    code, out, _ = run_cli(capsys, "payments", "review")
    report = json.loads(out)
    assert code == 1
    assert report["totals"] == [
        {"channel": "wechatpay", "outcome": "held_amount_mismatch", "callbacks": 1, "amount_fen": AMOUNT + 1},
        {"channel": "wechatpay", "outcome": "unknown_order", "callbacks": 1, "amount_fen": AMOUNT},
    ]
    assert {row["order_ref"] for row in report["callbacks"]} == {held_order, "NO-SUCH-ORDER-1"}
    assert all("payload" not in row for row in report["callbacks"])
    assert run_cli(capsys, "payments", "review", "--channel", "alipay")[0] == 0


def test_a_store_outage_asks_for_a_retry_and_records_nothing(
    service: TestClient, runtime: Runtime, signers: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the shared store the nonce cannot be spent, so a replay could not be told apart: WeChat Pay gets its
    own FAIL answer with a 5xx (it retries), nothing is recorded, and the retry after the outage pays once."""
    order_no = new_order(runtime, "wechatpay")
    headers, body = wx_delivery(signers, order_no)

    def down(*_: object) -> bool:
        raise redis.ConnectionError("store down")

    with monkeypatch.context() as patched:
        patched.setattr(runtime.store, "add", down)
        assert_wx_refused(service.post(WX, content=body, headers=headers), 500)
    assert state(runtime, order_no) == ("pending", {}) and inbox(runtime) == []
    assert service.post(WX, content=body, headers=headers).status_code == 204
    assert state(runtime, order_no)[0] == "paid"
