"""POST /v1/payments/orders/{id}/payment on both backends: the order's payment started at its channel, with every
refusal (foreign order, state, batch-only channel, channel missing, unavailable or declining, card payments below
card + PIN or without a card) leaving the order as it was. The channel here is a scripted double of the adapter
interface; the channels' own simulators drive the same route in their tests and in the demo."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient

from authsvc.database import unit_of_work
from authsvc.registry import repository as registry_repo
from authsvc.registry import service as registry
from authsvc.runtime import Runtime
from authsvc.tokens.assurance import LOW
from payments.channels.base import (
    ChannelDeclined,
    ChannelTrade,
    ChannelUnavailable,
    PaymentOrderRef,
    PaymentStart,
    TradeStatus,
)
from payments.channels.registry import Channels, install
from payments.ledger.check import check
from payments.ledger.service import balances
from payments.orders import repository
from payments.withholding.agreements import add_agreement
from tests.fixtures.oidc import register_client
from tests.fixtures.service import PIN, Kiosk, add_kiosk, issue
from tests.fixtures.softcard import evidence, open_card
from tests.integration.oauth.flows import code_grant
from tests.integration.payments.test_bank_channel import serve_bank
from tests.integration.payments.test_orders_api import ORDER, backend_token, citizen_token, create, problem

PATH = "/v1/payments/orders"


@dataclass
class ScriptedChannel:
    """The adapter interface, answering as told and remembering what it was asked."""

    name: str
    method: str = "qr_code"
    charged_fen: int | None = None  # for "charged": what the channel's query reports as taken
    fail_with: Exception | None = None
    asked: list[PaymentOrderRef] = field(default_factory=list)

    def create_payment(self, order: PaymentOrderRef) -> PaymentStart:
        self.asked.append(order)
        if self.fail_with is not None:
            raise self.fail_with
        return PaymentStart(order.order_no, self.method, {"code_url": f"weixin://wxpay/bizpayurl?pr={order.order_no}"})

    def query_payment(self, order_no: str) -> ChannelTrade:
        return ChannelTrade(order_no, TradeStatus.PAID, self.charged_fen, "T" + order_no, raw_state="SUCCESS")


@pytest.fixture
def channels(client: TestClient) -> dict[str, ScriptedChannel]:
    scripted = {name: ScriptedChannel(name) for name in ("wechatpay", "card", "withholding")}
    install(client.app, Channels(scripted))  # type: ignore[arg-type]
    return scripted


def start(client: TestClient, token: str, order_no: str) -> Any:
    return client.post(f"{PATH}/{order_no}/payment", headers={"Authorization": f"Bearer {token}"})


def new_order(client: TestClient, token: str, key: str, **changes: Any) -> str:
    answer = create(client, token, {**ORDER, **changes}, key=key)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def state(runtime: Runtime, order_no: str) -> str:
    with unit_of_work(runtime.sessions) as db:
        order = repository.order_by_no(db, order_no)
        assert order is not None
        return order.state


def test_qr_payment_started_then_asked_again(client: TestClient, runtime: Runtime, channels: dict) -> None:
    token = citizen_token(client, runtime, "alice")
    order_no = new_order(client, token, "k-qr")
    for _ in range(2):  # a retry after a lost answer asks the channel again and changes nothing more
        answer = start(client, token, order_no)
        assert answer.status_code == 200, answer.text
        doc = answer.json()
        assert doc["order"]["state"] == "pending" and doc["order"]["id"] == order_no
        assert doc["payment"] == {"method": "qr_code", "code_url": f"weixin://wxpay/bizpayurl?pr={order_no}"}
    asked = channels["wechatpay"].asked
    assert [ref.order_no for ref in asked] == [order_no, order_no]
    ref = asked[0]
    assert ref.amount_fen == ORDER["amount_fen"] and ref.notify_url.endswith("/v1/payments/callbacks/wechatpay")
    assert ref.description == "社会保险费 养老保险 2025" and ORDER["insured_ssn"] not in ref.description
    lifetime = ref.expires_at - datetime.now(UTC)
    assert (
        timedelta(seconds=runtime.settings.payment_order_ttl - 60)
        < lifetime
        <= timedelta(seconds=runtime.settings.payment_order_ttl)
    )
    assert state(runtime, order_no) == "pending"


def test_someone_elses_order_is_unknown(client: TestClient, runtime: Runtime, channels: dict) -> None:
    alice, bob = citizen_token(client, runtime, "alice"), citizen_token(client, runtime, "bob")
    order_no = new_order(client, alice, "k-own")
    problem(start(client, bob, order_no), 404, "order_unknown")
    problem(start(client, backend_token(client, runtime), order_no), 404, "order_unknown")
    assert channels["wechatpay"].asked == [] and state(runtime, order_no) == "created"


def test_tokens_without_payments_scope_are_refused(client: TestClient, runtime: Runtime, channels: dict) -> None:
    order_no = new_order(client, citizen_token(client, runtime, "alice"), "k-scope")
    answer = start(client, citizen_token(client, runtime, "alice", scope=["openid"]), order_no)
    assert answer.status_code == 403 and 'error="insufficient_scope"' in answer.headers["www-authenticate"]
    assert client.post(f"{PATH}/{order_no}/payment").status_code == 401
    assert channels["wechatpay"].asked == []


@pytest.mark.parametrize(
    "failure, status, reason",
    [
        (ChannelUnavailable("timeout"), 503, "channel_unavailable"),
        (ChannelDeclined("ORDER_CLOSED", "closed"), 409, "channel_declined"),
    ],
)
def test_channel_failures_leave_the_order_created(
    client: TestClient, runtime: Runtime, channels: dict, failure: Exception, status: int, reason: str
) -> None:
    token = citizen_token(client, runtime, "alice")
    order_no = new_order(client, token, "k-fail")
    channels["wechatpay"].fail_with = failure
    answer = start(client, token, order_no)
    problem(answer, status, reason)
    if status == 503:
        assert answer.headers["retry-after"]
    else:
        assert answer.json()["channel_code"] == "ORDER_CLOSED"
    assert state(runtime, order_no) == "created"


def test_channel_not_configured(client: TestClient, runtime: Runtime, channels: dict) -> None:
    token = citizen_token(client, runtime, "alice")
    order_no = new_order(client, token, "k-ali", channel="alipay")
    problem(start(client, token, order_no), 503, "channel_unavailable")
    assert state(runtime, order_no) == "created"


def test_unknown_channel_refused_at_creation(client: TestClient, runtime: Runtime) -> None:
    answer = create(client, citizen_token(client, runtime, "alice"), {**ORDER, "channel": "paypal"}, key="k-pp")
    problem(answer, 422, "order_invalid")


def test_orders_that_cannot_be_started(client: TestClient, runtime: Runtime, channels: dict) -> None:
    token = citizen_token(client, runtime, "alice")
    # A withholding order needs the payer's agreement with the bank for this insured person first.
    problem(create(client, token, {**ORDER, "channel": "withholding"}, key="k-wh0"), 422, "agreement_required")
    with unit_of_work(runtime.sessions) as db:
        add_agreement(
            db,
            agreement_no="AG-1",
            payer_kind="agent",
            payer=jwt.decode(token, options={"verify_signature": False})["sub"],
            insured_ssn=ORDER["insured_ssn"],
            account_token="acct-token-0001",
            account_masked="622202******1234",
            signed_at=datetime.now(UTC),
        )
    batch = new_order(client, token, "k-wh", channel="withholding")
    problem(start(client, token, batch), 409, "paid_by_batch")
    assert channels["withholding"].asked == []
    paid = new_order(client, token, "k-paid")
    with unit_of_work(runtime.sessions) as db:
        from payments.orders import accounting

        accounting.mark_paid(db, paid, amount_fen=ORDER["amount_fen"])
    problem(start(client, token, paid), 409, "order_not_payable")
    assert channels["wechatpay"].asked == []


# --- the card's financial account ------------------------------------------------------------------------------


def cardholder_token(
    client: TestClient, runtime: Runtime, tmp_path: Path, *, acr: str | None = None
) -> tuple[str, str]:
    """A portal token of a real cardholder, and the number of their card."""
    issued = issue(runtime, tmp_path, generation=3)
    with unit_of_work(runtime.sessions) as db:
        holder = registry_repo.holder_by_ssn(db, issued.ssn)
        assert holder is not None
        subject = holder.subject
    # A pairwise portal: the token's `sub` is not the cardholder's subject, so the card is found through the grant.
    portal = register_client(runtime, scopes=["openid", "payments"], subject_type="pairwise")
    extra = {"acr": acr, "amr": ["sc", "hwk"]} if acr else {}
    answer = code_grant(client, runtime, portal, subject=subject, scope=["openid", "payments"], **extra)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"]), issued.card_number


def test_card_payment_is_charged_at_once(client: TestClient, runtime: Runtime, channels: dict, tmp_path: Path) -> None:
    token, card_number = cardholder_token(client, runtime, tmp_path)
    card = channels["card"]
    card.method, card.charged_fen = "charged", ORDER["amount_fen"]
    order_no = new_order(client, token, "k-card", channel="card")
    answer = start(client, token, order_no)
    assert answer.status_code == 200, answer.text
    assert answer.json()["order"]["state"] == "paid" and answer.json()["payment"]["method"] == "charged"
    with unit_of_work(runtime.sessions) as db:
        assert check(db).ok
        assert balances(db)["clearing:card"] == ORDER["amount_fen"]
    assert card.asked[0].payer_ref == card_number


def test_card_payment_charged_another_amount_is_not_paid(
    client: TestClient, runtime: Runtime, channels: dict, tmp_path: Path
) -> None:
    token, _ = cardholder_token(client, runtime, tmp_path)
    channels["card"].method, channels["card"].charged_fen = "charged", ORDER["amount_fen"] + 1
    order_no = new_order(client, token, "k-card-odd", channel="card")
    assert start(client, token, order_no).json()["order"]["state"] == "pending"
    with unit_of_work(runtime.sessions) as db:
        assert "clearing:card" not in balances(db)


def test_card_payment_needs_card_and_pin(client: TestClient, runtime: Runtime, channels: dict, tmp_path: Path) -> None:
    token, _ = cardholder_token(client, runtime, tmp_path, acr=LOW)
    order_no = new_order(client, token, "k-card-low", channel="card")
    answer = start(client, token, order_no)
    assert answer.status_code == 401
    challenge = answer.headers["www-authenticate"]
    assert 'error="insufficient_user_authentication"' in challenge and "urn:sscard:acr:substantial" in challenge
    assert channels["card"].asked == [] and state(runtime, order_no) == "created"


def test_card_payment_needs_an_active_card(
    client: TestClient, runtime: Runtime, channels: dict, tmp_path: Path
) -> None:
    token, card_number = cardholder_token(client, runtime, tmp_path)
    order_no = new_order(client, token, "k-card-lost", channel="card")
    with unit_of_work(runtime.sessions) as db:
        registry.set_card_status(db, card_number, "reported_lost")
    problem(start(client, token, order_no), 409, "card_unavailable")
    assert channels["card"].asked == []
    # A login with no cardholder behind it (a test subject) has no card either.
    stranger = citizen_token(client, runtime, "no-such-holder")
    other = new_order(client, stranger, "k-card-none", channel="card")
    problem(start(client, stranger, other), 409, "card_unavailable")


def test_kiosk_card_login_pays_from_the_card_account(
    client: TestClient, runtime: Runtime, channels: dict, tmp_path: Path
) -> None:
    """At a kiosk: card + PIN login, then the contribution charged to the card's account. The token is good only
    while the kiosk is: a disabled terminal's tokens are refused."""
    kiosk = Kiosk(client, add_kiosk(runtime, tmp_path, "kiosk-pay"))
    card = issue(runtime, tmp_path, generation=3)
    login_id, challenge = kiosk.start()
    login = kiosk.complete(login_id, evidence(open_card(card.path), challenge, kiosk.terminal_id, PIN))
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]
    channels["card"].method, channels["card"].charged_fen = "charged", ORDER["amount_fen"]
    order_no = new_order(client, token, "k-kiosk", channel="card", payer_kind="citizen")
    answer = start(client, token, order_no)
    assert answer.status_code == 200 and answer.json()["order"]["state"] == "paid"
    assert channels["card"].asked[0].payer_ref == card.card_number
    with unit_of_work(runtime.sessions) as db:
        registry.set_terminal_status(db, "kiosk-pay", "disabled")
    refused = client.get(f"{PATH}/{order_no}", headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 401 and "disabled" in refused.json()["detail"]


def test_kiosk_pays_through_the_bank_card_account(client: TestClient, runtime: Runtime, tmp_path: Path) -> None:
    """The same kiosk payment through the real card-account adapter and the bank sandbox: the linked account is
    really debited once; an account without the funds is declined and the order waits, unpaid and unposted."""
    bank_env = serve_bank(client, runtime)
    kiosk = Kiosk(client, add_kiosk(runtime, tmp_path, "kiosk-bank"))
    card = issue(runtime, tmp_path, generation=3)
    login_id, challenge = kiosk.start()
    token = kiosk.complete(login_id, evidence(open_card(card.path), challenge, kiosk.terminal_id, PIN)).json()[
        "access_token"
    ]
    amount = ORDER["amount_fen"]
    bank_env.sandbox.open_account("linked", amount + amount // 2)
    bank_env.sandbox.link_card(card.card_number, "linked")
    paid = new_order(client, token, "k-bank-1", channel="card", payer_kind="citizen")
    answer = start(client, token, paid)
    assert answer.status_code == 200, answer.text
    assert answer.json()["order"]["state"] == "paid" and answer.json()["payment"]["method"] == "charged"
    assert bank_env.sandbox.accounts["linked"].balance_fen == amount // 2
    poor = new_order(client, token, "k-bank-2", channel="card", payer_kind="citizen")
    declined = start(client, token, poor)
    problem(declined, 409, "channel_declined")
    assert declined.json()["channel_code"] == "INSUFFICIENT_FUNDS"
    assert state(runtime, poor) == "created" and bank_env.sandbox.accounts["linked"].balance_fen == amount // 2
    with unit_of_work(runtime.sessions) as db:
        assert balances(db)["clearing:card"] == amount and check(db).ok
