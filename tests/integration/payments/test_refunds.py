"""Refunds over the API on both backends: operators only, limits, the second operator above the threshold, reject,
the channel's answers (succeeded, declined, failed, processing, unavailable then a notification), Idempotency-Key,
and the ledger balanced after each.

The channel is mostly `ScriptedChannel`, an in-test adapter double answering what each test scripts (these tests are
about what we do with the answers); the last test runs the real WeChat Pay adapter against payments/sandbox/ over
HTTP, its signed refund notification included.
"""

from __future__ import annotations

import datetime
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from authsvc.cli import main
from authsvc.database import unit_of_work
from authsvc.runtime import Runtime
from payments.channels import registry
from payments.channels.base import (
    ChannelDeclined,
    ChannelUnavailable,
    PaymentOrderRef,
    RefundEvent,
    RefundOutcome,
    RefundRequest,
    RefundStatus,
    VerifiedCallback,
)
from payments.channels.common import Acknowledgement, ChannelRefusal, RefusalReason
from payments.ledger.check import check
from payments.ledger.service import balances, entry_by_key
from payments.orders import accounting, repository
from payments.orders.domain import InsuranceType, OrderSpec, PayerKind, Tier, TierTable, validate
from payments.orders.models import PaymentRefund
from payments.refunds import service
from tests.fixtures.oidc import register_client
from tests.integration.oauth.flows import authed, code_grant, secret_client
from tests.integration.payments import support
from tests.integration.payments.support import json_values

PATH = "/v1/payments/refunds"
SMALL, BIG = 300_000, 1_000_000  # 3,000 and 10,000 yuan; the default approval threshold is 5,000 yuan
TIERS = TierTable({(InsuranceType.PENSION, "110000", 2025): Tier(monthly=False, choices=frozenset({SMALL, BIG}))})
CLEARING, FUND, REFUNDS = "clearing:wechatpay", "fund:pension:110000", "refunds:wechatpay"


# --- the channel double ------------------------------------------------------------------------------------------

Answer = Callable[[RefundRequest], RefundStatus]


def answers(outcome: RefundOutcome) -> Answer:
    def answer(request: RefundRequest) -> RefundStatus:
        return RefundStatus(request.refund_no, outcome, request.amount_fen, "50300" + request.refund_no[2:12])

    return answer


def raises(exc: Exception) -> Answer:
    def answer(_: RefundRequest) -> RefundStatus:
        raise exc

    return answer


@dataclass
class ScriptedChannel:
    """WeChat Pay as far as refunds go: `refund` answers from `script` (SUCCEEDED when it runs out) and records the
    requests; callbacks are plain JSON refund notices (signatures are the wire-format modules' business)."""

    name: str = "wechatpay"
    script: list[Answer] = field(default_factory=list)
    requests: list[RefundRequest] = field(default_factory=list)

    def refund(self, request: RefundRequest) -> RefundStatus:
        self.requests.append(request)
        return (self.script.pop(0) if self.script else answers(RefundOutcome.SUCCEEDED))(request)

    def read_callback(self, headers: Any, body: bytes, *, now: float) -> VerifiedCallback:
        try:
            doc = json.loads(body)
            event = RefundEvent(
                channel=self.name,
                event_id=doc["event_id"],
                refund_no=doc["refund_no"],
                order_no=doc["order_no"],
                channel_refund_no=doc["channel_refund_no"],
                outcome=RefundOutcome(doc["outcome"]),
                amount_fen=doc["amount_fen"],
                payload=doc,
            )
        except (ValueError, KeyError, TypeError):
            raise ChannelRefusal(RefusalReason.MALFORMED, "not a refund notice") from None
        return VerifiedCallback(event)

    def acknowledge(self, refusal: ChannelRefusal | None = None, *, failed: bool = False) -> Acknowledgement:
        if refusal is not None or failed:
            return Acknowledgement(400 if refusal else 500, b'{"code":"FAIL"}', "application/json")
        return Acknowledgement(204, b"", None)


def install_scripted(client: TestClient) -> ScriptedChannel:
    scripted = ScriptedChannel()
    registry.install(client.app, registry.Channels({"wechatpay": scripted}))  # type: ignore[arg-type, dict-item]
    return scripted


@pytest.fixture
def channel(client: TestClient) -> ScriptedChannel:
    return install_scripted(client)


def notify(client: TestClient, refund_no: str, order_no: str, outcome: str, amount: int, event_id: str) -> Any:
    doc = {
        "event_id": event_id,
        "refund_no": refund_no,
        "order_no": order_no,
        "channel_refund_no": "50300" + refund_no[-10:],
        "outcome": outcome,
        "amount_fen": amount,
    }
    return client.post("/v1/payments/callbacks/wechatpay", content=json.dumps(doc).encode())


# --- orders, operators, calls ------------------------------------------------------------------------------------


