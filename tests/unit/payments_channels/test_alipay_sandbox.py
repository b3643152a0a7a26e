"""The Alipay sandbox run alone (`python -m payments.sandbox.alipay --port N`): it prints its configuration as JSON
and the adapter works against it over a real socket."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from payments.channels import alipay as ali
from payments.channels.alipay_adapter import AlipayAdapter, AlipayConfig
from payments.channels.base import PaymentOrderRef, TradeStatus

PORT = 18111  # this role's range: 18110-18119
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def standalone() -> Iterator[dict[str, str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "payments.sandbox.alipay", "--port", str(PORT)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        config = json.loads(process.stdout.readline())
        for _ in range(200):  # until uvicorn listens (a wait, not an assertion on time)
            try:
                httpx.get(f"http://127.0.0.1:{PORT}/downloadBillFile.resource", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        yield config
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_sandbox_runs_alone(standalone: dict[str, str]) -> None:
    assert standalone["gateway_url"] == f"http://127.0.0.1:{PORT}/gateway.do"
    key = serialization.load_pem_private_key(standalone["app_private_key"].encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    with httpx.Client(timeout=5) as http:
        adapter = AlipayAdapter(
            AlipayConfig(standalone["app_id"], ali.load_public_key(standalone["alipay_public_key"])),
            app_private_key=key,
            gateway_url=standalone["gateway_url"],
            notify_url="http://127.0.0.1:18112/nobody-listens",  # the notifications fail; the query still knows
            http=http,
        )
        expires = datetime.now(UTC) + timedelta(minutes=15)
        start = adapter.create_payment(PaymentOrderRef("P1", 12000, "养老", expires, ""))
        assert start.data["code_url"].startswith("https://qr.alipay.com/")
        assert adapter.query_payment("P1").status is TradeStatus.NOT_FOUND
        assert http.post(f"http://127.0.0.1:{PORT}/_sandbox/pay/P1").status_code == 204
        assert adapter.query_payment("P1").status is TradeStatus.PAID
        assert http.post(f"http://127.0.0.1:{PORT}/_sandbox/pay/P1").status_code == 409
        assert http.post(f"http://127.0.0.1:{PORT}/_sandbox/nonesuch/P1").status_code == 404
        assert http.post(f"http://127.0.0.1:{PORT}/_sandbox/finish/P1").status_code == 204
        assert adapter.query_payment("P1").raw_state == "TRADE_FINISHED"
        adapter.create_payment(PaymentOrderRef("P2", 12000, "养老", expires, ""))
        assert http.post(f"http://127.0.0.1:{PORT}/_sandbox/scan/P2").status_code == 204
        assert adapter.query_payment("P2").status is TradeStatus.UNPAID
        assert http.post(f"http://127.0.0.1:{PORT}/_sandbox/close/P2").status_code == 204
        assert adapter.query_payment("P2").status is TradeStatus.CLOSED
        assert http.post(f"http://127.0.0.1:{PORT}/_sandbox/scan/P3").status_code == 409
