"""The recovery sweep on both backends: a charge the channel confirms is never left unpaid, an unpaid order is closed
at the channel first, and nothing is concluded without the channel's answer.

Most tests use `SandboxChannel`, a double of the adapter interface with the sandboxes' faults (the payer pays and
the callback never comes, the channel does not answer, the payer pays just as we close) that can also script what
the sandboxes cannot (a confused adapter, a decline); the last ones run the real WeChat Pay and Alipay adapters
against their sandboxes (payments/sandbox/) over in-process HTTP. Time is passed to the sweep, so no test waits."""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from authsvc.cli import main
from authsvc.database import unit_of_work, utcnow
from authsvc.runtime import Runtime
from payments.callbacks.models import PaymentCallback
from payments.channels.alipay_adapter import AlipayAdapter, AlipayConfig
from payments.channels.base import (
    ChannelAdapter,
    ChannelDeclined,
    ChannelEvent,
    ChannelTrade,
    ChannelUnavailable,
    CloseResult,
    Kind,
    PaymentOrderRef,
    RefundOutcome,
    RefundRequest,
    RefundStatus,
    TradeStatus,
    VerifiedCallback,
)
from payments.channels.common import Acknowledgement, ChannelRefusal
from payments.channels.registry import Channels, install
from payments.channels.wechatpay_adapter import WechatPayAdapter
from payments.ledger.check import check
from payments.ledger.models import LedgerEntry
from payments.ledger.service import balances
from payments.orders import accounting, repository
from payments.orders.domain import InsuranceType, OrderSpec, PayerKind, Tier, TierTable, validate
from payments.orders.models import PaymentOrder, PaymentRefund
from payments.recovery import schedule
from payments.recovery.loop import sweep_loop
from payments.recovery.sweep import Decision, RefundDecision, sweep
from payments.recovery.sweep import run as run_pass
from payments.sandbox.alipay import AlipaySandbox, GatewayFault, NotifyFault
from payments.sandbox.wechatpay import WechatPaySandbox
from tests.integration.payments import support

SSN = "110105199003072813"
AMOUNT = 12000
CHANNEL = "wechatpay"
TTL = timedelta(hours=2)
TIERS = TierTable({(InsuranceType.PENSION, "110000", 2025): Tier(monthly=False, choices=frozenset({AMOUNT}))})
CLEARING, FUND, SUSPENSE = f"clearing:{CHANNEL}", "fund:pension:110000", f"suspense:{CHANNEL}"
ALIPAY_APP_ID = "2021000000000001"


@dataclass
class SandboxChannel:
    """The channel side of the adapter interface: trades it holds, what it was asked, and faults on demand."""

    name: str = CHANNEL
    trades: dict[str, ChannelTrade] = field(default_factory=dict)
    refunds: dict[str, RefundStatus] = field(default_factory=dict)
    down: bool = False  # every call: ChannelUnavailable
    decline_close: str | None = None  # close_payment: ChannelDeclined with this code
    pay_on_close: int | None = None  # the payer pays this many fen just before our close arrives
    answer_for: str | None = None  # answer queries about this order number instead (a confused adapter)
    calls: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # the payer's side, as the sandbox's operator drives it
    def take_payment(self, order_no: str, amount_fen: int = AMOUNT, *, trade_no: str | None = None) -> ChannelTrade:
        """The payer pays and the callback is never sent (the sandbox's fault)."""
        trade = ChannelTrade(
            order_no, TradeStatus.PAID, amount_fen, trade_no or f"42000{order_no}", utcnow(), "CNY", "SUCCESS"
        )
        self.trades[order_no] = trade
        return trade

    def set_status(self, order_no: str, status: TradeStatus, raw: str) -> None:
        self.trades[order_no] = ChannelTrade(order_no, status, AMOUNT, f"42000{order_no}", raw_state=raw)

    def _call(self, what: str, order_no: str) -> None:
        with self.lock:
            self.calls.append((what, order_no))
        if self.down:
            raise ChannelUnavailable("sandbox: connection refused")

    # the adapter interface
    def query_payment(self, order_no: str) -> ChannelTrade:
        self._call("query", order_no)
        trade = self.trades.get(order_no, ChannelTrade(order_no, TradeStatus.NOT_FOUND, raw_state="ORDER_NOT_EXIST"))
        if self.answer_for is not None:
            return ChannelTrade(self.answer_for, trade.status, trade.amount_fen, trade.channel_trade_no)
        return trade

    def close_payment(self, order_no: str) -> CloseResult:
        self._call("close", order_no)
        if self.decline_close:
            raise ChannelDeclined(self.decline_close, "sandbox declines")
        if self.pay_on_close is not None:
            self.take_payment(order_no, self.pay_on_close)
        trade = self.trades.get(order_no)
        if trade is None:
            return CloseResult.NOT_FOUND
        if trade.status is TradeStatus.PAID:
            return CloseResult.ALREADY_PAID
        self.trades[order_no] = ChannelTrade(order_no, TradeStatus.CLOSED, trade.amount_fen, trade.channel_trade_no)
        return CloseResult.CLOSED

    def refund(self, request: RefundRequest) -> RefundStatus:
        self._call("refund", request.refund_no)
        return self.refunds.setdefault(
            request.refund_no, RefundStatus(request.refund_no, RefundOutcome.PROCESSING, request.amount_fen)
        )

    def query_refund(self, order_no: str, refund_no: str) -> RefundStatus:
        self._call("query_refund", refund_no)
        return self.refunds.get(refund_no, RefundStatus(refund_no, RefundOutcome.PROCESSING, 0))

    def read_callback(self, headers: Mapping[str, str], body: bytes, *, now: float) -> VerifiedCallback:
        # The sandbox's callback: its trade as JSON (the real adapters verify signatures; that is tested there).
        doc = json.loads(body)
        event = ChannelEvent(
            self.name,
            f"{doc['trade_no']}:{doc['state']}",
            doc["order_no"],
            doc["trade_no"],
            doc["state"],
            Kind.PAID if doc["state"] in ("SUCCESS", "FINISHED") else Kind.OTHER,  # (Alipay's two paid states)
            doc["amount_fen"],
            "CNY",
            doc,
        )
        return VerifiedCallback(event)

    def acknowledge(self, refusal: ChannelRefusal | None = None, *, failed: bool = False) -> Acknowledgement:
        return Acknowledgement(500 if failed else 400 if refusal else 204, b"", None)


