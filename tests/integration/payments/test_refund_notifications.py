"""Refund notifications through the callbacks inbox (POST /v1/payments/callbacks/{channel}), on both backends: applied
once (duplicates, concurrent ones included, post nothing more), contradictions kept as conflicts, other amounts held,
unknown refunds kept for investigation, processing ignored; every one recorded and acknowledged."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from authsvc.database import unit_of_work
from authsvc.runtime import Runtime
from payments.callbacks.models import PaymentCallback
from payments.channels.base import RefundOutcome
from payments.ledger.service import entry_by_key
from tests.integration.payments.test_refunds import (
    BIG,
    CLEARING,
    FUND,
    PATH,
    REFUNDS,
    SMALL,
    Op,
    ScriptedChannel,
    _together,
    answers,
    get,
    install_scripted,
    ledger,
    notify,
    operator,
    order_state,
    paid_order,
    refund_body,
    request,
)


@pytest.fixture
def channel(client: TestClient) -> ScriptedChannel:
    return install_scripted(client)


@pytest.fixture
def alice(client: TestClient, runtime: Runtime) -> Op:
    return operator(client, runtime, "alice")


def pending_refund(
    client: TestClient, runtime: Runtime, channel: ScriptedChannel, op: Op, amount: int
) -> tuple[str, str]:
    """A refund sent to the channel, which answered `PROCESSING`: the notification will settle it."""
    order_no = paid_order(runtime)
    channel.script.append(answers(RefundOutcome.PROCESSING))
    answer = request(client, op, refund_body(order_no, amount), key=order_no)
    assert answer.status_code == 201 and answer.json()["state"] == "requested"
    return order_no, answer.json()["refund_no"]


def inbox(runtime: Runtime) -> list[tuple[str | None, str, str | None]]:
    with unit_of_work(runtime.sessions) as db:
        rows = db.scalars(select(PaymentCallback).order_by(PaymentCallback.id))
        return [(r.refund_ref, r.outcome, r.note) for r in rows]


def refund_state(client: TestClient, op: Op, refund_no: str) -> str:
    return get(client, op, f"{PATH}/{refund_no}").json()["state"]


def test_succeeded_is_applied_once(client: TestClient, runtime: Runtime, channel: ScriptedChannel, alice: Op) -> None:
    order_no, refund_no = pending_refund(client, runtime, channel, alice, 100_000)
    assert notify(client, refund_no, order_no, "processing", 100_000, "ev-0").status_code == 204
    assert refund_state(client, alice, refund_no) == "requested"
    assert notify(client, refund_no, order_no, "succeeded", 100_000, "ev-1").status_code == 204
    assert notify(client, refund_no, order_no, "succeeded", 100_000, "ev-1").status_code == 204  # redelivered
    assert notify(client, refund_no, order_no, "succeeded", 100_000, "ev-2").status_code == 204  # another id
    assert inbox(runtime) == [
        (refund_no, "ignored", None),
        (refund_no, "applied", None),
        (refund_no, "duplicate", None),
    ]
    view = get(client, alice, f"{PATH}/{refund_no}").json()
    assert view["state"] == "succeeded" and view["channel_refund_no"] == "50300" + refund_no[-10:]
    assert order_state(runtime, order_no) == ("partially_refunded", 100_000, 100_000)
    assert ledger(runtime) == {CLEARING: 200_000, FUND: 200_000, REFUNDS: 0}
    with unit_of_work(runtime.sessions) as db:
        row = db.scalars(select(PaymentCallback).where(PaymentCallback.event_id == "ev-1")).one()
        assert (row.order_ref, row.channel_state, row.amount_fen, row.currency) == (
            order_no,
            "refund:succeeded",
            100_000,
            "CNY",
        )


def test_failed_releases_the_reservation(
    client: TestClient, runtime: Runtime, channel: ScriptedChannel, alice: Op
) -> None:
    order_no, refund_no = pending_refund(client, runtime, channel, alice, SMALL)
    assert notify(client, refund_no, order_no, "failed", SMALL, "ev-1").status_code == 204
    assert refund_state(client, alice, refund_no) == "failed"
    assert order_state(runtime, order_no) == ("paid", 0, 0)
    assert ledger(runtime) == {CLEARING: SMALL, FUND: SMALL, REFUNDS: 0}
    # A late success after the failure contradicts it: kept for review, never applied.
    assert notify(client, refund_no, order_no, "succeeded", SMALL, "ev-2").status_code == 204
    assert [outcome for _, outcome, _ in inbox(runtime)] == ["applied", "conflict"]
    assert refund_state(client, alice, refund_no) == "failed"
    assert ledger(runtime) == {CLEARING: SMALL, FUND: SMALL, REFUNDS: 0}


def test_concurrent_duplicates_post_once(
    client: TestClient, runtime: Runtime, channel: ScriptedChannel, alice: Op
) -> None:
    order_no, refund_no = pending_refund(client, runtime, channel, alice, SMALL)
    answers_ = _together(*[lambda: notify(client, refund_no, order_no, "succeeded", SMALL, "ev-1")] * 2)
    assert [a.status_code for a in answers_] == [204, 204]
    assert inbox(runtime) == [(refund_no, "applied", None)]
    # Two different events of one refund at once: the order row lock serialises them, one posting.
    order_no, other = pending_refund(client, runtime, channel, alice, SMALL)
    answers_ = _together(
        lambda: notify(client, other, order_no, "succeeded", SMALL, "ev-a"),
        lambda: notify(client, other, order_no, "succeeded", SMALL, "ev-b"),
    )
    assert [a.status_code for a in answers_] == [204, 204]
    assert sorted(outcome for ref, outcome, _ in inbox(runtime) if ref == other) == ["applied", "duplicate"]
    with unit_of_work(runtime.sessions) as db:
        assert entry_by_key(db, f"refund:{other}:succeeded") is not None
    assert ledger(runtime) == {CLEARING: 0, FUND: 0, REFUNDS: 0}


def test_late_failure_after_success_is_a_conflict(
    client: TestClient, runtime: Runtime, channel: ScriptedChannel, alice: Op
) -> None:
    order_no, refund_no = pending_refund(client, runtime, channel, alice, SMALL)
    assert notify(client, refund_no, order_no, "succeeded", SMALL, "ev-1").status_code == 204
    assert notify(client, refund_no, order_no, "failed", SMALL, "ev-2").status_code == 204
    rows = inbox(runtime)
    assert [outcome for _, outcome, _ in rows] == ["applied", "conflict"] and rows[1][2]
    assert refund_state(client, alice, refund_no) == "succeeded"
    assert order_state(runtime, order_no) == ("refunded", SMALL, SMALL)
    assert ledger(runtime) == {CLEARING: 0, FUND: 0, REFUNDS: 0}


def test_unknown_refund_is_kept(client: TestClient, runtime: Runtime, channel: ScriptedChannel) -> None:
    order_no = paid_order(runtime)
    assert notify(client, "RFnosuchrefund", order_no, "succeeded", 100, "ev-1").status_code == 204
    assert inbox(runtime) == [("RFnosuchrefund", "unknown_refund", None)]
    assert order_state(runtime, order_no) == ("paid", 0, 0)
    assert ledger(runtime) == {CLEARING: SMALL, FUND: SMALL, REFUNDS: 0}


def test_another_amount_is_held(client: TestClient, runtime: Runtime, channel: ScriptedChannel, alice: Op) -> None:
    order_no, refund_no = pending_refund(client, runtime, channel, alice, 100_000)
    for outcome, event_id in (("succeeded", "ev-1"), ("failed", "ev-2")):
        assert notify(client, refund_no, order_no, outcome, 100_001, event_id).status_code == 204
    rows = inbox(runtime)
    assert [outcome for _, outcome, _ in rows] == ["held_amount_mismatch"] * 2
    assert all("100001" in (note or "") for _, _, note in rows)
    assert refund_state(client, alice, refund_no) == "requested"
    assert ledger(runtime) == {CLEARING: SMALL, FUND: 200_000, REFUNDS: 100_000}
    # The right amount still settles it.
    assert notify(client, refund_no, order_no, "succeeded", 100_000, "ev-3").status_code == 204
    assert refund_state(client, alice, refund_no) == "succeeded"


def test_notices_that_contradict_the_refund(
    client: TestClient, runtime: Runtime, channel: ScriptedChannel, alice: Op
) -> None:
    _, refund_no = pending_refund(client, runtime, channel, alice, 100_000)
    other_order = paid_order(runtime)
    assert notify(client, refund_no, other_order, "succeeded", 100_000, "ev-1").status_code == 204
    # A refund still waiting for its approval was never sent: the channel cannot have settled it.
    waiting = request(client, alice, refund_body(paid_order(runtime, BIG), BIG), key="big").json()
    assert waiting["state"] == "awaiting_approval"
    assert notify(client, waiting["refund_no"], waiting["order_no"], "succeeded", BIG, "ev-2").status_code == 204
    assert [outcome for _, outcome, _ in inbox(runtime)] == ["conflict", "conflict"]
    assert refund_state(client, alice, refund_no) == "requested"
    assert refund_state(client, alice, waiting["refund_no"]) == "awaiting_approval"


def test_malformed_notices_are_refused_and_write_nothing(client: TestClient, runtime: Runtime, channel: Any) -> None:
    answer = client.post("/v1/payments/callbacks/wechatpay", content=b"{not json")
    assert answer.status_code == 400
    assert inbox(runtime) == []