def paid_order(runtime: Runtime, amount: int = SMALL, payer: str = "payer-1") -> str:
    spec = OrderSpec(
        PayerKind.CITIZEN,
        payer,
        "110105199003072813",
        InsuranceType.PENSION,
        ("2025",),
        amount,
        "110000",
        "wechatpay",
    )
    with unit_of_work(runtime.sessions) as db:
        order_no = repository.add_order(db, validate(spec, TIERS)).order_no
        accounting.submit(db, order_no)
        accounting.mark_paid(db, order_no, amount_fen=amount)
        return order_no


def unpaid_order(runtime: Runtime) -> str:
    spec = OrderSpec(
        PayerKind.CITIZEN,
        "payer-1",
        "110105199003072813",
        InsuranceType.PENSION,
        ("2025",),
        SMALL,
        "110000",
        "wechatpay",
    )
    with unit_of_work(runtime.sessions) as db:
        return repository.add_order(db, validate(spec, TIERS)).order_no


@dataclass(frozen=True)
class Op:
    token: str
    client_id: str
    subject: str


def operator(client: TestClient, runtime: Runtime, subject: str, console: Any = None) -> Op:
    """A person signed in at an operator console (an authorization-code token with scope payments:refund)."""
    console = console or register_client(runtime, scopes=["openid", "payments:refund"])
    answer = code_grant(client, runtime, console, subject=subject, scope=["openid", "payments:refund"])
    assert answer.status_code == 200, answer.text
    return Op(answer.json()["access_token"], console.client_id, subject)


