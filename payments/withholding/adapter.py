"""The withholding channel adapter (payments/channels/base.py): orders paid by the bank's batch debit, not by the
payer. Creating a payment only says it waits for the next batch; the query asks the bank about the order's debit
line; closing takes an order out of the next batch, and is refused while its debit is at the bank. Refunds, refund
callbacks and the statement are the bank gateway's (payments/channels/bank_adapter.py).
"""

from __future__ import annotations

import httpx
from sqlalchemy.orm import Session, sessionmaker

from authsvc.database import unit_of_work
from payments.channels.bank_adapter import BankAdapter, BankConfig, trade_from_answer
from payments.channels.base import (
    ChannelDeclined,
    ChannelTrade,
    CloseResult,
    PaymentOrderRef,
    PaymentStart,
    TradeStatus,
)
from payments.withholding.batches import CHANNEL, line_of_order

IN_BATCH = "IN_BATCH"


class WithholdingAdapter(BankAdapter):
    name = CHANNEL

    def __init__(self, config: BankConfig, client: httpx.Client, sessions: sessionmaker[Session] | None = None) -> None:
        super().__init__(config, client)
        # Without the database, close_payment cannot see a batch exported but not yet received by the bank.
        self.sessions = sessions

    def create_payment(self, order: PaymentOrderRef) -> PaymentStart:
        data = {"agreement_no": order.payer_ref} if order.payer_ref else {}
        return PaymentStart(order.order_no, "withholding", data)

    def query_payment(self, order_no: str) -> ChannelTrade:
        return trade_from_answer(self.gateway.post("/gateway/v1/withholding/query", {"order_no": order_no}), order_no)

    def close_payment(self, order_no: str) -> CloseResult:
        """CLOSED when no debit of the order exists or can follow; ALREADY_PAID when the bank debited it;
        ChannelDeclined(IN_BATCH) while it is in a batch the bank has not answered yet (close it after the result
        file, which fails or pays it anyway)."""
        in_batch = False
        if self.sessions is not None:
            with unit_of_work(self.sessions) as db:
                line = line_of_order(db, order_no)
                if line is not None and line.outcome is not None:
                    return CloseResult.ALREADY_PAID if line.result_code == "SUCCESS" else CloseResult.CLOSED
                in_batch = line is not None
        trade = self.query_payment(order_no)
        if trade.status is TradeStatus.PAID:
            return CloseResult.ALREADY_PAID
        if trade.status in (TradeStatus.FAILED, TradeStatus.CLOSED):
            return CloseResult.CLOSED
        if trade.status is TradeStatus.NOT_FOUND and not in_batch:
            return CloseResult.CLOSED  # never exported: the export skips it once the caller closes the order
        raise ChannelDeclined(IN_BATCH, "the order's debit is in a batch at the bank; wait for its result file")