@pytest.fixture
def channel(client: TestClient) -> SandboxChannel:
    sandbox = SandboxChannel()
    install(client.app, Channels({CHANNEL: sandbox}))  # type: ignore[arg-type, dict-item]
    return sandbox


def channels(sandbox: SandboxChannel) -> Channels:
    return Channels({CHANNEL: sandbox})  # type: ignore[dict-item]


def new_order(
    runtime: Runtime, *, submitted: bool = True, created_at: datetime | None = None, channel: str = CHANNEL
) -> str:
    spec = OrderSpec(PayerKind.CITIZEN, "subject-1", SSN, InsuranceType.PENSION, ("2025",), AMOUNT, "110000", channel)
    with unit_of_work(runtime.sessions) as db:
        order = repository.add_order(db, validate(spec, TIERS))
        if created_at is not None:
            order.created_at, order.next_check_at = created_at, created_at + timedelta(minutes=1)
        if submitted:
            accounting.submit(db, order.order_no)
        return order.order_no


def order_of(runtime: Runtime, order_no: str) -> PaymentOrder:
    with unit_of_work(runtime.sessions) as db:
        order = repository.order_by_no(db, order_no)
        assert order is not None
        return order


def run(runtime: Runtime, sandbox: SandboxChannel, now: datetime, batch: int = 100) -> dict[str, object]:
    return sweep(runtime.sessions, channels(sandbox), now=now, order_ttl=TTL, batch=batch).as_dict()


def paid_entries(runtime: Runtime) -> int:
    with unit_of_work(runtime.sessions) as db:
        return int(db.scalar(select(func.count()).where(LedgerEntry.kind == "paid")) or 0)


def later(minutes: float) -> datetime:
    return utcnow() + timedelta(minutes=minutes)


def orders(report: dict[str, object]) -> dict[str, int]:
    return {k: v for k, v in report["orders"].items() if v}  # type: ignore[attr-defined]


def deliver(
    client: TestClient, order_no: str, amount_fen: int = AMOUNT, trade_no: str | None = None, state: str = "SUCCESS"
) -> None:
    body = {"order_no": order_no, "trade_no": trade_no or f"42000{order_no}", "state": state, "amount_fen": amount_fen}
    answer = client.post(f"/v1/payments/callbacks/{CHANNEL}", content=json.dumps(body))
    assert answer.status_code == 204, answer.text


# --- a charge the channel confirms is never left unpaid ------------------------------------------------------------


