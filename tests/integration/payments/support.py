"""Helpers shared by the payments integration tests: an order made straight through the accounting (as starting its
payment would leave it), what the ledger and the callbacks inbox hold, and a refund requested and sent as the
refunds API does."""

from __future__ import annotations

import datetime
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from authsvc.database import unit_of_work
from authsvc.runtime import Runtime
from payments.callbacks.models import PaymentCallback
from payments.channels import registry
from payments.channels.base import ChannelAdapter, PaymentOrderRef
from payments.channels.wechatpay_adapter import WechatPayAdapter, WechatPayConfig, WechatPayMerchant
from payments.ledger.check import check
from payments.ledger.service import balances
from payments.orders import accounting, repository
from payments.orders.domain import InsuranceType, OrderSpec, PayerKind, Tier, TierTable, validate
from payments.refunds import service as refunds
from payments.sandbox.wechatpay import WechatPaySandbox

AMOUNT = 12000
SSN = "110105199003072813"
TIERS = TierTable({(InsuranceType.PENSION, "110000", 2025): Tier(monthly=False, choices=frozenset({AMOUNT}))})
# Any JSON value, for bodies of the APIs' Hypothesis tests.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=8,
)


def new_order(runtime: Runtime, channel: str, *, submit: bool = True, payer: str = "subject-1") -> str:
    """A citizen's 2025 pension order of AMOUNT for `channel`, submitted (pending) as after its payment started, or
    left created (`submit=False`)."""
    spec = OrderSpec(PayerKind.CITIZEN, payer, SSN, InsuranceType.PENSION, ("2025",), AMOUNT, "110000", channel)
    with unit_of_work(runtime.sessions) as db:
        order_no = repository.add_order(db, validate(spec, TIERS)).order_no
        if submit:
            accounting.submit(db, order_no)
    return order_no


def started_order(runtime: Runtime, adapter: ChannelAdapter, *, now: float, notify_url: str = "") -> str:
    """A pending order of the adapter's channel whose payment the adapter started, expiring half an hour after
    `now`."""
    order_no = new_order(runtime, adapter.name)
    expires = datetime.datetime.fromtimestamp(now + 1800, datetime.UTC)
    adapter.create_payment(PaymentOrderRef(order_no, AMOUNT, "城乡居民养老保险", expires, notify_url))
    return order_no


def money(db: Session) -> dict[str, int]:
    """The ledger's non-zero balances (an account whose postings cancel out is left out)."""
    return {account: fen for account, fen in balances(db).items() if fen}


def ledger(runtime: Runtime) -> dict[str, int]:
    """The ledger's non-zero balances, the ledger checked first."""
    with unit_of_work(runtime.sessions) as db:
        report = check(db)
        assert report.ok, report
        return money(db)


def order_and_money(runtime: Runtime, order_no: str) -> tuple[str, dict[str, int]]:
    """The order's state ("none" without the order) and the ledger's non-zero balances, the ledger checked first."""
    with unit_of_work(runtime.sessions) as db:
        order = repository.order_by_no(db, order_no)
        report = check(db)
        assert report.ok, report
        return (order.state if order else "none"), money(db)


def inbox(runtime: Runtime) -> list[tuple[str, str]]:
    """Every inbox row's channel state and outcome, oldest first."""
    with unit_of_work(runtime.sessions) as db:
        return [(r.channel_state, r.outcome) for r in db.scalars(select(PaymentCallback).order_by(PaymentCallback.id))]


def refund_state(runtime: Runtime, refund_no: str) -> str:
    with unit_of_work(runtime.sessions) as db:
        refund = repository.refund_by_no(db, refund_no)
        assert refund is not None
        return refund.state


def send_refund(runtime: Runtime, client: TestClient, order_no: str, refund_no: str, amount: int) -> str:
    """Request a refund through the accounting, send it to the order's channel installed on the app as the refunds
    API does after its commit, and return the refund's state after the channel's answer."""
    with unit_of_work(runtime.sessions) as db:
        accounting.request_refund(db, order_no, refund_no, amount)
    refunds.send(runtime, registry.current(client.app), refund_no)  # type: ignore[arg-type]
    return refund_state(runtime, refund_no)


def wechatpay_sandbox(client: TestClient, merchant_key: rsa.RSAPrivateKey, *, now: float) -> WechatPaySandbox:
    """A WeChat Pay sandbox whose notifications are posted into the service's callback route."""

    def into_the_service(url: str, headers: dict[str, str], body: bytes) -> int:
        return client.post(urlsplit(url).path, content=body, headers=headers).status_code

    return WechatPaySandbox(merchant_private_key=merchant_key, clock=lambda: now, sender=into_the_service)


def wechatpay_adapter(client: TestClient, sandbox: WechatPaySandbox, *, now: float) -> WechatPayAdapter:
    """The full WeChat Pay adapter talking to `sandbox` over HTTP, installed as the service's wechatpay channel."""
    assert sandbox.merchant_private_key is not None
    config = WechatPayConfig(
        mchid=sandbox.mchid, appid=sandbox.appid, platform_keys=sandbox.platform_keys(), apiv3_key=sandbox.apiv3_key
    )
    merchant = WechatPayMerchant(
        mchid=sandbox.mchid,
        appid=sandbox.appid,
        serial_no=sandbox.merchant_serial,
        private_key=sandbox.merchant_private_key,
        notify_url="http://testserver/v1/payments/callbacks/wechatpay",
        api_base="http://testserver",
    )
    adapter = WechatPayAdapter(config, merchant=merchant, http=TestClient(sandbox.app), clock=lambda: now)
    registry.install(client.app, registry.Channels({"wechatpay": adapter}, clock=lambda: now))  # type: ignore[dict-item]
    return adapter
