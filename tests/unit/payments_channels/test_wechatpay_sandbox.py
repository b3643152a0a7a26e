"""The WeChat Pay sandbox run on its own (`python -m payments.sandbox.wechatpay --port N`) over a real socket: our
adapter pointed at it with nothing but the JSON it prints, and the wechatpayv3 SDK's own client (its request
signing, its response verification in both key modes, its platform certificate download and decryption)."""

from __future__ import annotations

import datetime
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import wechatpayv3.core
from cryptography.hazmat.primitives import serialization
from wechatpayv3 import WeChatPay, WeChatPayType

from payments.channels import wechatpay as wx
from payments.channels.base import PaymentOrderRef, TradeStatus
from payments.channels.wechatpay_adapter import WechatPayAdapter, WechatPayConfig, WechatPayMerchant

ROOT = Path(__file__).resolve().parents[3]


def _wait_for(port: int, proc: subprocess.Popen[str]) -> None:
    # Readiness, not timing: poll until the port accepts or the process has died.
    for _ in range(200):
        if proc.poll() is not None:
            raise RuntimeError(f"the sandbox exited: {proc.stderr.read() if proc.stderr else ''}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("the sandbox did not start listening")


def _start(port: int, mode: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "payments.sandbox.wechatpay", "--port", str(port), "--mode", mode],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    described = json.loads(proc.stdout.readline())
    _wait_for(port, proc)
    return proc, described


@pytest.fixture(scope="module")
def server() -> Iterator[dict[str, Any]]:
    proc, described = _start(18100, "public_key")
    yield described
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def cert_server() -> Iterator[dict[str, Any]]:
    proc, described = _start(18101, "certificate")
    yield described
    proc.terminate()
    proc.wait(timeout=10)


def adapter_for(described: dict[str, Any]) -> WechatPayAdapter:
    keys = wx.PlatformKeys.of(
        wx.PlatformKeys.certificate_entry(described["platform_certificate_pem"].encode()),
        wx.PlatformKeys.public_key_entry(
            described["platform_public_key_id"], described["platform_public_key_pem"].encode()
        ),
    )
    config = WechatPayConfig(
        mchid=described["mchid"],
        appid=described["appid"],
        platform_keys=keys,
        apiv3_key=described["apiv3_key"].encode(),
    )
    merchant = WechatPayMerchant(
        mchid=described["mchid"],
        appid=described["appid"],
        serial_no=described["merchant_serial"],
        private_key=serialization.load_pem_private_key(described["merchant_private_key_pem"].encode(), None),  # type: ignore[arg-type]
        notify_url="http://127.0.0.1:18109/v1/payments/callbacks/wechatpay",  # nobody listens: retried, then dropped
        api_base=described["api_base"],
    )
    return WechatPayAdapter(config, merchant=merchant, http=httpx.Client(timeout=5.0))


def test_the_printed_config_is_enough_to_pay_over_a_socket(server: dict[str, Any]) -> None:
    adapter = adapter_for(server)
    order_no = "SO" + str(time.time_ns())[-20:]
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=30)
    start = adapter.create_payment(PaymentOrderRef(order_no, 12000, "城乡居民养老保险", expires, ""))
    assert start.data["code_url"].startswith("weixin://")
    assert adapter.query_payment(order_no).status is TradeStatus.UNPAID
    # The standalone sandbox's driver route: the payer pays (the notification goes nowhere and is retried).
    assert httpx.post(f"{server['api_base']}/sandbox/pay/{order_no}", timeout=30).status_code == 200
    assert adapter.query_payment(order_no).status is TradeStatus.PAID


def _sdk(described: dict[str, Any], monkeypatch: pytest.MonkeyPatch, *, public_key: bool) -> WeChatPay:
    # The SDK has no base-URL setting: its Core sets _gate_way to the real API in __init__ (and, in certificate
    # mode, downloads the certificates from there at once), so a Core that keeps the sandbox's origin is swapped in.
    class SandboxCore(wechatpayv3.core.Core):
        def __setattr__(self, name: str, value: Any) -> None:
            object.__setattr__(self, name, described["api_base"] if name == "_gate_way" else value)

    monkeypatch.setattr(wechatpayv3.core, "Core", SandboxCore)
    extra = (
        {"public_key": described["platform_public_key_pem"], "public_key_id": described["platform_public_key_id"]}
        if public_key
        else {}
    )
    return WeChatPay(
        wechatpay_type=WeChatPayType.NATIVE,
        mchid=described["mchid"],
        private_key=described["merchant_private_key_pem"],
        cert_serial_no=described["merchant_serial"],
        apiv3_key=described["apiv3_key"],
        appid=described["appid"],
        notify_url="http://127.0.0.1:18109/cb",
        **extra,
    )


@pytest.mark.parametrize("mode", ["public_key", "certificate"])
def test_the_sdks_client_talks_to_the_sandbox(
    server: dict[str, Any], cert_server: dict[str, Any], monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    described = server if mode == "public_key" else cert_server
    # In certificate mode the SDK first downloads /v3/certificates and decrypts it with the APIv3 key; every answer
    # is then verified by the SDK (it raises on a bad signature), every request signed by it.
    client = _sdk(described, monkeypatch, public_key=mode == "public_key")
    order_no = "SO" + str(time.time_ns())[-20:]
    code, message = client.pay(description="城乡居民养老保险", out_trade_no=order_no, amount={"total": 12000})
    assert code == 200, message
    assert json.loads(message)["code_url"].startswith("weixin://")
    code, message = client.query(out_trade_no=order_no)
    assert code == 200 and json.loads(message)["trade_state"] == "NOTPAY"
    code, _ = client.close(out_trade_no=order_no)
    assert code == 204