@pytest.mark.parametrize("submitted", [True, False], ids=["pending", "crashed-before-pending"])
def test_a_charge_without_its_callback_is_found_and_paid(
    runtime: Runtime, channel: SandboxChannel, submitted: bool
) -> None:
    order_no = new_order(runtime, submitted=submitted)
    channel.take_payment(order_no)  # the payer paid; the callback never comes

    assert orders(run(runtime, channel, utcnow())) == {}  # not due yet: the first check waits a minute
    report = run(runtime, channel, later(2))

    assert orders(report) == {"paid": 1} and report["orders_checked"] == 1
    order = order_of(runtime, order_no)
    assert order.state == "paid" and order.next_check_at is None
    with unit_of_work(runtime.sessions) as db:
        assert balances(db) == {CLEARING: AMOUNT, FUND: AMOUNT}
        row = db.scalar(select(PaymentCallback).where(PaymentCallback.order_ref == order_no))
        assert row is not None and row.outcome == "applied" and row.event_id == f"query:42000{order_no}:SUCCESS"
        assert check(db).ok
    # Nothing more to ask: a later pass does not touch it.
    assert run(runtime, channel, later(600))["orders_checked"] == 0
    assert channel.calls == [("query", order_no)]


def test_the_callback_arriving_after_the_sweep_changes_nothing(
    runtime: Runtime, client: TestClient, channel: SandboxChannel
) -> None:
    order_no = new_order(runtime)
    channel.take_payment(order_no)
    assert orders(run(runtime, channel, later(2))) == {"paid": 1}
    deliver(client, order_no)  # the late callback: recorded, a duplicate, no second entry
    with unit_of_work(runtime.sessions) as db:
        outcomes = sorted(db.scalars(select(PaymentCallback.outcome).where(PaymentCallback.order_ref == order_no)))
        assert outcomes == ["applied", "duplicate"]
        assert balances(db) == {CLEARING: AMOUNT, FUND: AMOUNT} and check(db).ok
    assert paid_entries(runtime) == 1


def test_an_order_paid_by_its_callback_is_not_asked_about(
    runtime: Runtime, client: TestClient, channel: SandboxChannel
) -> None:
    order_no = new_order(runtime)
    channel.take_payment(order_no)
    deliver(client, order_no)
    assert run(runtime, channel, later(2))["orders_checked"] == 0
    assert channel.calls == [] and paid_entries(runtime) == 1


def test_another_amount_is_held_in_suspense_once_and_never_paid(runtime: Runtime, channel: SandboxChannel) -> None:
    order_no = new_order(runtime)
    channel.take_payment(order_no, AMOUNT + 1)
    assert orders(run(runtime, channel, later(2))) == {"held": 1}
    order = order_of(runtime, order_no)
    assert order.state == "pending" and order.next_check_at is None  # for review, not asked again
    with unit_of_work(runtime.sessions) as db:
        assert balances(db) == {CLEARING: AMOUNT + 1, SUSPENSE: AMOUNT + 1} and check(db).ok
    assert run(runtime, channel, later(600))["orders_checked"] == 0


def test_a_charge_its_callback_already_held_is_not_held_twice(
    runtime: Runtime, client: TestClient, channel: SandboxChannel
) -> None:
    order_no = new_order(runtime)
    channel.take_payment(order_no, AMOUNT - 1)
    deliver(client, order_no, AMOUNT - 1)  # held by the inbox
    assert orders(run(runtime, channel, later(2))) == {"held": 1}
    with unit_of_work(runtime.sessions) as db:
        assert balances(db) == {CLEARING: AMOUNT - 1, SUSPENSE: AMOUNT - 1}


def test_a_charge_the_sweep_held_is_not_held_again_by_its_callback(
    runtime: Runtime, client: TestClient, channel: SandboxChannel
) -> None:
    order_no = new_order(runtime)
    channel.take_payment(order_no, AMOUNT + 7)
    assert orders(run(runtime, channel, later(2))) == {"held": 1}
    deliver(client, order_no, AMOUNT + 7)  # the late callback of the same charge
    deliver(client, order_no, AMOUNT + 7, state="FINISHED")  # and another paid state of it (Alipay's FINISHED)
    with unit_of_work(runtime.sessions) as db:
        assert balances(db) == {CLEARING: AMOUNT + 7, SUSPENSE: AMOUNT + 7} and check(db).ok
        outcomes = list(db.scalars(select(PaymentCallback.outcome).order_by(PaymentCallback.id)))
    assert outcomes == ["held_amount_mismatch"] * 3  # each recorded for review, the money held once
    # Another charge (another trade number) on the same order is money of its own, held too.
    deliver(client, order_no, AMOUNT + 7, trade_no="42000another")
    with unit_of_work(runtime.sessions) as db:
        assert balances(db) == {CLEARING: 2 * (AMOUNT + 7), SUSPENSE: 2 * (AMOUNT + 7)}