def request(client: TestClient, op: Op, body: Any, key: str | None = "rk-1", raw: bytes | None = None) -> Any:
    headers = {"Authorization": f"Bearer {op.token}", "Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post(PATH, content=raw if raw is not None else json.dumps(body).encode(), headers=headers)


def refund_body(order_no: str, amount: int, reason: str = "paid twice") -> dict[str, Any]:
    return {"order_no": order_no, "amount_fen": amount, "reason": reason}


def decide(client: TestClient, op: Op, refund_no: str, action: str, reason: str = "checked") -> Any:
    return client.post(
        f"{PATH}/{refund_no}/{action}",
        content=json.dumps({"reason": reason}).encode(),
        headers={"Authorization": f"Bearer {op.token}"},
    )


def get(client: TestClient, op: Op, path: str = PATH) -> Any:
    return client.get(path, headers={"Authorization": f"Bearer {op.token}"})


def problem(answer: Any, status: int, reason: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["reason"] == reason


def ledger(runtime: Runtime) -> dict[str, int]:
    """The balances, after checking that every entry balances."""
    with unit_of_work(runtime.sessions) as db:
        assert check(db).ok
        found = balances(db)
        assert set(found) <= {CLEARING, FUND, REFUNDS}
        return {account: found.get(account, 0) for account in (CLEARING, FUND, REFUNDS)}


def order_state(runtime: Runtime, order_no: str) -> tuple[str, int, int]:
    with unit_of_work(runtime.sessions) as db:
        order = repository.order_by_no(db, order_no)
        assert order is not None
        return order.state, order.refund_reserved_fen, order.refunded_fen


def refund_count(runtime: Runtime) -> int:
    with unit_of_work(runtime.sessions) as db:
        return db.scalar(select(func.count()).select_from(PaymentRefund)) or 0


@pytest.fixture
def alice(client: TestClient, runtime: Runtime) -> Op:
    return operator(client, runtime, "alice")


@pytest.fixture
def bob(client: TestClient, runtime: Runtime) -> Op:
    return operator(client, runtime, "bob")


# --- below the threshold: one operator ---------------------------------------------------------------------------


def test_partial_then_full_refund_through_the_channel(
    client: TestClient, runtime: Runtime, channel: ScriptedChannel, alice: Op
) -> None:
    order_no = paid_order(runtime)
    first = request(client, alice, refund_body(order_no, 100_000), key="r1")
    assert first.status_code == 201, first.text
    refund = first.json()
    assert refund["state"] == "succeeded" and refund["amount_fen"] == 100_000 and refund["order_no"] == order_no
    assert refund["requested_by"] == {"client_id": alice.client_id, "subject": "alice"}
    assert refund["reason"] == "paid twice" and refund["approval_required"] is False and refund["decision"] is None
    assert refund["channel_refund_no"] and refund["settled_at"]
    sent = channel.requests[0]
    assert (sent.order_no, sent.refund_no, sent.amount_fen, sent.order_amount_fen, sent.reason) == (
        order_no,
        refund["refund_no"],
        100_000,
        SMALL,
        "paid twice",
    )
    assert sent.notify_url == "http://testserver/v1/payments/callbacks/wechatpay"
    assert order_state(runtime, order_no) == ("partially_refunded", 100_000, 100_000)
    assert ledger(runtime) == {CLEARING: 200_000, FUND: 200_000, REFUNDS: 0}

    rest = request(client, alice, refund_body(order_no, 200_000), key="r2")
    assert rest.status_code == 201 and rest.json()["state"] == "succeeded"
    assert order_state(runtime, order_no) == ("refunded", SMALL, SMALL)
    assert ledger(runtime) == {CLEARING: 0, FUND: 0, REFUNDS: 0}
    problem(request(client, alice, refund_body(order_no, 1), key="r3"), 409, "order_not_refundable")
    assert len(channel.requests) == 2


@pytest.mark.parametrize(
    "amount", [0, -1, 1.5, 100_000.0, "100000", "1000.00", True, None, 10**12], ids=lambda a: repr(a)
)
def test_bad_amounts_are_422_and_change_nothing(
    client: TestClient, runtime: Runtime, channel: ScriptedChannel, alice: Op, amount: Any
) -> None:
    order_no = paid_order(runtime)
    before = ledger(runtime)
    problem(request(client, alice, refund_body(order_no, amount)), 422, "refund_invalid")
    assert refund_count(runtime) == 0 and channel.requests == [] and ledger(runtime) == before
    # The refusal released the Idempotency-Key: the corrected request goes through under it.
    assert request(client, alice, refund_body(order_no, 1)).status_code == 201


def test_never_above_what_is_left(client: TestClient, runtime: Runtime, channel: ScriptedChannel, alice: Op) -> None:
    order_no = paid_order(runtime)
    problem(request(client, alice, refund_body(order_no, SMALL + 1), key="a"), 422, "refund_exceeds_remaining")
    # In flight counts against what is left: the channel has not answered yet.
    channel.script.append(answers(RefundOutcome.PROCESSING))
    assert request(client, alice, refund_body(order_no, 200_000), key="b").json()["state"] == "requested"
    problem(request(client, alice, refund_body(order_no, 100_001), key="c"), 422, "refund_exceeds_remaining")
    assert request(client, alice, refund_body(order_no, 100_000), key="d").json()["state"] == "succeeded"
    assert order_state(runtime, order_no) == ("partially_refunded", SMALL, 100_000)
    assert ledger(runtime) == {CLEARING: 200_000, FUND: 0, REFUNDS: 200_000}
    assert refund_count(runtime) == 2


def test_other_refusals(client: TestClient, runtime: Runtime, channel: ScriptedChannel, alice: Op) -> None:
    order_no = paid_order(runtime)
    problem(request(client, alice, refund_body("SOnosuchorder", 1)), 404, "order_unknown")
    problem(request(client, alice, refund_body(unpaid_order(runtime), 1)), 409, "order_not_refundable")
    problem(request(client, alice, None, raw=b"{not json"), 400, "invalid_json")
    problem(request(client, alice, [1]), 422, "refund_invalid")
    problem(request(client, alice, {**refund_body(order_no, 1), "to": "me"}), 422, "refund_invalid")
    problem(request(client, alice, refund_body(order_no, 1, reason="")), 422, "refund_invalid")
    problem(request(client, alice, refund_body(order_no, 1), key=None), 400, "idempotency_key_required")
    problem(request(client, alice, refund_body(order_no, 1), key="x" * 256), 400, "idempotency_key_invalid")
    assert refund_count(runtime) == 0 and channel.requests == []
    assert ledger(runtime) == {CLEARING: SMALL, FUND: SMALL, REFUNDS: 0}


# --- above the threshold: a second operator ----------------------------------------------------------------------


def test_a_large_refund_waits_for_a_second_operator(
    client: TestClient, runtime: Runtime, channel: ScriptedChannel, alice: Op, bob: Op
) -> None:
    order_no = paid_order(runtime, BIG)
    created = request(client, alice, refund_body(order_no, 600_000, "wrong tier"))
    assert created.status_code == 201
    refund = created.json()
    assert refund["state"] == "awaiting_approval" and refund["approval_required"] is True
    assert channel.requests == []  # nothing goes to the channel before the approval
    # Reserved meanwhile: nobody else can refund those 6,000 yuan.
    assert ledger(runtime) == {CLEARING: BIG, FUND: 400_000, REFUNDS: 600_000}
    problem(request(client, bob, refund_body(order_no, 400_001), key="other"), 422, "refund_exceeds_remaining")

    refund_no = refund["refund_no"]
    problem(decide(client, alice, refund_no, "approve"), 403, "self_approval_refused")
    alice_elsewhere = operator(client, runtime, "alice")  # the same person at another console
    assert alice_elsewhere.client_id != alice.client_id
    problem(decide(client, alice_elsewhere, refund_no, "approve"), 403, "self_approval_refused")
    assert channel.requests == [] and get(client, bob, f"{PATH}/{refund_no}").json()["state"] == "awaiting_approval"

    approved = decide(client, bob, refund_no, "approve", "receipt checked")
    assert approved.status_code == 200, approved.text
    view = approved.json()
    assert view["state"] == "succeeded" and view["decision"] == "approved"
    assert view["decided_by"] == {"client_id": bob.client_id, "subject": "bob"}
    assert view["decision_note"] == "receipt checked" and view["decided_at"]
    assert view["requested_by"]["subject"] == "alice" and view["reason"] == "wrong tier"
    assert [r.refund_no for r in channel.requests] == [refund_no]
    assert ledger(runtime) == {CLEARING: 400_000, FUND: 400_000, REFUNDS: 0}

    # A second approval (a retry, or a third operator) changes nothing and sends nothing.
    again = decide(client, bob, refund_no, "approve")
    assert again.status_code == 200 and again.json() == view
    carol = operator(client, runtime, "carol")
    assert decide(client, carol, refund_no, "approve").json() == view
    problem(decide(client, carol, refund_no, "reject"), 409, "refund_already_decided")
    problem(decide(client, alice, refund_no, "approve"), 403, "self_approval_refused")
    assert len(channel.requests) == 1
    assert ledger(runtime) == {CLEARING: 400_000, FUND: 400_000, REFUNDS: 0}


def test_the_same_person_at_two_pairwise_consoles_is_one_operator(
    client: TestClient, runtime: Runtime, channel: ScriptedChannel, bob: Op
) -> None:
    """Consoles registered with pairwise subjects see one person under two different `sub`s: the four-eyes rule
    compares the person (the public subject of the token's grant), not what each console is told."""
    consoles = [
        register_client(
            runtime,
            scopes=["openid", "payments:refund"],
            subject_type="pairwise",
            redirect_uris=[f"https://console{n}.example/cb"],
        )
        for n in (1, 2)
    ]
    here, there = (operator(client, runtime, "alice", console) for console in consoles)
    assert here.client_id != there.client_id
    refund = request(client, here, refund_body(paid_order(runtime, BIG), 600_000)).json()
    assert refund["state"] == "awaiting_approval"
    problem(decide(client, there, refund["refund_no"], "approve"), 403, "self_approval_refused")
    assert channel.requests == []
    assert decide(client, bob, refund["refund_no"], "approve").json()["state"] == "succeeded"


def test_reject_releases_the_reservation(
    client: TestClient, runtime: Runtime, channel: ScriptedChannel, alice: Op, bob: Op
) -> None:
    order_no = paid_order(runtime, BIG)
    refund_no = request(client, alice, refund_body(order_no, BIG)).json()["refund_no"]
    assert ledger(runtime) == {CLEARING: BIG, FUND: 0, REFUNDS: BIG}
    rejected = decide(client, bob, refund_no, "reject", "no receipt")
    assert rejected.status_code == 200
    view = rejected.json()
    assert view["state"] == "rejected" and view["decision"] == "rejected" and view["decision_note"] == "no receipt"
    assert view["decided_by"]["subject"] == "bob"
    assert ledger(runtime) == {CLEARING: BIG, FUND: BIG, REFUNDS: 0}
    with unit_of_work(runtime.sessions) as db:
        assert entry_by_key(db, f"refund:{refund_no}:rejected") is not None
    assert order_state(runtime, order_no) == ("paid", 0, 0)
    assert decide(client, bob, refund_no, "reject").json() == view  # a repeat
    problem(decide(client, bob, refund_no, "approve"), 409, "refund_already_decided")
    assert channel.requests == []
    # The amount is free again.
    assert request(client, alice, refund_body(order_no, BIG), key="again").json()["state"] == "awaiting_approval"


def test_the_requester_may_withdraw(client: TestClient, runtime: Runtime, channel: ScriptedChannel, alice: Op) -> None:
    order_no = paid_order(runtime, BIG)
    refund_no = request(client, alice, refund_body(order_no, 700_000)).json()["refund_no"]
    withdrawn = decide(client, alice, refund_no, "reject", "typed the wrong amount")
    assert withdrawn.json()["state"] == "rejected" and withdrawn.json()["decided_by"]["subject"] == "alice"
    assert ledger(runtime) == {CLEARING: BIG, FUND: BIG, REFUNDS: 0} and channel.requests == []


def test_splitting_does_not_avoid_the_approval(
    client: TestClient, runtime: Runtime, channel: ScriptedChannel, alice: Op
) -> None:
    order_no = paid_order(runtime, BIG)
    assert request(client, alice, refund_body(order_no, 400_000), key="1").json()["state"] == "succeeded"
    assert request(client, alice, refund_body(order_no, 200_000), key="2").json()["state"] == "awaiting_approval"
    assert len(channel.requests) == 1


def test_money_back_to_an_operator_needs_someone_else(
    client: TestClient, runtime: Runtime, channel: ScriptedChannel, alice: Op, bob: Op
) -> None:
    # Alice paid this order herself: even 1 fen back to her waits for a second operator.
    own = request(client, alice, refund_body(paid_order(runtime, payer="alice"), 100), key="own").json()
    assert own["state"] == "awaiting_approval" and own["approval_required"] is True and channel.requests == []
    assert decide(client, bob, own["refund_no"], "approve").json()["state"] == "succeeded"
    # Bob paid this one: Alice may ask (above the threshold), Bob may not approve the money going back to him.
    bobs = request(client, alice, refund_body(paid_order(runtime, BIG, payer="bob"), BIG), key="bobs").json()
    problem(decide(client, bob, bobs["refund_no"], "approve"), 403, "payer_approval_refused")
    carol = operator(client, runtime, "carol")
    assert decide(client, carol, bobs["refund_no"], "approve").json()["state"] == "succeeded"
    assert len(channel.requests) == 2


def test_decisions_on_refunds_that_need_none_or_do_not_exist(
    client: TestClient, runtime: Runtime, channel: ScriptedChannel, alice: Op, bob: Op
) -> None:
    order_no = paid_order(runtime)
    refund_no = request(client, alice, refund_body(order_no, 1000)).json()["refund_no"]
    problem(decide(client, bob, refund_no, "approve"), 409, "approval_not_required")
    problem(decide(client, bob, refund_no, "reject"), 409, "approval_not_required")
    problem(decide(client, bob, "RFnosuchrefund", "approve"), 404, "refund_unknown")
    big = request(client, alice, refund_body(paid_order(runtime, BIG), BIG), key="big").json()["refund_no"]
    bad = client.post(f"{PATH}/{big}/approve", content=b"{}", headers={"Authorization": f"Bearer {bob.token}"})
    problem(bad, 422, "refund_invalid")  # an approval says why
    bad = client.post(f"{PATH}/{big}/approve", content=b"nope", headers={"Authorization": f"Bearer {bob.token}"})
    problem(bad, 400, "invalid_json")
    assert get(client, bob, f"{PATH}/{big}").json()["state"] == "awaiting_approval"


def test_concurrent_approvals_send_once(
    client: TestClient, runtime: Runtime, channel: ScriptedChannel, alice: Op, bob: Op
) -> None:
    order_no = paid_order(runtime, BIG)
    refund_no = request(client, alice, refund_body(order_no, BIG)).json()["refund_no"]
    carol = operator(client, runtime, "carol")
    barrier = threading.Barrier(2)
    results: list[Any] = []

    def approve(op: Op) -> None:
        barrier.wait()
        results.append(decide(client, op, refund_no, "approve"))

    threads = [threading.Thread(target=approve, args=(op,)) for op in (bob, carol)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.status_code for r in results) == [200, 200]
    assert len(channel.requests) == 1
    assert get(client, alice, f"{PATH}/{refund_no}").json()["state"] == "succeeded"
    assert ledger(runtime) == {CLEARING: 0, FUND: 0, REFUNDS: 0}


# --- the channel's answers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "note"),
    [
        (raises(ChannelDeclined("NOT_ENOUGH", "balance too low")), "declined: NOT_ENOUGH"),
        (answers(RefundOutcome.FAILED), None),
    ],
    ids=["declined", "failed"],
)
def test_channel_refuses(
    client: TestClient, runtime: Runtime, channel: ScriptedChannel, alice: Op, answer: Answer, note: str | None
) -> None:
    order_no = paid_order(runtime)
    channel.script.append(answer)
    refused = request(client, alice, refund_body(order_no, SMALL))
    assert refused.status_code == 201
    assert refused.json()["state"] == "failed" and refused.json()["channel_note"] == note
    assert order_state(runtime, order_no) == ("paid", 0, 0)
    assert ledger(runtime) == {CLEARING: SMALL, FUND: SMALL, REFUNDS: 0}
    # Nothing is held: the whole amount can be refunded again.
    assert request(client, alice, refund_body(order_no, SMALL), key="again").json()["state"] == "succeeded"
    assert ledger(runtime) == {CLEARING: 0, FUND: 0, REFUNDS: 0}


def test_channel_unavailable_then_the_notification(
    client: TestClient, runtime: Runtime, channel: ScriptedChannel, alice: Op
) -> None:
    order_no = paid_order(runtime)
    channel.script.append(raises(ChannelUnavailable("timeout")))
    pending = request(client, alice, refund_body(order_no, 100_000))
    assert pending.status_code == 201 and pending.json()["state"] == "requested"
    refund_no = pending.json()["refund_no"]
    assert ledger(runtime) == {CLEARING: SMALL, FUND: 200_000, REFUNDS: 100_000}
    assert notify(client, refund_no, order_no, "succeeded", 100_000, "ev-1").status_code == 204
    assert get(client, alice, f"{PATH}/{refund_no}").json()["state"] == "succeeded"
    assert ledger(runtime) == {CLEARING: 200_000, FUND: 200_000, REFUNDS: 0}


def test_a_decline_answered_after_the_notification_settled_the_refund_changes_nothing(
    client: TestClient, runtime: Runtime, channel: ScriptedChannel, alice: Op
) -> None:
    """The refund's notification is applied while our request is still waiting for the channel's answer, which then
    is a decline: a conflict with what we hold, so the succeeded refund is left as it was (no "declined" note)."""

    def settled_meanwhile_then_declined(request: RefundRequest) -> RefundStatus:
        assert notify(client, request.refund_no, request.order_no, "succeeded", SMALL, "ev-1").status_code == 204
        raise ChannelDeclined("NOT_ENOUGH", "too late")

    order_no = paid_order(runtime)
    channel.script.append(settled_meanwhile_then_declined)
    created = request(client, alice, refund_body(order_no, SMALL))
    assert created.status_code == 201
    assert created.json()["state"] == "succeeded" and created.json()["channel_note"] is None
    assert order_state(runtime, order_no) == ("refunded", SMALL, SMALL)
    assert ledger(runtime) == {CLEARING: 0, FUND: 0, REFUNDS: 0}


def other_refunds_answer(request: RefundRequest) -> RefundStatus:
    return RefundStatus("RFsomeoneelse", RefundOutcome.SUCCEEDED, request.amount_fen)


@pytest.mark.parametrize("answer", [raises(RuntimeError("adapter bug")), other_refunds_answer], ids=["raises", "other"])
def test_an_adapter_bug_leaves_the_refund_requested(
    client: TestClient, runtime: Runtime, channel: ScriptedChannel, alice: Op, answer: Answer
) -> None:
    order_no = paid_order(runtime)
    channel.script.append(answer)
    created = request(client, alice, refund_body(order_no, 100_000))
    assert created.status_code == 201 and created.json()["state"] == "requested"  # committed: not a 500
    assert order_state(runtime, order_no) == ("paid", 100_000, 0)
    assert ledger(runtime) == {CLEARING: SMALL, FUND: 200_000, REFUNDS: 100_000}


def test_processing_then_the_recovery_query(
    client: TestClient, runtime: Runtime, channel: ScriptedChannel, alice: Op
) -> None:
    order_no = paid_order(runtime)
    channel.script.append(answers(RefundOutcome.PROCESSING))
    refund_no = request(client, alice, refund_body(order_no, SMALL)).json()["refund_no"]
    assert order_state(runtime, order_no) == ("paid", SMALL, 0)
    # What payments/recovery/ does with query_refund's answer.
    with unit_of_work(runtime.sessions) as db:
        result = service.apply_status(db, refund_no, RefundStatus(refund_no, RefundOutcome.PROCESSING, SMALL))
        assert result.applied is service.Applied.IGNORED
    with unit_of_work(runtime.sessions) as db:
        result = service.apply_status(db, refund_no, RefundStatus(refund_no, RefundOutcome.SUCCEEDED, SMALL, "503x"))
        assert result.applied is service.Applied.APPLIED
    with unit_of_work(runtime.sessions) as db:
        again = service.apply_status(db, refund_no, RefundStatus(refund_no, RefundOutcome.SUCCEEDED, SMALL))
        assert again.applied is service.Applied.DUPLICATE
        late = service.apply_status(db, refund_no, RefundStatus(refund_no, RefundOutcome.FAILED, SMALL))
        assert late.applied is service.Applied.CONFLICT
    assert order_state(runtime, order_no) == ("refunded", SMALL, SMALL)
    assert get(client, alice, f"{PATH}/{refund_no}").json()["channel_refund_no"] == "503x"
    assert ledger(runtime) == {CLEARING: 0, FUND: 0, REFUNDS: 0}


def test_an_unconfigured_channel_leaves_the_refund_requested(client: TestClient, runtime: Runtime, alice: Op) -> None:
    order_no = paid_order(runtime)  # no channel installed at all
    answer = request(client, alice, refund_body(order_no, 100))
    assert answer.status_code == 201 and answer.json()["state"] == "requested"
    # send() is what the recovery sweeper calls for it once the channel is there; repeating it is safe.
    scripted = ScriptedChannel()
    channels = registry.Channels({"wechatpay": scripted})  # type: ignore[dict-item]
    service.send(runtime, channels, answer.json()["refund_no"])
    service.send(runtime, channels, answer.json()["refund_no"])  # no longer requested: not sent again
    assert len(scripted.requests) == 1
    assert order_state(runtime, order_no) == ("partially_refunded", 100, 100)


# --- Idempotency-Key ---------------------------------------------------------------------------------------------


def test_idempotency_key_replay_and_reuse(
    client: TestClient, runtime: Runtime, channel: ScriptedChannel, alice: Op, bob: Op
) -> None:
    order_no = paid_order(runtime)
    first = request(client, alice, refund_body(order_no, 1000), key="k")
    again = request(client, alice, refund_body(order_no, 1000), key="k")
    assert first.status_code == again.status_code == 201
    assert again.content == first.content and again.headers["idempotent-replayed"] == "true"
    assert len(channel.requests) == 1 and refund_count(runtime) == 1
    problem(request(client, alice, refund_body(order_no, 2000), key="k"), 422, "idempotency_key_reused")
    # Keys are per operator: bob's "k" is another refund.
    assert request(client, bob, refund_body(order_no, 1000), key="k").json()["refund_no"] != first.json()["refund_no"]
    assert refund_count(runtime) == 2
    # The store lost the response (a worker died after the commit): the refund row answers for the key.
    runtime.store.take(f"idem:refunds:{_digest(runtime, alice, 'k')}")
    rebuilt = request(client, alice, refund_body(order_no, 1000), key="k")
    assert rebuilt.status_code == 201 and rebuilt.json()["refund_no"] == first.json()["refund_no"]
    assert rebuilt.headers["idempotent-replayed"] == "true"
    runtime.store.take(f"idem:refunds:{_digest(runtime, alice, 'k')}")
    problem(request(client, alice, refund_body(order_no, 3000), key="k"), 422, "idempotency_key_reused")
    assert refund_count(runtime) == 2 and len(channel.requests) == 2
    assert ledger(runtime) == {CLEARING: SMALL - 2000, FUND: SMALL - 2000, REFUNDS: 0}


def _digest(runtime: Runtime, op: Op, key: str) -> str:
    from payments.api.idempotency import _mac

    return _mac(runtime, op.client_id.encode(), op.subject.encode(), key.encode())


# --- who may --------------------------------------------------------------------------------------------------------


def test_only_operators_signed_in(client: TestClient, runtime: Runtime, channel: ScriptedChannel, alice: Op) -> None:
    order_no = paid_order(runtime)
    refund_no = request(client, alice, refund_body(order_no, 100)).json()["refund_no"]
    problem(client.get(PATH), 401, "token_required")
    problem(client.post(PATH, content=b"{}"), 401, "token_required")
    nobody = Op("not-a-token", "", "")
    problem(request(client, nobody, refund_body(order_no, 100), key="x"), 401, "invalid_token")
    # A cardholder's payments token: they may pay, not refund.
    portal = register_client(runtime, scopes=["openid", "payments"])
    citizen = code_grant(client, runtime, portal, subject="payer-1", scope=["openid", "payments"]).json()
    as_citizen = Op(citizen["access_token"], portal.client_id, "payer-1")
    # A console's own client-credentials token with the scope: no person to name.
    console = secret_client(runtime, grant_types=["client_credentials"], scopes=["payments:refund"], redirect_uris=[])
    machine = authed(client, "/token", console, {"grant_type": "client_credentials"}).json()
    as_machine = Op(machine["access_token"], console.client_id, console.client_id)
    for op, status, reason in ((as_citizen, 403, "insufficient_scope"), (as_machine, 403, "operator_login_required")):
        problem(request(client, op, refund_body(order_no, 100), key="x"), status, reason)
        problem(get(client, op), status, reason)
        problem(get(client, op, f"{PATH}/{refund_no}"), status, reason)
        problem(decide(client, op, refund_no, "reject"), status, reason)
    assert refund_count(runtime) == 1 and len(channel.requests) == 1
    assert ledger(runtime) == {CLEARING: SMALL - 100, FUND: SMALL - 100, REFUNDS: 0}


def test_read_one_and_list(client: TestClient, runtime: Runtime, channel: ScriptedChannel, alice: Op, bob: Op) -> None:
    first_order, second_order = paid_order(runtime), paid_order(runtime, BIG)
    small = request(client, alice, refund_body(first_order, 100), key="1").json()
    large = request(client, alice, refund_body(second_order, BIG), key="2").json()
    assert get(client, bob, f"{PATH}/{small['refund_no']}").json() == small
    problem(get(client, bob, f"{PATH}/RFnosuchrefund"), 404, "refund_unknown")
    assert get(client, bob).json() == {"refunds": [large, small]}  # newest first
    assert get(client, bob, f"{PATH}?order_no={first_order}").json() == {"refunds": [small]}
    assert get(client, bob, f"{PATH}?state=awaiting_approval").json() == {"refunds": [large]}
    assert get(client, bob, f"{PATH}?limit=1").json() == {"refunds": [large]}
    problem(get(client, bob, f"{PATH}?state=bogus"), 400, "invalid_request")
    problem(get(client, bob, f"{PATH}?limit=0"), 400, "invalid_request")


def _together(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls at once (released together by a barrier); their answers in order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_requests_never_exceed_what_was_paid(
    client: TestClient, runtime: Runtime, channel: ScriptedChannel, alice: Op, bob: Op
) -> None:
    order_no = paid_order(runtime)
    channel.script.extend([answers(RefundOutcome.PROCESSING)] * 2)
    first, second = _together(
        lambda: request(client, alice, refund_body(order_no, 200_000), key="a"),
        lambda: request(client, bob, refund_body(order_no, 200_000), key="b"),
    )
    assert sorted([first.status_code, second.status_code]) == [201, 422]
    assert order_state(runtime, order_no) == ("paid", 200_000, 0)
    assert refund_count(runtime) == 1 and len(channel.requests) == 1
    assert ledger(runtime) == {CLEARING: SMALL, FUND: 100_000, REFUNDS: 200_000}


def test_concurrent_approve_and_reject_decide_once(
    client: TestClient, runtime: Runtime, channel: ScriptedChannel, alice: Op, bob: Op
) -> None:
    order_no = paid_order(runtime, BIG)
    refund_no = request(client, alice, refund_body(order_no, BIG)).json()["refund_no"]
    carol = operator(client, runtime, "carol")
    approved, rejected = _together(
        lambda: decide(client, bob, refund_no, "approve"), lambda: decide(client, carol, refund_no, "reject")
    )
    assert sorted([approved.status_code, rejected.status_code]) == [200, 409]
    final = get(client, alice, f"{PATH}/{refund_no}").json()
    if approved.status_code == 200:
        assert final["state"] == "succeeded" and len(channel.requests) == 1
        assert ledger(runtime) == {CLEARING: 0, FUND: 0, REFUNDS: 0}
    else:
        assert final["state"] == "rejected" and channel.requests == []
        assert ledger(runtime) == {CLEARING: BIG, FUND: BIG, REFUNDS: 0}


# --- end to end through the WeChat Pay sandbox ---------------------------------------------------------------------


@pytest.mark.parametrize(("end", "final"), [("SUCCESS", "succeeded"), ("ABNORMAL", "failed")])
def test_an_approved_refund_through_the_wechatpay_sandbox(
    client: TestClient, runtime: Runtime, alice: Op, bob: Op, end: str, final: str
) -> None:
    """The real adapter over HTTP to the sandbox; the sandbox's signed, encrypted refund notification posted into
    the service's callback route."""
    now = 1_795_000_000
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sandbox = support.wechatpay_sandbox(client, key, now=now)
    adapter = support.wechatpay_adapter(client, sandbox, now=now)

    spec = OrderSpec(
        PayerKind.CITIZEN, "payer-1", "110105199003072813", InsuranceType.PENSION, ("2025",), BIG, "110000", "wechatpay"
    )
    with unit_of_work(runtime.sessions) as db:
        order_no = repository.add_order(db, validate(spec, TIERS)).order_no
        accounting.submit(db, order_no)
    expires = datetime.datetime.fromtimestamp(now + 1800, datetime.UTC)
    adapter.create_payment(PaymentOrderRef(order_no, BIG, "城乡居民养老保险", expires, ""))
    sandbox.pay(order_no)
    assert order_state(runtime, order_no) == ("paid", 0, 0)

    refund_no = request(client, alice, refund_body(order_no, BIG)).json()["refund_no"]
    assert refund_no not in sandbox.refunds  # waiting for the second operator
    approved = decide(client, bob, refund_no, "approve")
    assert approved.json()["state"] == "requested"  # WeChat Pay answers PROCESSING
    assert sandbox.refunds[refund_no].amount_fen == BIG
    sandbox.settle_refund(refund_no, end)
    assert sandbox.deliveries[-1].status == 204
    view = get(client, alice, f"{PATH}/{refund_no}").json()
    assert view["state"] == final and view["channel_refund_no"]
    if final == "succeeded":
        assert order_state(runtime, order_no) == ("refunded", BIG, BIG)
        assert ledger(runtime) == {CLEARING: 0, FUND: 0, REFUNDS: 0}
    else:
        assert order_state(runtime, order_no) == ("paid", 0, 0)
        assert ledger(runtime) == {CLEARING: BIG, FUND: BIG, REFUNDS: 0}


@hypothesis_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.fixed_dictionaries(
        {},
        optional={
            "order_no": st.text(max_size=40) | json_values,
            "amount_fen": st.integers() | json_values,
            "reason": st.text(max_size=210) | json_values,
            "extra": json_values,
        },
    )
    | json_values
)
def test_any_body_is_answered_without_a_500(
    client: TestClient, runtime: Runtime, channel: ScriptedChannel, alice: Op, body: Any
) -> None:
    # One key per body (json.dumps is printable ASCII), so each example is a fresh request, not a replay.
    answer = request(client, alice, body, key=json.dumps(body)[:200])
    assert answer.status_code in (201, 400, 404, 409, 422), answer.text
    if answer.status_code != 201:
        assert answer.headers["content-type"].startswith("application/problem+json") and answer.json()["reason"]


def test_the_refunds_command(
    client: TestClient, cli_env: Runtime, channel: ScriptedChannel, alice: Op, capsys: pytest.CaptureFixture[str]
) -> None:
    small = request(client, alice, refund_body(paid_order(cli_env), 100), key="1").json()
    large = request(client, alice, refund_body(paid_order(cli_env, BIG), BIG), key="2").json()
    assert main(["payments", "refunds"]) == 0
    assert json.loads(capsys.readouterr().out) == {"refunds": [large, small]}
    assert main(["payments", "refunds", "--state", "awaiting_approval"]) == 0
    assert json.loads(capsys.readouterr().out) == {"refunds": [large]}
    assert main(["payments", "refunds", "--order", small["order_no"]]) == 0
    assert json.loads(capsys.readouterr().out) == {"refunds": [small]}
