"""The social security card's financial account over HTTP against the bank sandbox: charged at once from the
account linked to the card (balances really move), declines that move nothing, faults that leave the outcome
unknown, and the bank's callback for the charge reaching the order on both backends."""

from __future__ import annotations

import pytest

from authsvc.runtime import Runtime
from authsvc.tokens.assurance import SUBSTANTIAL
from payments.channels.base import ChannelDeclined, ChannelUnavailable, CloseResult, TradeStatus
from payments.channels.card_adapter import NAME, REQUIRED_ACR
from tests.integration.payments.support import AMOUNT, inbox, ledger, new_order
from tests.integration.payments.test_bank_channel import (  # noqa: F401 - gateway and service are fixtures
    Bank,
    gateway,
    order_state,
    service,
)

CARD = "A12345678"


def test_required_assurance_is_card_and_pin() -> None:
    assert (NAME, REQUIRED_ACR) == ("card", SUBSTANTIAL)


def test_charged_at_once(gateway: Bank) -> None:  # noqa: F811
    gateway.sandbox.open_account("card-account", AMOUNT + 5)
    gateway.sandbox.link_card(CARD, "card-account")
    start = gateway.card.create_payment(gateway.order_ref("P1", "card", payer_ref=CARD))
    assert start.method == "charged" and start.data["trade_no"].startswith("B")
    assert gateway.sandbox.accounts["card-account"].balance_fen == 5
    again = gateway.card.create_payment(gateway.order_ref("P1", "card", payer_ref=CARD))
    assert again == start and gateway.sandbox.accounts["card-account"].balance_fen == 5  # a retry charges nothing
    trade = gateway.card.query_payment("P1")
    assert (trade.status, trade.amount_fen) == (TradeStatus.PAID, AMOUNT)
    assert gateway.card.close_payment("P1") is CloseResult.ALREADY_PAID


@pytest.mark.parametrize(
    ("setup", "code"),
    [
        ("poor", "INSUFFICIENT_FUNDS"),
        ("closed", "ACCOUNT_CLOSED"),
        ("frozen", "ACCOUNT_FROZEN"),
        ("unlinked", "CARD_ACCOUNT_ABSENT"),
    ],
)
def test_declines_move_nothing(gateway: Bank, setup: str, code: str) -> None:  # noqa: F811
    gateway.sandbox.open_account("card-account", AMOUNT - 1 if setup == "poor" else 10 * AMOUNT)
    account = gateway.sandbox.accounts["card-account"]
    account.closed, account.frozen = setup == "closed", setup == "frozen"
    if setup != "unlinked":
        gateway.sandbox.link_card(CARD, "card-account")
    before = account.balance_fen
    with pytest.raises(ChannelDeclined) as info:
        gateway.card.create_payment(gateway.order_ref("P1", "card", payer_ref=CARD))
    assert info.value.code == code
    assert account.balance_fen == before
    assert gateway.card.query_payment("P1").status is TradeStatus.NOT_FOUND


@pytest.mark.parametrize("payer_ref", [None, "", "a12345678", "A1234567", "A12345678\n"])
def test_a_card_number_is_required(gateway: Bank, payer_ref: str | None) -> None:  # noqa: F811
    with pytest.raises(ValueError, match="card number"):
        gateway.card.create_payment(gateway.order_ref("P1", "card", payer_ref=payer_ref))
    assert gateway.sandbox.payments == {}


@pytest.mark.parametrize("fault", ["timeout", "wrong_key", "other_amount"])
def test_unknown_outcome_then_query(gateway: Bank, fault: str) -> None:  # noqa: F811
    """The bank charged but we could not believe the answer: unavailable, and the query tells the truth."""
    gateway.sandbox.open_account("card-account", 10 * AMOUNT)
    gateway.sandbox.link_card(CARD, "card-account")
    setattr(gateway.sandbox.faults, fault, True)
    with pytest.raises(ChannelUnavailable):
        gateway.card.create_payment(gateway.order_ref("P1", "card", payer_ref=CARD))
    setattr(gateway.sandbox.faults, fault, False)
    if fault == "timeout":  # the request never reached the bank's books
        assert gateway.card.query_payment("P1").status is TradeStatus.NOT_FOUND
    else:
        assert gateway.card.query_payment("P1").status is TradeStatus.PAID


def test_the_charge_callback_pays_the_order(service: Bank, runtime: Runtime) -> None:  # noqa: F811
    service.sandbox.open_account("card-account", 10 * AMOUNT)
    service.sandbox.link_card(CARD, "card-account")
    order_no = new_order(runtime, "card")
    start = service.card.create_payment(service.order_ref(order_no, "card", payer_ref=CARD))
    assert start.method == "charged"
    assert service.sandbox.sent[-1][1] == 200
    assert order_state(runtime, order_no) == "paid"
    assert ledger(runtime) == {"clearing:card": AMOUNT, "fund:pension:110000": AMOUNT}
    assert inbox(runtime) == [("PAID", "applied")]