@pytest.mark.parametrize(
    ("status", "raw", "state", "decision"),
    [(TradeStatus.FAILED, "PAYERROR", "failed", "failed"), (TradeStatus.CLOSED, "CLOSED", "closed", "closed")],
)
def test_failed_and_closed_at_the_channel(
    runtime: Runtime, channel: SandboxChannel, status: TradeStatus, raw: str, state: str, decision: str
) -> None:
    order_no = new_order(runtime)
    channel.set_status(order_no, status, raw)
    assert orders(run(runtime, channel, later(2))) == {decision: 1}
    assert order_of(runtime, order_no).state == state
    assert paid_entries(runtime) == 0


# --- waiting, backing off, closing at the channel first ---------------------------------------------------------


def test_unpaid_orders_are_asked_again_with_back_off_but_never_after_the_expiry(
    runtime: Runtime, channel: SandboxChannel
) -> None:
    order_no = new_order(runtime)
    created = order_of(runtime, order_no).created_at
    channel.set_status(order_no, TradeStatus.UNPAID, "NOTPAY")
    now = created + timedelta(minutes=2)
    for attempt in range(8):
        assert orders(run(runtime, channel, now)) == {"waiting": 1}
        order = order_of(runtime, order_no)
        assert order.check_attempts == attempt + 1 and order.state == "pending"
        expected = min(now + schedule.delay(attempt), created + TTL)
        assert order.next_check_at == expected
        assert run(runtime, channel, expected - timedelta(seconds=1))["orders_checked"] == 0  # not due before
        now = expected
    assert order_of(runtime, order_no).next_check_at == created + TTL  # the back-off stopped at the expiry


def test_an_expired_unpaid_order_is_closed_at_the_channel_first(runtime: Runtime, channel: SandboxChannel) -> None:
    order_no = new_order(runtime)
    channel.set_status(order_no, TradeStatus.UNPAID, "NOTPAY")
    created = order_of(runtime, order_no).created_at
    assert orders(run(runtime, channel, created + TTL)) == {"closed": 1}
    assert channel.calls == [("query", order_no), ("close", order_no)]
    assert channel.trades[order_no].status is TradeStatus.CLOSED
    assert order_of(runtime, order_no).state == "closed"


def test_an_expired_order_the_channel_never_had_is_closed(runtime: Runtime, channel: SandboxChannel) -> None:
    order_no = new_order(runtime, submitted=False)
    assert orders(run(runtime, channel, later(200))) == {"closed": 1}
    assert channel.calls == [("query", order_no), ("close", order_no)]
    assert order_of(runtime, order_no).state == "closed"


def test_a_batch_channels_order_is_asked_about_but_never_closed(runtime: Runtime) -> None:
    bank = SandboxChannel(name="withholding")  # paid by the bank's next debit file, perhaps a day away
    order_no = new_order(runtime, submitted=False, channel="withholding")
    now = later(24 * 60)
    report = sweep(runtime.sessions, Channels({"withholding": bank}), now=now, order_ttl=TTL).as_dict()  # type: ignore[dict-item]
    assert orders(report) == {"waiting": 1} and bank.calls == [("query", order_no)]
    order = order_of(runtime, order_no)
    assert order.state == "created" and order.next_check_at == now + schedule.delay(0)
    bank.take_payment(order_no)
    report = sweep(runtime.sessions, Channels({"withholding": bank}), now=later(26 * 60), order_ttl=TTL).as_dict()  # type: ignore[dict-item]
    assert orders(report) == {"paid": 1}


def test_the_payer_paying_as_we_close_makes_it_paid_not_closed(runtime: Runtime, channel: SandboxChannel) -> None:
    order_no = new_order(runtime)
    channel.set_status(order_no, TradeStatus.UNPAID, "NOTPAY")
    channel.pay_on_close = AMOUNT
    assert orders(run(runtime, channel, later(200))) == {"paid": 1}
    assert channel.calls == [("query", order_no), ("close", order_no), ("query", order_no)]
    assert order_of(runtime, order_no).state == "paid" and paid_entries(runtime) == 1


def test_an_order_the_channel_will_not_close_stays_open(runtime: Runtime, channel: SandboxChannel) -> None:
    order_no = new_order(runtime)
    channel.set_status(order_no, TradeStatus.PAYING, "USERPAYING")
    channel.decline_close = "USERPAYING"
    now = later(200)
    assert orders(run(runtime, channel, now)) == {"declined": 1}
    order = order_of(runtime, order_no)
    assert order.state == "pending" and order.next_check_at == now + schedule.delay(0)
    channel.decline_close = None
    channel.set_status(order_no, TradeStatus.UNPAID, "NOTPAY")
    assert orders(run(runtime, channel, now + schedule.delay(0))) == {"closed": 1}


# --- no answer: nothing concluded ---------------------------------------------------------------------------------


