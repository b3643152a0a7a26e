"""The social security card's financial account: the bank account linked to the card, charged synchronously through
the bank gateway (docs/bank-gateway.md, mode "card"). Everything after the charge (query, close, refund, callbacks,
statement) is the bank's.

The caller must have proven card and PIN: the integrator refuses to start a card payment unless the access token
reached `REQUIRED_ACR`.
"""

from __future__ import annotations

import re
from typing import Any

from authsvc.tokens.assurance import SUBSTANTIAL
from payments.channels import bank
from payments.channels.bank_adapter import BankAdapter, answer_field, payment_state, same_order
from payments.channels.base import ChannelUnavailable, PaymentOrderRef, PaymentStart

NAME = "card"
REQUIRED_ACR = SUBSTANTIAL

_CARD_NUMBER = re.compile(r"[A-Z0-9]{9}")  # authsvc/registry/models.py: Card.card_number


class CardAccountAdapter(BankAdapter):
    name = NAME
    mode = "card"

    def create_payment(self, order: PaymentOrderRef) -> PaymentStart:
        """Charge the account linked to the card `order.payer_ref` at once. A declined charge (balance too low,
        account closed, no account linked) raises ChannelDeclined; an unknown outcome ChannelUnavailable (query
        before charging again: the order number makes a retry at the bank a duplicate, never a second charge)."""
        card_number = order.payer_ref or ""
        if not _CARD_NUMBER.fullmatch(card_number):
            raise ValueError("a card payment needs the card number (9 characters) as payer_ref")
        request: dict[str, Any] = self._payment_request(order) | {"card_no": card_number}
        answer = self.gateway.post("/gateway/v1/payments", request)
        same_order(answer, order.order_no)
        if answer_field(answer, "amount_fen", bank.fen) != order.amount_fen:
            raise ChannelUnavailable("bank answer: another amount than asked")
        state = payment_state(answer)
        if state is not bank.PaymentState.PAID:
            # The gateway answers a card charge PAID or declines it; anything else is not the documented answer, so
            # the outcome is unknown: query before acting again.
            raise ChannelUnavailable(f"bank answered a card charge {state.value}")
        trade_no = answer_field(answer, "trade_no", bank.text, bank.TOKEN)
        paid_at = answer_field(answer, "paid_at", bank.timestamp_field)
        return PaymentStart(order.order_no, "charged", {"trade_no": trade_no, "paid_at": bank.format_time(paid_at)})