def test_an_unavailable_channel_concludes_nothing_and_is_asked_again(runtime: Runtime, channel: SandboxChannel) -> None:
    order_no = new_order(runtime)
    channel.take_payment(order_no)
    channel.down = True
    now = later(200)  # expired too: still nothing may be closed without the channel's word
    assert orders(run(runtime, channel, now)) == {"unavailable": 1}
    assert orders(run(runtime, channel, now + timedelta(seconds=59))) == {}
    order = order_of(runtime, order_no)
    assert order.state == "pending" and order.check_attempts == 1
    assert order.next_check_at == now + schedule.delay(0)
    assert orders(run(runtime, channel, order.next_check_at)) == {"unavailable": 1}
    channel.down = False
    assert orders(run(runtime, channel, order.next_check_at + schedule.delay(1))) == {"paid": 1}
    assert paid_entries(runtime) == 1


def test_unavailable_during_the_close_leaves_the_order_open(runtime: Runtime, channel: SandboxChannel) -> None:
    order_no = new_order(runtime)
    channel.set_status(order_no, TradeStatus.UNPAID, "NOTPAY")

    real_close = channel.close_payment

    def close_times_out(number: str) -> CloseResult:
        channel.down = True
        try:
            return real_close(number)
        finally:
            channel.down = False

    channel.close_payment = close_times_out  # type: ignore[method-assign]
    assert orders(run(runtime, channel, later(200))) == {"unavailable": 1}
    assert order_of(runtime, order_no).state == "pending"


def test_an_answer_about_another_order_is_no_answer(runtime: Runtime, channel: SandboxChannel) -> None:
    order_no = new_order(runtime)
    channel.take_payment(order_no)
    channel.answer_for = "SO" + "0" * 24  # a paid trade, but of another order
    assert orders(run(runtime, channel, later(2))) == {"unavailable": 1}
    assert order_of(runtime, order_no).state == "pending" and paid_entries(runtime) == 0


def test_an_adapter_bug_on_one_order_does_not_stop_the_pass(runtime: Runtime, channel: SandboxChannel) -> None:
    start = utcnow() - timedelta(minutes=30)
    broken, fine = (new_order(runtime, created_at=start + timedelta(minutes=i)) for i in range(2))
    channel.take_payment(broken)
    channel.take_payment(fine)
    query = channel.query_payment

    def buggy(order_no: str) -> ChannelTrade:
        if order_no == broken:
            raise KeyError("an adapter's own bug")
        return query(order_no)

    channel.query_payment = buggy  # type: ignore[method-assign]
    now = utcnow()
    assert orders(run(runtime, channel, now)) == {"error": 1, "paid": 1}
    assert order_of(runtime, broken).state == "pending" and order_of(runtime, fine).state == "paid"
    # Nothing concluded for it: its claim's lease brings it back.
    assert run(runtime, channel, now + schedule.LEASE - timedelta(seconds=1))["orders_checked"] == 0
    channel.query_payment = query  # type: ignore[method-assign]
    assert orders(run(runtime, channel, now + schedule.LEASE)) == {"paid": 1}


def test_an_order_of_a_channel_not_configured_is_kept(runtime: Runtime) -> None:
    order_no = new_order(runtime)
    report = sweep(runtime.sessions, Channels(), now=later(200), order_ttl=TTL)
    assert orders(report.as_dict()) == {"no_channel": 1}
    assert order_of(runtime, order_no).state == "pending"


def test_a_batch_takes_the_longest_due_first(runtime: Runtime, channel: SandboxChannel) -> None:
    start = utcnow() - timedelta(minutes=30)
    numbers = [new_order(runtime, created_at=start + timedelta(minutes=i)) for i in range(3)]
    assert run(runtime, channel, utcnow(), batch=2)["orders_checked"] == 2
    assert [number for _, number in channel.calls] == numbers[:2]


# --- refunds left requested -------------------------------------------------------------------------------------


def paid_order_with_refund(runtime: Runtime, refund_no: str, amount: int = 2000) -> str:
    order_no = new_order(runtime)
    with unit_of_work(runtime.sessions) as db:
        accounting.mark_paid(db, order_no, amount_fen=AMOUNT)
        accounting.request_refund(db, order_no, refund_no, amount)
    return order_no


@pytest.mark.parametrize(
    ("outcome", "amount", "decision", "refund_state", "order_state"),
    [
        (RefundOutcome.SUCCEEDED, 2000, "succeeded", "succeeded", "partially_refunded"),
        (RefundOutcome.FAILED, 2000, "failed", "failed", "paid"),
        (RefundOutcome.PROCESSING, 2000, "processing", "requested", "paid"),
        (RefundOutcome.SUCCEEDED, 2001, "mismatch", "requested", "paid"),
    ],
)
def test_requested_refunds_are_asked_about(
    runtime: Runtime,
    channel: SandboxChannel,
    outcome: RefundOutcome,
    amount: int,
    decision: str,
    refund_state: str,
    order_state: str,
) -> None:
    order_no = paid_order_with_refund(runtime, "RF-1")
    channel.refunds["RF-1"] = RefundStatus("RF-1", outcome, amount)
    assert run(runtime, channel, utcnow())["refunds_checked"] == 0  # the channel gets a minute to answer itself
    report = run(runtime, channel, later(2))
    assert {k: v for k, v in report["refunds"].items() if v} == {decision: 1}  # type: ignore[attr-defined]
    with unit_of_work(runtime.sessions) as db:
        refund = db.scalar(select(PaymentRefund).where(PaymentRefund.refund_no == "RF-1"))
        assert refund is not None and refund.state == refund_state
        assert refund.order.order_no == order_no and refund.order.state == order_state
        assert check(db).ok


def test_a_refund_that_never_had_an_answer_is_sent_again(runtime: Runtime, channel: SandboxChannel) -> None:
    order_no = paid_order_with_refund(runtime, "RF-3")  # requested, but the send never happened (sent_at unset)
    channel.refunds["RF-3"] = RefundStatus("RF-3", RefundOutcome.SUCCEEDED, 2000, "50300RF3")
    report = run_pass(runtime, channels(channel), now=later(2)).as_dict()
    assert {k: v for k, v in report["refunds"].items() if v} == {"resent": 1}  # type: ignore[attr-defined]
    assert channel.calls == [("refund", "RF-3")]
    with unit_of_work(runtime.sessions) as db:
        refund = db.scalar(select(PaymentRefund).where(PaymentRefund.refund_no == "RF-3"))
        assert refund is not None and refund.state == "succeeded" and refund.sent_at is not None
        assert refund.order.order_no == order_no and check(db).ok
    # Settled: a later pass has nothing left to ask about.
    assert run_pass(runtime, channels(channel), now=later(3)).as_dict()["refunds_checked"] == 0


@pytest.mark.parametrize("fault", ["down", "declined", "no_channel"])
def test_a_refund_without_an_answer_stays_requested(runtime: Runtime, channel: SandboxChannel, fault: str) -> None:
    paid_order_with_refund(runtime, "RF-2")
    sandbox = channels(channel)
    if fault == "down":
        channel.down = True
    elif fault == "declined":
        channel.query_refund = lambda order_no, refund_no: (_ for _ in ()).throw(  # type: ignore[method-assign]
            ChannelDeclined("REFUND_NOT_EXIST", "no such refund")
        )
    else:
        sandbox = Channels()
    report = sweep(runtime.sessions, sandbox, now=later(2), order_ttl=TTL).as_dict()
    expected = {"down": RefundDecision.UNAVAILABLE, "declined": RefundDecision.DECLINED}.get(fault, "no_channel")
    assert {k: v for k, v in report["refunds"].items() if v} == {expected: 1}  # type: ignore[attr-defined]
    with unit_of_work(runtime.sessions) as db:
        assert db.scalar(select(PaymentRefund.state).where(PaymentRefund.refund_no == "RF-2")) == "requested"


# --- concurrency (PostgreSQL: real row locks) --------------------------------------------------------------------


def test_a_callback_and_the_sweep_racing_for_one_order_post_once(
    backend: str, runtime: Runtime, client: TestClient, channel: SandboxChannel
) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite has one writer: nothing races")
    numbers = [new_order(runtime) for _ in range(8)]
    for number in numbers:
        channel.take_payment(number)
    go = threading.Barrier(2)
    errors: list[BaseException] = []

    def callbacks() -> None:
        try:
            go.wait()
            for number in numbers:
                deliver(client, number)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    def sweeper() -> None:
        try:
            go.wait()
            run(runtime, channel, later(2), batch=1)  # one order per pass, interleaving with the callbacks
            while run(runtime, channel, later(2), batch=1)["orders_checked"]:
                pass
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=callbacks), threading.Thread(target=sweeper)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert paid_entries(runtime) == len(numbers)
    with unit_of_work(runtime.sessions) as db:
        assert balances(db) == {CLEARING: AMOUNT * len(numbers), FUND: AMOUNT * len(numbers)}
        assert check(db).ok
        states = Counter(db.scalars(select(PaymentOrder.state)))
    assert states == {"paid": len(numbers)}


def test_two_sweepers_share_the_work(backend: str, runtime: Runtime, channel: SandboxChannel) -> None:
    numbers = [new_order(runtime) for _ in range(12)]
    for number in numbers:
        channel.take_payment(number)
    now, go = later(2), threading.Barrier(2)
    reports: list[dict[str, object]] = []

    def sweeper() -> None:
        go.wait()
        reports.append(run(runtime, channel, now, batch=4))
        while (report := run(runtime, channel, now, batch=4))["orders_checked"]:
            reports.append(report)

    threads = [threading.Thread(target=sweeper) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Each order was claimed by one sweeper only: asked about once, paid once.
    assert Counter(number for what, number in channel.calls if what == "query") == dict.fromkeys(numbers, 1)
    assert sum(r["orders"]["paid"] for r in reports) == len(numbers)  # type: ignore[index]
    assert paid_entries(runtime) == len(numbers)


# --- entry points -------------------------------------------------------------------------------------------------


def test_the_cli_prints_the_report(cli_env: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    order_no = new_order(cli_env, created_at=utcnow() - timedelta(minutes=5))
    assert main(["payments", "sweep", "--batch", "5"]) == 0
    report = json.loads(capsys.readouterr().out)
    # SSCARD_PAYMENT_CHANNELS enables none here (payments/channels/setup.py): the order is kept, nothing concluded.
    assert report["orders_checked"] == 1 and report["orders"]["no_channel"] == 1
    assert set(report["orders"]) == {d.value for d in Decision}
    assert order_of(cli_env, order_no).state == "pending"
    with pytest.raises(SystemExit) as refused:
        main(["payments", "sweep", "--batch", "0"])
    assert refused.value.code == 2


def test_the_in_service_loop_runs_a_pass(runtime: Runtime, settings_factory, channel: SandboxChannel) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    looped = Runtime(settings_factory(payment_sweep_interval=60))  # (settings_factory empties the tables)
    order_no = new_order(runtime, created_at=utcnow() - timedelta(minutes=5))
    channel.take_payment(order_no)
    stop = asyncio.Event()

    def installed() -> Channels:
        stop.set()  # one pass, then the loop sees the stop
        return channels(channel)

    try:
        asyncio.run(sweep_loop(looped, installed, stop))
    finally:
        looped.close()
    assert order_of(runtime, order_no).state == "paid"


def test_decisions_are_logged_without_the_insured_person(
    runtime: Runtime, channel: SandboxChannel, caplog: pytest.LogCaptureFixture
) -> None:
    paid, held, closed, down = (new_order(runtime) for _ in range(4))
    channel.take_payment(paid)
    channel.take_payment(held, AMOUNT + 5)
    channel.set_status(closed, TradeStatus.CLOSED, "CLOSED")
    with caplog.at_level(logging.INFO, logger="sscard.payments"):
        run(runtime, channel, later(2))
        channel.down = True
        channel.trades.pop(down, None)
        run(runtime, channel, later(5))
    text = caplog.text
    assert all(number in text for number in (paid, held, closed, down))
    assert SSN not in text and SSN[:14] not in text


# --- the channels' sandboxes over HTTP ----------------------------------------------------------------------------

SANDBOX_NOW = 1_795_000_000  # the sandboxes' and adapters' clock; the sweep's own time is passed to it


@pytest.fixture(scope="module")
def merchant_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def wechatpay(client: TestClient, merchant_key: rsa.RSAPrivateKey) -> tuple[WechatPaySandbox, WechatPayAdapter]:
    sandbox = support.wechatpay_sandbox(client, merchant_key, now=SANDBOX_NOW)
    return sandbox, support.wechatpay_adapter(client, sandbox, now=SANDBOX_NOW)


def started(runtime: Runtime, adapter: ChannelAdapter, **order: object) -> str:
    order_no = new_order(runtime, **order)  # type: ignore[arg-type]
    expires = datetime.fromtimestamp(SANDBOX_NOW + 7200, UTC)
    adapter.create_payment(PaymentOrderRef(order_no, AMOUNT, "城乡居民养老保险", expires, "http://testserver/cb"))
    return order_no


def sweep_with(runtime: Runtime, adapter: ChannelAdapter, now: datetime) -> dict[str, int]:
    report = sweep(runtime.sessions, Channels({adapter.name: adapter}), now=now, order_ttl=TTL).as_dict()
    return orders(report)


def test_wechatpay_a_payment_whose_notification_is_never_sent_is_paid(
    runtime: Runtime, wechatpay: tuple[WechatPaySandbox, WechatPayAdapter]
) -> None:
    sandbox, adapter = wechatpay
    order_no = started(runtime, adapter)
    sandbox.pay(order_no, delivery="none")
    assert sandbox.deliveries == []  # the fault: WeChat Pay never called back
    assert sweep_with(runtime, adapter, later(2)) == {"paid": 1}
    with unit_of_work(runtime.sessions) as db:
        assert balances(db) == {CLEARING: AMOUNT, FUND: AMOUNT} and check(db).ok
    assert paid_entries(runtime) == 1


def test_wechatpay_an_expired_order_is_closed_there_first(
    runtime: Runtime, wechatpay: tuple[WechatPaySandbox, WechatPayAdapter]
) -> None:
    sandbox, adapter = wechatpay
    order_no = started(runtime, adapter)
    assert sweep_with(runtime, adapter, later(200)) == {"closed": 1}
    assert adapter.query_payment(order_no).status is TradeStatus.CLOSED
    assert order_of(runtime, order_no).state == "closed"
    with pytest.raises(ValueError, match="cannot pay"):
        sandbox.pay(order_no)  # closed at the channel: the payer can no longer pay it


def test_wechatpay_paid_as_we_close_is_paid(
    runtime: Runtime, wechatpay: tuple[WechatPaySandbox, WechatPayAdapter], monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox, adapter = wechatpay
    order_no = started(runtime, adapter)
    close = adapter.close_payment

    def payer_first(number: str) -> CloseResult:
        sandbox.pay(number, delivery="none")  # the payer confirms a moment before our close arrives
        return close(number)

    monkeypatch.setattr(adapter, "close_payment", payer_first)
    assert sweep_with(runtime, adapter, later(200)) == {"paid": 1}
    assert order_of(runtime, order_no).state == "paid" and paid_entries(runtime) == 1


@pytest.mark.parametrize("fault", ["timeout", "error", "bad_signature", "unsigned"])
def test_wechatpay_without_a_trustworthy_answer_nothing_is_concluded(
    runtime: Runtime, wechatpay: tuple[WechatPaySandbox, WechatPayAdapter], fault: str
) -> None:
    sandbox, adapter = wechatpay
    order_no = started(runtime, adapter)
    sandbox.pay(order_no, delivery="none")
    sandbox.fail_next(1, fault)
    assert sweep_with(runtime, adapter, later(200)) == {"unavailable": 1}
    assert order_of(runtime, order_no).state == "pending" and paid_entries(runtime) == 0
    assert sweep_with(runtime, adapter, later(202)) == {"paid": 1}


@pytest.fixture
def alipay(client: TestClient, merchant_key: rsa.RSAPrivateKey) -> tuple[AlipaySandbox, AlipayAdapter]:
    alipay_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def into_the_service(url: str, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
        answer = client.post(urlsplit(url).path, content=body, headers=dict(headers))
        return answer.status_code, answer.content

    sandbox = AlipaySandbox(
        app_id=ALIPAY_APP_ID,
        app_public_key=merchant_key.public_key(),
        alipay_private_key=alipay_key,
        sender=into_the_service,
        clock=lambda: SANDBOX_NOW,
    )
    adapter = AlipayAdapter(
        AlipayConfig(app_id=ALIPAY_APP_ID, public_key=sandbox.public_key),
        app_private_key=merchant_key,
        gateway_url="http://testserver/gateway.do",
        notify_url="http://testserver/v1/payments/callbacks/alipay",
        http=TestClient(sandbox.app),
        clock=lambda: SANDBOX_NOW,
    )
    install(client.app, Channels({"alipay": adapter}, clock=lambda: SANDBOX_NOW))  # type: ignore[dict-item]
    return sandbox, adapter


def test_alipay_a_payment_whose_notification_is_never_sent_is_paid(
    runtime: Runtime, alipay: tuple[AlipaySandbox, AlipayAdapter]
) -> None:
    sandbox, adapter = alipay
    order_no = started(runtime, adapter, channel="alipay")
    sandbox.pay(order_no, NotifyFault.NEVER)
    assert sweep_with(runtime, adapter, later(2)) == {"paid": 1}
    with unit_of_work(runtime.sessions) as db:
        assert balances(db) == {"clearing:alipay": AMOUNT, FUND: AMOUNT} and check(db).ok


def test_alipay_an_expired_order_is_closed_there_first(
    runtime: Runtime, alipay: tuple[AlipaySandbox, AlipayAdapter]
) -> None:
    sandbox, adapter = alipay
    order_no = started(runtime, adapter, channel="alipay")
    sandbox.fail_next(1, GatewayFault.TIMEOUT)
    assert sweep_with(runtime, adapter, later(200)) == {"unavailable": 1}
    assert order_of(runtime, order_no).state == "pending"
    assert sweep_with(runtime, adapter, later(202)) == {"closed": 1}
    assert adapter.query_payment(order_no).status in (TradeStatus.CLOSED, TradeStatus.NOT_FOUND)
    assert order_of(runtime, order_no).state == "closed"
